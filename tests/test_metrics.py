"""analyze() against brute force: exact integer path counts, networkx reachability, cuts, unrolled graphs."""

import itertools
import json
import math

import networkx as nx
import numpy as np
import pytest
import torch
from torch import nn

import pathnet as pn
from pathnet.errors import GraphError

from conftest import random_mask


def mlp(widths, seed=0):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def exact_chain_paths(mask):
    """Oracle: 1ᵀ M_L ⋯ M_1 1 with Python integers."""
    v = None
    for m in mask.values():
        a = m.numpy().astype(object)
        v = a.sum(axis=1) if v is None else a @ v
    return int(v.sum())


def log10_int(n):
    return -math.inf if n == 0 else math.log10(n)


def enumerate_paths(dag):
    """Oracle for tiny nets: every simple input→output path in networkx, weighted by multiplicities."""
    g = dag.to_networkx()
    total = 0
    for s in [(0, u) for u in range(dag.layers[0].size)]:
        for t in [(i, u) for i in dag.output_layers for u in range(dag.layers[i].size)]:
            for path in nx.all_simple_paths(g, s, t):
                total += math.prod(g.edges[a, b]["multiplicity"] for a, b in zip(path, path[1:]))
    return total


@pytest.mark.parametrize("seed", range(100))
def test_mlp_path_counts_equal_exact_integer_counts(seed):
    rng = np.random.default_rng(seed)
    widths = [int(w) for w in rng.integers(1, 7, size=rng.integers(3, 6))]
    model = mlp(widths, seed)
    mask = random_mask(model, float(rng.uniform(0.05, 0.9)), seed)  # low densities give dead units, zero paths
    rep = pn.analyze(mask, model, (widths[0],))
    exact = exact_chain_paths(mask)
    assert rep.log10_paths == pytest.approx(log10_int(exact), abs=1e-9)
    assert rep.layer_collapse == (exact == 0)
    assert pn.analyze(mask).log10_paths == pytest.approx(rep.log10_paths, abs=1e-12)  # chain: no model needed


def tiny_convnet(seed):
    torch.manual_seed(seed)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(2, 3, 3, padding=1)
            self.b = nn.Conv2d(3, 3, 3, stride=2, padding=1)
            self.skip = nn.Conv2d(2, 3, 1, stride=2)
            self.fc = nn.Linear(3 * 2 * 2, 2)

        def forward(self, x):
            y = self.b(torch.relu(self.a(x))) + self.skip(x)
            return self.fc(torch.flatten(torch.relu(y), 1))

    return Net()


@pytest.mark.parametrize("seed", range(12))
def test_conv_path_counts_equal_enumeration(seed):
    model = tiny_convnet(seed)
    mask = random_mask(model, 0.15 + 0.06 * seed, seed)
    rep = pn.analyze(mask, model, (2, 4, 4))
    dag = pn.to_dag(model, (2, 4, 4), mask=mask)
    assert rep.log10_paths == pytest.approx(log10_int(enumerate_paths(dag)), abs=1e-9)


@pytest.mark.parametrize("depth, width, beyond_float64", [(60, 64, False), (200, 100, True)])
def test_no_overflow_on_deep_mlps(depth, width, beyond_float64):
    model = mlp([width] * (depth + 1), seed=1)
    mask = random_mask(model, 0.5, 1)
    exact = exact_chain_paths(mask)
    assert (exact > 10 ** 308) == beyond_float64
    rep = pn.analyze(mask, model, (width,))
    assert math.isfinite(rep.log10_paths) and rep.log10_paths == pytest.approx(math.log10(exact), rel=1e-12)


def reachability_oracle(dag):
    g = dag.to_networkx()
    inputs = [(0, u) for u in range(dag.layers[0].size)]
    outputs = [(i, u) for i in dag.output_layers for u in range(dag.layers[i].size)]
    fwd = set(inputs).union(*(nx.descendants(g, s) for s in inputs))
    bwd = set(outputs).union(*(nx.ancestors(g, t) for t in outputs))
    return g, fwd, bwd


@pytest.mark.parametrize("seed", range(10))
def test_effective_mask_equals_networkx_reachability(seed):
    model = tiny_convnet(seed) if seed % 2 else mlp([6, 8, 8, 8, 3], seed)
    shape = (2, 4, 4) if seed % 2 else (6,)
    mask = random_mask(model, 0.12, seed)
    rep = pn.analyze(mask, model, shape)
    dag = pn.to_dag(model, shape, mask=mask)
    g, fwd, bwd = reachability_oracle(dag)
    expected = {k: torch.zeros_like(m) for k, m in mask.items()}
    for u, v, d in g.edges(data=True):
        if d["prunable"] and u in fwd and v in bwd:
            b = dag.blocks[d["block"]]
            out_ch, in_g = dag.abs_weights(b.param).shape[:2]
            j = u[1] - (v[1] // (out_ch // b.groups)) * in_g
            expected[b.param][v[1], j] = mask[b.param][v[1], j]
    assert rep.effective_mask == pn.Mask(expected)
    assert rep.effective_density == pytest.approx(sum(int(m.sum()) for m in expected.values()) / mask.num_total)
    assert rep.ineffective_params == mask.num_kept - rep.effective_mask.num_kept
    # removing what lies on no path keeps every path
    assert pn.analyze(rep.effective_mask, model, shape).log10_paths == pytest.approx(rep.log10_paths, abs=1e-9)
    for row in rep.layers:  # effective width = units on some path
        assert row.effective_width == sum(1 for u in range(row.units) if (row.index, u) in fwd & bwd)


def test_edge_path_counts_sum_to_the_total_per_layer():
    model = mlp([5, 7, 6, 4], 3)
    mask = random_mask(model, 0.6, 3)
    rep = pn.analyze(mask, model, (5,))
    total = exact_chain_paths(mask)
    for name, counts in rep.edge_path_counts().items():
        through = sum(10 ** float(x) for x in counts.flatten() if math.isfinite(x))
        assert through == pytest.approx(total, rel=1e-9), name
        assert bool(torch.isinf(counts[~mask[name]]).all())
    units = rep.unit_path_counts()
    assert sum(10 ** float(x) for x in units[1] if math.isfinite(x)) == pytest.approx(total, rel=1e-9)


def networkx_cuts(dag):
    """Oracle: min hidden-unit cut and min weight cut between super source and sink with networkx."""
    g, _, _ = reachability_oracle(dag)
    inputs = [(0, u) for u in range(dag.layers[0].size)]
    outputs = [(i, u) for i in dag.output_layers for u in range(dag.layers[i].size)]
    h = g.copy()
    for u, v, d in h.edges(data=True):
        d["capacity"] = d["multiplicity"] if d["prunable"] else float("inf")
    h.add_edges_from((("S", s) for s in inputs), capacity=float("inf"))
    h.add_edges_from(((t, "T") for t in outputs), capacity=float("inf"))
    edge_cut = nx.minimum_cut_value(h, "S", "T")
    # inputs and outputs cannot be cut: fold them into S and T
    v = nx.DiGraph()
    v.add_edges_from(("S" if a in inputs else ("T" if a in outputs else a),
                      "S" if b in inputs else ("T" if b in outputs else b)) for a, b in g.edges)
    v.add_nodes_from(["S", "T"])
    vertex_cut = len(nx.minimum_node_cut(v, "S", "T")) if not v.has_edge("S", "T") else None
    return vertex_cut, edge_cut


@pytest.mark.parametrize("seed", range(8))
def test_cuts_equal_networkx(seed):
    model = tiny_convnet(seed) if seed % 2 else mlp([5, 6, 4, 6, 3], seed)
    shape = (2, 4, 4) if seed % 2 else (5,)
    mask = random_mask(model, 0.25 + 0.05 * seed, seed)
    rep = pn.analyze(mask, model, shape)
    dag = pn.to_dag(model, shape, mask=mask)
    vertex, edge = networkx_cuts(dag)
    assert rep.min_edge_cut == edge
    if rep.layer_collapse:
        assert rep.min_vertex_cut == 0 and rep.bottleneck_width == 0
    else:
        assert rep.min_vertex_cut == vertex
        assert rep.min_vertex_cut <= rep.bottleneck_width


def test_dead_units_and_widths_on_a_hand_built_net():
    model = mlp([3, 4, 2])
    m1 = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 1, 0], [1, 1, 1]])  # hidden 1 has no input
    m2 = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])  # hidden 2, 3 lead nowhere; output 1 dead
    rep = pn.analyze(pn.Mask({"0.weight": m1, "2.weight": m2}), model, (3,))
    hidden, out = rep.layers
    assert (hidden.width, hidden.effective_width, hidden.dead_in, hidden.dead_out, hidden.isolated) == (3, 1, 1, 2, 0)
    assert (out.width, out.effective_width, out.dead_in) == (1, 1, 1)
    assert rep.log10_paths == pytest.approx(0.0)  # exactly one path: input 0 → hidden 0 → output 0
    assert rep.effective_mask.num_kept == 2 and rep.ineffective_params == 5
    assert (rep.bottleneck_width, rep.bottleneck_layer) == (1, "0")


def unrolled_paths(model, mask, hw):
    """Oracle for the spatial level: build the unrolled graph position by position, count with integers."""
    conv_a, conv_b, fc = model[0], model[2], model[6]
    counts = {(c, y, x): 1 for c in range(conv_a.in_channels) for y in range(hw) for x in range(hw)}

    def conv(counts, layer, w, size):
        k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
        out_size = (size + 2 * p - k) // s + 1
        out = {}
        for o, y, x in itertools.product(range(layer.out_channels), range(out_size), range(out_size)):
            total = 0
            for i, dy, dx in itertools.product(range(layer.in_channels), range(k), range(k)):
                yy, xx = y * s - p + dy, x * s - p + dx
                if w[o, i, dy, dx] and 0 <= yy < size and 0 <= xx < size:
                    total += counts[(i, yy, xx)]
            out[(o, y, x)] = total
        return out, out_size

    counts, size = conv(counts, conv_a, mask["0.weight"], hw)
    counts, size = conv(counts, conv_b, mask["2.weight"], size)
    pooled = {(c, y, x): sum(counts[(c, 2 * y + a, 2 * x + b)] for a in range(2) for b in range(2))
              for c in range(conv_b.out_channels) for y in range(size // 2) for x in range(size // 2)}
    flat = [pooled[k] for k in sorted(pooled)]
    w = mask["6.weight"]
    return sum(sum(flat[f] for f in range(len(flat)) if w[o, f]) for o in range(fc.out_features))


@pytest.mark.parametrize("seed", range(6))
def test_spatial_level_equals_the_unrolled_graph(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, stride=2, padding=1),
                          nn.BatchNorm2d(4), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 2 * 2, 3))
    mask = random_mask(model, 0.3 + 0.1 * seed, seed)
    rep = pn.analyze(mask, model, (2, 8, 8), level="spatial")
    assert rep.log10_paths == pytest.approx(log10_int(unrolled_paths(model, mask, 8)), abs=1e-9)


def test_spatial_level_through_residual_adds_matches_an_all_ones_forward():
    model = pn.models.get("resnet20", seed=0)
    mask = random_mask(model, 0.3, 0)
    rep = pn.analyze(mask, model, (3, 32, 32), level="spatial")
    # oracle: the masked |mask| network (no BN, no nonlinearity, sum pooling) on ones, in float64
    net = pn.models.get("resnet20").double()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
            m.running_mean.zero_(), m.running_var.fill_(1 - m.eps), m.weight.data.fill_(1), m.bias.data.zero_()
    with torch.no_grad():
        for name, w in pn.prunable_weights(net).items():
            w.copy_(mask[name].double())
        net.fc.bias.zero_()
        net.pool = nn.AdaptiveAvgPool2d(1)
        relu = torch.relu
        torch.relu = lambda x: x  # every value is ≥ 0 already
        try:
            out = net(torch.ones(1, 3, 32, 32, dtype=torch.float64)) * 64  # average over 8×8 → sum
        finally:
            torch.relu = relu
    assert rep.log10_paths == pytest.approx(math.log10(float(out.sum())), rel=1e-9)


def test_spectral_measures_match_a_dense_svd():
    model = mlp([12, 10, 6], 0)
    mask = random_mask(model, 0.4, 2)
    rep = pn.analyze(mask, model, (12,), spectral=True)
    row = rep.layers[0]
    a = mask["0.weight"].double().numpy().T
    s = np.linalg.svd(a, compute_uv=False)
    d_avg = 2 * a.sum() / sum(a.shape)
    assert row.spectral_gap == pytest.approx(s[0] - s[1], rel=1e-6)
    assert row.ramanujan_delta == pytest.approx(2 * math.sqrt(d_avg - 1) - s[1], rel=1e-6)


def test_report_output_and_errors():
    model = pn.models.get("lenet300", seed=0)
    mask = pn.prune(model, "phew", 0.05, input_shape=(1, 28, 28))
    rep = pn.analyze(mask, model, (1, 28, 28))
    assert rep.effective_density == pytest.approx(rep.density)  # PHEW keeps nothing off the paths
    text = str(rep)
    assert "log10 paths (unit)" in text and all(r.name in text for r in rep.layers)
    json.dumps(rep.to_dict())
    assert list(rep.to_frame().columns)[:3] == ["index", "name", "kind"]
    conv = pn.models.get("conv2", seed=0)
    with pytest.raises(GraphError, match="chain of Linear masks.*model="):
        pn.analyze(pn.Mask.ones(conv))
    with pytest.raises(GraphError, match="input_shape"):
        pn.analyze(pn.Mask.ones(conv), conv)
    with pytest.raises(ValueError, match="level must be"):
        pn.analyze(mask, model, (1, 28, 28), level="pixel")
