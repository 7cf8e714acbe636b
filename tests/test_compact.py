"""compact: the ticket without its dead units, against the masked original (the oracle: its outputs
on random inputs, eval mode) and against analyze's effective widths."""

import copy

import pytest
import torch
from torch import nn

import pathnet as pn
from pathnet.errors import GraphError


def masked_copy(model, mask):
    m = copy.deepcopy(model).eval()
    mask.complete(model).apply(m)
    return m


def assert_same_function(model, mask, compacted, shape, atol=1e-5):
    torch.manual_seed(1)
    x = torch.randn(8, *shape)
    with torch.no_grad():
        want, got = masked_copy(model, mask)(x), compacted.eval()(x)
    assert torch.allclose(want, got, atol=atol), float((want - got).abs().max())


class DenseBlock(nn.Module):
    """Two DenseNet layers (BN-ReLU-conv, concatenated features) and a transition."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.l1 = nn.Sequential(nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1))
        self.l2 = nn.Sequential(nn.BatchNorm2d(14), nn.ReLU(), nn.Conv2d(14, 6, 3, padding=1))
        self.trans = nn.Sequential(nn.BatchNorm2d(20), nn.ReLU(), nn.Conv2d(20, 10, 1), nn.AvgPool2d(2))
        self.head = nn.Linear(10 * 4 * 4, 5)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([x, self.l1(x)], 1)
        x = torch.cat([x, self.l2(x)], 1)
        return self.head(torch.flatten(self.trans(x), 1))


class Separable(nn.Module):
    """MobileNet-style: depthwise 3×3, pointwise 1×1, squeeze-excitation gate, inverted residual."""

    def __init__(self):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU6())
        self.se1, self.se2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.project = nn.Sequential(nn.Conv2d(16, 3, 1), nn.BatchNorm2d(3))
        self.head = nn.Linear(3, 4)

    def forward(self, x):
        y = self.dw(self.expand(x))
        y = y * torch.sigmoid(self.se2(torch.relu(self.se1(y.mean((2, 3), keepdim=True)))))
        x = x + self.project(y)
        return self.head(x.mean((2, 3)))


def randomise_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            nn.init.normal_(m.bias, 0, 0.1)
    return model.eval()


CASES = {
    "mlp": (lambda: pn.models.get("lenet300", seed=0), (1, 28, 28)),
    "vgg_bn": (lambda: randomise_bn(pn.models.get("vgg11", seed=0)), (3, 32, 32)),
    "resnet20": (lambda: randomise_bn(pn.models.get("resnet20", seed=0)), (3, 32, 32)),
    "dense_block": (lambda: randomise_bn(DenseBlock()), (3, 8, 8)),
    "separable": (lambda: randomise_bn(Separable()), (3, 8, 8)),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method, density", [("synflow", 0.05), ("snip", 0.1), ("random", 0.3), ("phew", 0.05)])
def test_compacted_model_computes_the_masked_function(case, method, density):
    build, shape = CASES[case]
    torch.manual_seed(0)
    model = build()
    data = pn.data.Dataset("noise", torch.utils.data.TensorDataset(torch.randn(64, *shape), torch.randint(0, 4, (64,))),
                           None, shape, 4) if method == "snip" else None
    mask = pn.prune(model, method, density, input_shape=shape, data=data, seed=0)
    compacted, new_mask, report = pn.compact(model, mask, shape)
    assert_same_function(model, mask, compacted, shape)
    assert report.params_after <= report.params_before and report.flops_after <= report.flops_before
    assert set(new_mask) == set(pn.prunable_weights(compacted))
    rep = pn.analyze(mask, model, shape)  # every weight on a path survives; only off-path ones may go
    assert rep.num_effective <= new_mask.num_kept <= rep.num_kept


@pytest.mark.parametrize("case", ["mlp", "vgg_bn"])
def test_kept_units_equal_analyze_effective_width(case):
    build, shape = CASES[case]
    model = build()
    mask = pn.prune(model, "synflow", 0.02, input_shape=shape, seed=0)
    _, _, report = pn.compact(model, mask, shape)
    widths = {r.name: r.effective_width for r in pn.analyze(mask, model, shape).layers if r.param}
    kept = {r.name: r.units_after for r in report.layers}
    hidden = list(kept)[:-1]  # the classifier keeps every output
    assert report.units_kept_constant == 0
    assert {k: kept[k] for k in hidden} == {k: widths[k] for k in hidden}
    assert any(kept[k] < r.units_before for r in report.layers for k in [r.name])


def test_constant_units_fold_into_the_next_bias_or_are_kept():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].bias.fill_(1.0)
    mask = pn.Mask({"0.weight": torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool),
                    "2.weight": torch.ones(2, 3, dtype=torch.bool)})
    compacted, _, report = pn.compact(model, mask, (4,))
    assert compacted.get_submodule("0").out_features == 1 and report.units_folded == 2
    assert_same_function(model, mask, compacted, (4,))
    # a padded conv reads the constant channel: its border differs from its centre, so it stays
    conv = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1), nn.Flatten(),
                         nn.Linear(2 * 4 * 4, 2))
    with torch.no_grad():
        conv[0].bias.fill_(1.0)
    m = pn.Mask({"0.weight": torch.tensor([1, 0], dtype=torch.bool).reshape(2, 1, 1, 1)})
    compacted, _, report = pn.compact(conv, m, (1, 4, 4))
    assert report.units_kept_constant == 1 and compacted.get_submodule("0").out_channels == 2
    assert_same_function(conv, m, compacted, (1, 4, 4))


def test_compacted_ticket_trains_with_its_mask():
    model = pn.models.get("mlp", input_shape=(1, 8, 8), seed=0, widths=(32, 32))
    mask = pn.prune(model, "synflow", 0.1, input_shape=(1, 8, 8), seed=0)
    compacted, new_mask, _ = pn.compact(model, mask, (1, 8, 8))
    pn.train(compacted, new_mask, "digits", epochs=1, progress=False)
    weights = pn.prunable_weights(compacted)
    assert all(bool((weights[k][~m] == 0).all()) for k, m in new_mask.items())


def test_layer_collapse_and_unsupported_ops_are_clear_errors():
    model = pn.models.get("lenet300", seed=0)
    dead = pn.Mask({k: torch.zeros(w.shape, dtype=torch.bool) for k, w in pn.prunable_weights(model).items()})
    with pytest.raises(GraphError, match="layer collapse"):
        pn.compact(model, dead, (1, 28, 28))
    vit = pn.models.get("vit_tiny", depth=1, width=8, heads=2)
    with pytest.raises(GraphError, match="compact: .*not an op compaction can rewrite"):
        pn.compact(vit, pn.Mask.ones(vit), (3, 32, 32))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "densenet121", "squeezenet1_1",
                                  "googlenet"])
def test_torchvision_families_compact_to_the_same_function(name):
    from torchvision import models as tvm

    kw = {"init_weights": False} if name == "googlenet" else {}
    torch.manual_seed(0)
    model = tvm.get_model(name, weights=None, num_classes=10, **kw).eval()
    shape = (3, 32, 32)
    mask = pn.prune(model, "magnitude", 0.1, scope="layerwise", seed=0)
    compacted, _, report = pn.compact(model, mask, shape)
    assert_same_function(model, mask, compacted, shape)
    assert report.params_after <= report.params_before
