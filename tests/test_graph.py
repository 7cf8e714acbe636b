"""to_dag against direct readings of the weight tensors (the oracle) and networkx."""


import numpy as np
import pytest
import torch
import torch.nn.utils.prune as tprune
from torch import nn

import pathnet as pn
from pathnet.errors import GraphError, MaskError, UnsupportedLayerError, WeightError

from conftest import random_mask


def edges_from_weights(weight: torch.Tensor, keep: torch.Tensor, groups: int = 1):
    """Oracle: {(in unit, out unit): (kept entries, Σ|w| kept)} by plain loops over the tensor."""
    out_ch, in_g = weight.shape[:2]
    per_group = out_ch // groups
    edges = {}
    for o in range(out_ch):
        for j in range(in_g):
            k = keep[o, j].reshape(-1)
            if k.any():
                i = (o // per_group) * in_g + j
                edges[(i, o)] = (int(k.sum()), float(weight[o, j].reshape(-1)[k].abs().sum()))
    return edges


def block_edges(block):
    return {(int(s), int(d)): (int(m), float(w))
            for s, d, m, w in zip(block.sources(), block.indices, block.multiplicity, block.l1)}


def assert_blocks_match_weights(model, dag, mask):
    weights = pn.prunable_weights(model)
    modules = dict(model.named_modules())
    for b in dag.blocks:
        if not b.prunable:
            continue
        module = modules[b.param.rpartition(".")[0]]
        expected = edges_from_weights(weights[b.param].detach(), mask[b.param], getattr(module, "groups", 1))
        got = block_edges(b)
        assert got.keys() == expected.keys(), b.param
        for e, (m, l1) in expected.items():
            assert got[e][0] == m and got[e][1] == pytest.approx(l1, rel=1e-5), (b.param, e)


@pytest.mark.parametrize("seed", range(8))
def test_random_mlp_edges_equal_mask_nonzeros(seed):
    rng = np.random.default_rng(seed)
    widths = [int(w) for w in rng.integers(2, 9, size=rng.integers(2, 5))]
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    mask = random_mask(model, float(rng.uniform(0.2, 0.9)), seed)
    dag = pn.to_dag(model, (widths[0],), mask=mask)
    assert [layer.size for layer in dag.layers] == widths
    assert_blocks_match_weights(model, dag, mask)
    g = dag.to_networkx()
    expected = {((li, i), (li + 1, o)) for li, k in enumerate(mask)
                for o, i in zip(*np.nonzero(mask[k].numpy()))}
    assert set(g.edges) == expected
    assert g.number_of_nodes() == sum(widths)


@pytest.mark.parametrize("seed", range(4))
def test_small_conv_net_multiplicity_and_l1(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 6, 1), nn.Flatten(), nn.Linear(6 * 2 * 2, 5))
    mask = random_mask(model, 0.3 + 0.15 * seed, seed)
    dag = pn.to_dag(model, (3, 8, 8), mask=mask)
    assert [layer.size for layer in dag.layers] == [3, 8, 8, 6, 24, 5]
    assert [layer.kind for layer in dag.layers] == ["input", "conv", "conv", "conv", "flatten", "linear"]
    assert_blocks_match_weights(model, dag, mask)
    expand = next(b for b in dag.blocks if b.kind == "expand")
    assert block_edges(expand) == {(f // 4, f): (1, 1.0) for f in range(24)}  # channel c → its 2×2 positions
    pooled = next(b for b in dag.blocks if b.param == "6.weight")
    assert [op.kind for op in pooled.pre_ops] == ["MaxPool2d"] and pooled.pre_ops[0].out_shape == (8, 2, 2)
    geo = dag.blocks[1].geometry
    assert (geo.in_spatial, geo.out_spatial, geo.stride, geo.groups) == ((8, 8), (4, 4), (2, 2), 2)


def test_dense_dag_has_full_multiplicity_and_with_mask_agrees_with_to_dag():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 4, 5), nn.ReLU(), nn.Conv1d(4, 3, 3))
    dense = pn.to_dag(model, (2, 20))
    assert all((b.multiplicity == b.kernel_volume).all() and b.num_edges == b.n_src * b.n_dst for b in dense.blocks)
    mask = random_mask(model, 0.4, 1)
    a, b = dense.with_mask(mask), pn.to_dag(model, (2, 20), mask=mask)
    assert all(block_edges(x) == block_edges(y) for x, y in zip(a.blocks, b.blocks))
    assert dense.with_mask(None).num_edges == dense.num_edges and a.mask is mask


def test_resnet20_identity_shortcuts():
    model = pn.models.get("resnet20", seed=0)
    dag = pn.to_dag(model, (3, 32, 32))
    convs = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prunable = [b for b in dag.blocks if b.prunable]
    assert len(prunable) == len(convs) == 22 and [b.param for b in prunable] == [f"{c}.weight" for c in convs]
    adds = [layer for layer in dag.layers if layer.kind == "add"]
    assert len(adds) == 9
    for layer in adds:
        ins = [dag.blocks[i] for i in dag.in_blocks[layer.index]]
        assert len(ins) == 2 and all(b.kind == "identity" and not b.prunable for b in ins)
        assert all(block_edges(b) == {(u, u): (1, 1.0) for u in range(layer.size)} for b in ins)
    # 1×1 shortcut convs are ordinary prunable blocks into their own layer, merged by the add
    shortcut = next(b for b in prunable if b.param == "blocks.3.shortcut.0.weight")
    assert shortcut.kernel_volume == 1 and dag.layers[shortcut.dst].size == 32
    assert dag.num_weights == sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1)
    assert dag.num_weights == 270896  # the figure the PHEW reference reports


@pytest.mark.parametrize("name, kw", [(n, {}) for n in ("lenet300", "conv2", "conv4", "conv6", "vgg11", "vgg16",
                                                         "vgg19", "resnet20", "resnet32", "resnet56")]
                         + [(n, {"batch_norm": False}) for n in ("vgg11", "vgg16", "vgg19")])
def test_every_registry_model_converts(name, kw):
    model = pn.models.get(name, seed=0, **kw)
    shape = pn.models.default_input_shape(name)
    dag = pn.to_dag(model, shape)
    weights = pn.prunable_weights(model)
    assert dag.params == tuple(weights)
    assert dag.num_weights == sum(w.numel() for w in weights.values())
    assert sum(int(b.multiplicity.sum()) for b in dag.blocks if b.prunable) == dag.num_weights
    assert dag.layers[dag.output_layers[0]].size == 10


def test_torchvision_resnet18():
    import torchvision

    model = torchvision.models.resnet18(weights=None, num_classes=10)
    dag = pn.to_dag(model, (3, 64, 64))
    assert len([b for b in dag.blocks if b.prunable]) == 21  # 20 convs (3 of them 1×1 downsamples) + fc
    assert len([layer for layer in dag.layers if layer.kind == "add"]) == 8
    assert dag.num_weights == sum(w.numel() for w in pn.prunable_weights(model).values())


def test_concat_and_gating_merge():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(2, 3, 1), nn.Conv2d(2, 4, 1), nn.Conv2d(7, 7, 1)
            self.head = nn.Linear(7, 2)

        def forward(self, x):
            y = torch.cat([self.a(x), self.b(x)], dim=1)
            y = self.c(y) * torch.sigmoid(y)
            return self.head(y.mean((2, 3)))

    dag = pn.to_dag(Net(), (2, 4, 4))
    kinds = [layer.kind for layer in dag.layers]
    assert kinds == ["input", "conv", "conv", "cat", "conv", "mul", "linear"]
    cat = dag.layers[3]
    ins = [dag.blocks[i] for i in dag.in_blocks[cat.index]]
    assert [block_edges(b) for b in ins] == [{(u, u): (1, 1.0) for u in range(3)},
                                             {(u, u + 3): (1, 1.0) for u in range(4)}]


def test_torch_pruned_model_carries_its_mask_into_the_dag():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    mask = random_mask(model, 0.5, 0)
    tprune.custom_from_mask(model[0], "weight", mask["0.weight"])
    dag = pn.to_dag(model, (6,))
    expected = pn.Mask({"0.weight": mask["0.weight"], "2.weight": torch.ones(3, 5)})
    assert dag.full_mask() == expected
    assert_blocks_match_weights(model, dag, expected)


def test_summary_lists_every_layer():
    dag = pn.to_dag(pn.models.get("conv2", seed=0), (3, 32, 32))
    text = dag.summary()
    assert all(layer.name in text for layer in dag.layers) and "prunable weights kept" in text


# -- bad input -------------------------------------------------------------------------------

class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Gate()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.inner(x))


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: untraceable
            return x
        return -x


def test_untraceable_model_names_the_module():
    with pytest.raises(GraphError, match=r"inside module 'inner' \(Gate\).*control flow"):
        pn.to_dag(Branchy(), (4,))


def test_unsupported_layer_names_op_and_module():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ConvTranspose2d(2, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    with pytest.raises(UnsupportedLayerError, match=r"module '1' \(ConvTranspose2d\)"):
        pn.to_dag(model, (1, 6, 6))

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 4))

        def forward(self, x):
            return torch.nn.functional.linear(x, self.w)

    with pytest.raises(UnsupportedLayerError, match="'linear'.*nn.Linear"):
        pn.to_dag(Functional(), (4,))


def test_wrong_input_shape_says_how_to_fix():
    model = pn.models.get("lenet300", seed=0)
    with pytest.raises(GraphError, match=r"input of shape \(3, 32, 32\).*without the batch dimension"):
        pn.to_dag(model, (3, 32, 32))
    with pytest.raises(GraphError, match="tuple of ints"):
        pn.to_dag(model, 784)
    with pytest.raises(GraphError, match="positive"):
        pn.to_dag(model, (0, 28, 28))


def test_nan_weights_are_named():
    model = nn.Sequential(nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(WeightError, match=r"'0.weight' has 1 NaN"):
        pn.to_dag(model, (3,))


def test_mask_of_another_model_is_rejected():
    dag = pn.to_dag(nn.Sequential(nn.Linear(3, 2)), (3,))
    with pytest.raises(MaskError, match="shape"):
        dag.with_mask(pn.Mask({"0.weight": torch.ones(2, 4)}))
    with pytest.raises(MaskError, match="not a prunable weight"):
        dag.with_mask(pn.Mask({"1.weight": torch.ones(2, 3)}))


def test_to_dag_leaves_training_mode_and_weights_alone():
    model = pn.models.get("resnet20", seed=0).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pn.to_dag(model, (3, 32, 32))
    assert model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # BN running stats untouched
