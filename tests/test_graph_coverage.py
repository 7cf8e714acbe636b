"""to_dag on transformers, mixers and the torchvision families, against autograd.

Oracle: the channel-level dependency structure computed by autograd. With activations linearised
(ReLU/GELU/SiLU → identity) and normalisation statistics detached, input unit i reaches output
unit o iff ∂(Σ_positions out_o)/∂x_i ≠ 0 at some position of random inputs. The DAG says the same
iff there is a path (networkx) from input unit i to output unit o. Masks are sparse and random
(applied to the weights before autograd), so missing and surplus edges both show.
"""

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pathnet as pn
from pathnet.errors import GraphError, UnsupportedLayerError

from conftest import random_mask


# -- the oracle --------------------------------------------------------------------------------

def _ln_detached(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(-len(normalized_shape), 0))
    mu = x.mean(dims, keepdim=True).detach()
    var = x.var(dims, keepdim=True, unbiased=False).detach()
    y = (x - mu) / torch.sqrt(var + eps)
    return y * weight + bias if weight is not None else y


def autograd_reach(model, input_shape, unit_axis_in=1, unit_axis_out=-1):
    """reach[i, o]: does output unit o depend on input unit i (autograd, float64, random inputs), with
    activations as identities and LayerNorm statistics as constants (BN runs in eval mode)?"""
    model = model.double().eval()
    x = torch.randn((2, *input_shape), dtype=torch.float64, requires_grad=True)
    with pytest.MonkeyPatch.context() as mp:
        for name in ("relu", "gelu", "silu", "hardswish"):
            mp.setattr(F, name, lambda x, *a, **k: x)
        mp.setattr(F, "layer_norm", _ln_detached)
        out = model(x)
    out = out.movedim(unit_axis_out, -1).reshape(-1, out.shape[unit_axis_out])
    reach = np.zeros((input_shape[unit_axis_in - 1], out.shape[1]), dtype=bool)
    for o in range(out.shape[1]):
        (g,) = torch.autograd.grad(out[:, o].sum(), x, retain_graph=True)
        g = g.abs().movedim(unit_axis_in, 1)
        reach[:, o] = (g.reshape(2, g.shape[1], -1) > 1e-12).any(2).any(0).numpy()
    return reach


def dag_reach(dag):
    g = dag.to_networkx()
    (out,) = dag.output_layers
    reach = np.zeros((dag.layers[0].size, dag.layers[out].size), dtype=bool)
    for i in range(dag.layers[0].size):
        for layer, unit in nx.descendants(g, (0, i)):
            if layer == out:
                reach[i, unit] = True
    return reach


def check_against_autograd(model, input_shape, density, seed, exact=True, **axes):
    with torch.no_grad():  # no weight exactly zero (ViT zero-initialises its head), so pruning decides
        g = torch.Generator().manual_seed(seed)
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    mask = random_mask(model, density, seed)
    dag = pn.to_dag(model, input_shape, mask=mask)
    weights = pn.prunable_weights(model)
    assert set(dag.params) | set(dag.constant_params) == set(weights)  # every weight placed
    assert dag.num_weights == sum(weights[k].numel() for k in dag.params)
    mask.apply(model)
    oracle, ours = autograd_reach(model, input_shape, **axes), dag_reach(dag)
    if exact:
        np.testing.assert_array_equal(ours, oracle)
    else:  # unit paths that positions make impossible: autograd-reachable ⇒ DAG-reachable
        assert not (oracle & ~ours).any()
    return dag, oracle


# -- tiny networks of every family ---------------------------------------------------------------

class GPTBlock(nn.Module):
    """A causal pre-norm transformer block with F.scaled_dot_product_attention."""

    def __init__(self, d=8, heads=2):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.head = nn.Linear(d, 5)

    def forward(self, x):  # (B, T, d)
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(b, t, d))
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return self.head(x)


class Mixer(nn.Module):
    """MLP-mixer: patches, token mixing (a Linear over the token axis after a transpose), channel mixing."""

    def __init__(self, c=6, tokens=4):
        super().__init__()
        self.patch = nn.Conv2d(2, c, 4, stride=4)
        self.tok1, self.tok2 = nn.Linear(tokens, 8), nn.Linear(8, tokens)
        self.ch1, self.ch2 = nn.Linear(c, 12), nn.Linear(12, c)
        self.norm = nn.LayerNorm(c)
        self.head = nn.Linear(c, 3)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)  # (B, tokens, c)
        y = self.norm(x).transpose(1, 2)
        x = x + self.tok2(F.gelu(self.tok1(y))).transpose(1, 2)
        x = x + self.ch2(F.gelu(self.ch1(self.norm(x))))
        return self.head(x.mean(1))


class Encoder(nn.Module):
    def __init__(self, d=8):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, 2, 16, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, 4)

    def forward(self, x):
        return self.head(self.enc(x).mean(1))


def tiny_vit():
    from torchvision.models import VisionTransformer
    return VisionTransformer(image_size=16, patch_size=8, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=12,
                             num_classes=5)


def tiny_swin():
    from torchvision.models import SwinTransformer
    return SwinTransformer(patch_size=[2, 2], embed_dim=8, depths=[2, 1], num_heads=[2, 2], window_size=[2, 2],
                           num_classes=5)


def tiny_swin_v2():
    from torchvision.models.swin_transformer import SwinTransformer, SwinTransformerBlockV2, PatchMergingV2
    return SwinTransformer(patch_size=[2, 2], embed_dim=8, depths=[2, 1], num_heads=[2, 2], window_size=[2, 2],
                           num_classes=5, block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2)


def tiny_convnext():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt
    return ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=5)


def tiny_shufflenet():
    from torchvision.models import ShuffleNetV2
    return ShuffleNetV2([1, 1, 1], [4, 8, 16, 32, 24], num_classes=5)


class InceptionBlock(nn.Module):
    """GoogLeNet-style branches (1×1, 3×3, pool + 1×1) concatenated along channels."""

    def __init__(self):
        super().__init__()
        self.b1, self.b2 = nn.Conv2d(3, 4, 1), nn.Sequential(nn.Conv2d(3, 2, 1), nn.Conv2d(2, 4, 3, padding=1))
        self.b3 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(3, 2, 1))
        self.head = nn.Linear(10, 4)

    def forward(self, x):
        y = torch.cat([self.b1(x), self.b2(x), self.b3(x)], 1)
        return self.head(F.adaptive_avg_pool2d(y, 1).flatten(1))


FAMILIES = {
    "vit": (tiny_vit, (3, 16, 16), {}),
    "swin": (tiny_swin, (3, 8, 8), {}),
    "swin_v2": (tiny_swin_v2, (3, 8, 8), {}),
    "convnext": (tiny_convnext, (3, 16, 16), {}),
    "shufflenet": (tiny_shufflenet, (3, 32, 32), {"exact": False}),
    "inception_block": (InceptionBlock, (3, 6, 6), {}),
    "gpt_block": (GPTBlock, (5, 8), {"unit_axis_in": 2}),
    "mixer": (Mixer, (2, 8, 8), {}),
    "transformer_encoder": (Encoder, (3, 8), {"unit_axis_in": 2}),
    "resnet_1d": (lambda: pn.models.get("resnet20", num_classes=5, input_shape=(2, 12), width=4), (2, 12), {}),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("density, seed", [(1.0, 0), (0.5, 1), (0.25, 2)])
def test_dag_reachability_equals_autograd(family, density, seed):
    build, shape, kw = FAMILIES[family]
    torch.manual_seed(seed)
    check_against_autograd(build(), shape, density, seed, **kw)


@pytest.mark.parametrize("family", FAMILIES)
def test_phew_exact_density_and_every_kept_weight_on_a_path(family):
    build, shape, _ = FAMILIES[family]
    torch.manual_seed(0)
    model = build()
    dag = pn.to_dag(model, shape)
    # Swin-v2's position-bias MLPs (512 hidden units, no path crosses them) stay dense inside the budget:
    # in this tiny model they are over half the weights
    density = 0.7 if dag.constant_params else 0.2
    mask = pn.prune(model, "phew", density, input_shape=shape, seed=0)
    total = sum(w.numel() for w in pn.prunable_weights(model).values())
    assert set(mask) == set(pn.prunable_weights(model)) and mask.num_kept == round(density * total)
    assert all(bool(mask[k].all()) for k in dag.constant_params)
    rep = pn.analyze(mask, dag=dag)  # the graph's weights: those off every path are not its business
    assert rep.num_effective == rep.num_kept and not rep.layer_collapse
    assert pn.compare(mask, pn.prune(model, "random", density, seed=0), dag=dag).jaccard > 0


def test_attention_in_projection_is_one_prunable_weight_of_three_blocks():
    model = Encoder()
    weights = pn.prunable_weights(model)
    name = "enc.layers.0.self_attn.in_proj_weight"
    assert name in weights and weights[name].shape == (24, 8)
    dag = pn.to_dag(model, (3, 8))
    blocks = [b for b in dag.blocks if b.param == name]
    assert [(b.row_offset, b.n_dst) for b in blocks] == [(0, 8), (8, 8), (16, 8)]
    # Σ Linear weights + attention in-projections (out_proj is a Linear)
    expected = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)) + 2 * 24 * 8
    assert dag.num_weights == expected
    mask = pn.prune(model, "phew", 0.3, input_shape=(3, 8), seed=0)
    assert name in mask


def test_attention_output_unit_depends_on_its_v_unit_and_its_heads_q_and_k():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(4, 2, batch_first=True)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = mha

        def forward(self, x):
            return self.a(x, x, x, need_weights=False)[0]

    dag = pn.to_dag(Net(), (3, 4))
    g = dag.to_networkx()
    names = {layer.name: layer.index for layer in dag.layers}
    heads = names["a.heads"]
    for j in range(4):  # attended unit j: V unit j and the score unit of head j // 2
        preds = {(dag.layers[l].name, u) for l, u in g.predecessors((heads, j))}
        assert preds == {("a.v", j), ("a.scores", j // 2)}
    for h in range(2):
        preds = {(dag.layers[l].name, u) for l, u in g.predecessors((names["a.scores"], h))}
        assert preds == {("a.q", 2 * h), ("a.q", 2 * h + 1), ("a.k", 2 * h), ("a.k", 2 * h + 1)}


def test_token_mixing_linear_is_a_shared_diagonal_block():
    torch.manual_seed(0)
    model = Mixer()
    mask = random_mask(model, 0.5, 0)
    dag = pn.to_dag(model, (2, 8, 8), mask=mask)
    (block,) = [b for b in dag.blocks if b.param == "tok1.weight"]
    assert block.shared and block.num_edges == 6  # channel c → channel c, for the 6 channels
    kept = mask["tok1.weight"]
    assert (block.multiplicity == int(kept.sum())).all()
    assert np.allclose(block.l1, float((model.tok1.weight.detach().abs() * kept).sum()))


# -- the four silent errors, now caught or right ----------------------------------------------------

def test_encoder_container_places_every_weight():
    model = Encoder()
    dag = pn.to_dag(model, (3, 8))
    assert set(dag.params) == set(pn.prunable_weights(model))
    mask = pn.prune(model, "phew", 0.05, input_shape=(3, 8), seed=0)
    assert mask.num_kept == round(0.05 * dag.num_weights)


class ChunkProbe(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(2, 8, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), \
            nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        a, b = self.conv1(x).chunk(2, dim=1)
        return self.head(torch.cat([self.conv2(a), self.conv3(b)], 1).mean((2, 3)))


def test_chunk_outputs_are_followed():
    dag, _ = check_against_autograd(ChunkProbe(), (2, 5, 5), 0.6, 0)
    assert {"conv2.weight", "conv3.weight"} <= set(dag.params)


class Roll(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.b(torch.roll(self.a(x), 1, dims=1))


class SquareTranspose(nn.Module):
    """(C, L) with C == L: a transpose is not an identity."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 4, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.conv(x).transpose(1, 2)).mean(1)


@pytest.mark.parametrize("build, shape", [(Roll, (4,)), (SquareTranspose, (4, 4))])
def test_roll_and_square_transpose_are_followed(build, shape):
    torch.manual_seed(0)
    check_against_autograd(build(), shape, 0.5, 3)


def test_product_with_a_bare_parameter_is_refused():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.w = nn.Parameter(torch.randn(4, 4))

        def forward(self, x):
            return self.fc(x) @ self.w

    with pytest.raises(UnsupportedLayerError, match="parameter 'w'.*nn.Linear"):
        pn.to_dag(Net(), (4,))


def test_googlenet_traces_its_auxiliary_heads():
    from torchvision.models import googlenet
    model = googlenet(weights=None, num_classes=5, aux_logits=True, init_weights=False).eval()
    dag = pn.to_dag(model, (3, 224, 224))
    assert set(dag.params) == set(pn.prunable_weights(model))
    assert len(dag.output_layers) == 3 and not model.training  # main and both aux heads; mode restored
    mask = pn.prune(model, "random", 0.05, seed=0)
    cmp = pn.compare(mask, mask, dag=dag)
    assert cmp.jaccard == 1.0


def test_unplaced_weight_is_named():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(4, 3), nn.Linear(4, 3)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(GraphError, match=r"unused\.weight"):
        pn.to_dag(Net(), (4,))


def test_unknown_op_is_refused_not_assumed():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 3)

        def forward(self, x):
            return self.b(torch.cumsum(self.a(x), dim=1))

    with pytest.raises(GraphError, match="'cumsum'.*register_op"):
        pn.to_dag(Net(), (4,))


def test_integer_token_embeddings_and_recurrence_are_refused():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.fc = nn.Embedding(10, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.emb(x.long()))

    with pytest.raises(UnsupportedLayerError, match="Embedding.*embedded inputs"):
        pn.to_dag(Tokens(), (5,))
    with pytest.raises(GraphError):
        pn.to_dag(nn.Sequential(nn.LSTM(4, 4)), (3, 4))


def test_a_user_registered_handler_is_used():
    from pathnet.graph import HANDLERS, Units, register_op

    class Renorm(nn.Module):  # a leaf of their own that pathnet cannot prove unit-preserving
        def forward(self, x):
            return torch.cumsum(x, dim=0)  # over the batch: the user knows it keeps the units

    model = nn.Sequential(nn.Linear(3, 4), Renorm(), nn.Linear(4, 2))
    with pytest.raises(GraphError, match="cumsum"):
        pn.to_dag(model, (3,))
    register_op(Renorm)(lambda b, node, args, kwargs, out: Units(args[0].labels, args[0].pre_ops, args[0].name))
    try:
        dag = pn.to_dag(model, (3,))
        assert [layer.size for layer in dag.layers] == [3, 4, 2]
    finally:
        HANDLERS.pop(Renorm)
