"""PHEW against independent oracles: exact counts, networkx reachability, walk frequencies."""

import hashlib
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

import pathnet as pn
from pathnet import kernels
from pathnet.errors import DensityError, GraphError
from pathnet.flat import FlatNetwork
from pathnet.pruning.phew import phew_mask

DENSITIES = [0.5, 0.1, 0.05, 0.01, 0.001]
SHAPES = {"lenet300": (1, 28, 28), "conv4": (3, 32, 32), "resnet20": (3, 32, 32), "vgg16": (3, 32, 32),
          "resnet18": (3, 32, 32)}


@pytest.fixture(scope="module")
def dags():
    return {name: pn.to_dag(pn.models.get(name, seed=0), shape) for name, shape in SHAPES.items()}


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("density", DENSITIES)
def test_exact_density(dags, name, density):
    if name == "resnet18" and density == 0.5:
        density = 0.2  # 0.5 takes 20 s here: the other models cover the high-density end
    mask = phew_mask(dags[name], density, seed=1)
    n = dags[name].num_weights
    assert mask.num_total == n and mask.num_kept == round(density * n)
    assert mask.meta["dangling"] == 0


def off_path_weights(model, mask, input_shape):
    """Oracle: kept kernel edges (u→v) with u unreachable from the inputs or v not reaching an output,
    by networkx on the masked unit graph."""
    dag = pn.to_dag(model, input_shape, mask=mask)
    g = dag.to_networkx()
    inputs = [(0, u) for u in range(dag.layers[0].size)]
    outputs = [(i, u) for i in dag.output_layers for u in range(dag.layers[i].size)]
    reached = set(inputs).union(*(nx.descendants(g, s) for s in inputs))
    reaching = set(outputs).union(*(nx.ancestors(g, t) for t in outputs))
    return [(u, v) for u, v, d in g.edges(data=True) if d["prunable"] and (u not in reached or v not in reaching)]


def tiny_resnet():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(2, 4, 3, padding=1)
            self.a, self.b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.down = nn.Conv2d(4, 6, 1, stride=2)
            self.c = nn.Conv2d(4, 6, 3, stride=2, padding=1)
            self.fc = nn.Linear(6 * 2 * 2, 3)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            x = torch.relu(x + self.b(torch.relu(self.a(x))))
            x = torch.relu(self.c(x) + self.down(x))
            return self.fc(torch.flatten(x, 1))

    torch.manual_seed(0)
    return Net()


@pytest.mark.parametrize("density", [0.5, 0.2, 0.05, 0.01])
@pytest.mark.parametrize("kernel", ["weight", "whole"])
def test_every_kept_weight_is_on_an_input_output_path(density, kernel):
    for model, shape in [(tiny_resnet(), (2, 4, 4)), (pn.models.get("mlp", input_shape=(12,), widths=(20, 15, 10),
                                                                     seed=0), (12,))]:
        mask = pn.prune(model, "phew", density, input_shape=shape, seed=3, kernel=kernel)
        assert mask.num_kept == round(density * mask.num_total)
        assert off_path_weights(model, mask, shape) == []


def mask_digest(mask):
    h = hashlib.sha256()
    for k, m in mask.items():
        h.update(k.encode())
        h.update(m.numpy().tobytes())
    return h.hexdigest()


def test_same_seed_same_mask_also_in_a_fresh_process(dags):
    a = phew_mask(dags["resnet20"], 0.05, seed=7)
    assert a == phew_mask(dags["resnet20"], 0.05, seed=7)
    assert a != phew_mask(dags["resnet20"], 0.05, seed=8)
    code = ("import pathnet as pn; from pathnet.pruning.phew import phew_mask; import sys; sys.path.insert(0, 'tests');"
            "from test_phew import mask_digest; m = pn.models.get('resnet20', seed=0);"
            "print(mask_digest(pn.prune(m, 'phew', 0.05, input_shape=(3, 32, 32), seed=7)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == mask_digest(a)


def walks_from(net, w, layer, n_walks, bias="magnitude", avoid=None, key=1, numbers=None):
    """The entries `n_walks` independent walks (numbers 0 … n_walks − 1, or `numbers`) from unit 0 of
    `layer` cross, one row each."""
    numbers = np.arange(n_walks) if numbers is None else np.asarray(numbers, dtype=np.int64)
    paths = np.empty((n_walks, net.max_path), dtype=np.int64)
    lengths = np.zeros(n_walks, dtype=np.int64)
    done = np.zeros(n_walks, dtype=np.bool_)
    avoid = np.zeros(len(net.dag.blocks), dtype=np.bool_) if avoid is None else avoid
    kernels.walk_paths(w, np.full(n_walks, layer), np.zeros(n_walks, dtype=np.int64), numbers,
                       np.uint64(key), net.absw, net.allowed, bias == "uniform", False, avoid, paths, lengths, done)
    assert done.all() and (lengths >= 1).all()
    return paths, lengths


def first_hops(model, input_shape, bias, n_walks, seed=0, forward=True):
    """Counts of the first weight entry each of `n_walks` independent walks keeps."""
    net = FlatNetwork(pn.to_dag(model, input_shape))
    w, layer = (net.forward, 0) if forward else (net.backward, len(net.dag.layers) - 1)
    paths, _ = walks_from(net, w, layer, n_walks, bias, key=seed + 1)
    return np.bincount(paths[:, 0], minlength=net.num_weights)


def test_a_walk_depends_on_its_number_only():
    """Invariant: walk i is the same whether found alone or among others, and the ticket does not
    depend on how many walks are found together."""
    from pathnet.pruning import phew as phew_module

    dag = pn.to_dag(pn.models.get("resnet20", seed=0), (3, 32, 32))
    net = FlatNetwork(dag)
    together, n_together = walks_from(net, net.forward, 0, 64)
    for i in (0, 17, 63):
        alone, n = walks_from(net, net.forward, 0, 1, numbers=[i])
        assert n[0] == n_together[i] and (alone[0, :n[0]] == together[i, :n[0]]).all()
    reference = phew_mask(dag, 0.05, seed=3)
    for lanes in (1, 5):
        phew_module.LANES, before = lanes, phew_module.LANES
        try:
            assert phew_mask(dag, 0.05, seed=3) == reference
        finally:
            phew_module.LANES = before


def test_first_hop_frequencies_follow_weight_magnitudes():
    # input unit 0 fans out to 5 units through 2×2 kernels: edge ∝ kernel L1, entry ∝ |w| ⇒ entry ∝ |w| overall
    model = nn.Sequential(nn.Conv2d(1, 5, 2), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 3 * 3, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(1, 21, dtype=torch.float32).reshape(5, 1, 2, 2) * torch.tensor(
            [1, -1, 1, -1]).reshape(1, 1, 2, 2))
    counts = first_hops(model, (1, 4, 4), "magnitude", 20_000)[:20]
    expected = np.arange(1, 21) / np.arange(1, 21).sum() * counts.sum()
    assert scipy.stats.chisquare(counts, expected).pvalue > 1e-3
    # and backward from output unit 0: the edge into it from flattened unit f ∝ |w[0, f]|
    counts = first_hops(model, (1, 4, 4), "magnitude", 20_000, forward=False)
    last = FlatNetwork(pn.to_dag(model, (1, 4, 4))).param_offset["3.weight"]
    w0 = model[3].weight[0].detach().abs().double().numpy()
    got = counts[last:last + 45]
    assert got.sum() == 20_000 and scipy.stats.chisquare(got, w0 / w0.sum() * got.sum()).pvalue > 1e-3


def test_uniform_bias_gives_equal_frequencies():
    model = nn.Sequential(nn.Linear(1, 6), nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.01], [0.1], [1.0], [10.0], [100.0], [1000.0]]))
    counts = first_hops(model, (1,), "uniform", 12_000)[:6]
    assert scipy.stats.chisquare(counts).pvalue > 1e-3
    biased = first_hops(model, (1,), "magnitude", 12_000)[:6]
    w = np.array([0.01, 0.1, 1.0, 10.0, 100.0, 1000.0])
    bins = lambda x: np.array([x[:3].sum(), *x[3:]])  # noqa: E731  (merge the rare bins)
    assert scipy.stats.chisquare(bins(biased), bins(w / w.sum() * 12_000)).pvalue > 1e-3


@pytest.mark.parametrize("rule", ["random", "never_identity"])
def test_residual_fork_is_taken_half_and_half_or_never_the_identity(rule):
    # backward from the add: the block path (conv b) or the shortcut, each with probability 1/2 (binomial test);
    # shortcuts="never_identity" (the authors' walks) always takes the block path
    from pathnet.pruning.phew import identity_shortcuts

    model = tiny_resnet()
    net = FlatNetwork(pn.to_dag(model, (2, 4, 4)))
    avoid = identity_shortcuts(net.dag) if rule == "never_identity" else np.zeros(len(net.dag.blocks), dtype=np.bool_)
    assert avoid.sum() == (1 if rule == "never_identity" else 0)
    add = next(layer.index for layer in net.dag.layers if layer.kind == "add")
    b_lo = net.param_offset["b.weight"]
    b_hi = b_lo + model.b.weight.numel()
    paths, _ = walks_from(net, net.backward, add, 4000, avoid=avoid, key=5)
    through_block = int(((b_lo <= paths[:, 0]) & (paths[:, 0] < b_hi)).sum())
    if rule == "random":
        assert scipy.stats.binomtest(through_block, 4000, 0.5).pvalue > 1e-3
    else:
        assert through_block == 4000


def test_whole_kernels_are_kept_whole():
    model = pn.models.get("conv2", seed=0)
    mask = pn.prune(model, "phew", 0.05, input_shape=(3, 32, 32), kernel="whole")
    w = mask["features.0.weight"].reshape(64 * 3, 9).sum(1)
    partial = ((w > 0) & (w < 9)).sum()
    # only the completion adds single entries: single-entry walks once whole ones stall, then bridges
    assert partial <= mask.meta["single_entry"] + mask.meta["bridged"]
    tiny = pn.prune(tiny_resnet(), "phew", 0.01, input_shape=(2, 4, 4), kernel="whole")  # no whole path fits
    assert tiny.meta["single_entry"] + tiny.meta["bridged"] == tiny.num_kept and tiny.meta["dangling"] == 0


def test_walks_respect_an_existing_mask():
    model = pn.models.get("lenet300", seed=0)
    outer = pn.prune(model, "phew", 0.2, input_shape=(1, 28, 28), seed=0)
    dag = pn.to_dag(model, (1, 28, 28), mask=outer)
    inner = phew_mask(dag, 0.05, seed=1)
    assert inner.num_kept == round(0.05 * inner.num_total) and (inner & ~outer).num_kept == 0


def test_bad_input():
    model = pn.models.get("lenet300", seed=0)
    with pytest.raises(GraphError, match="input_shape"):
        pn.prune(model, "phew", 0.1)
    for bad in (0, 1.5, -0.1, float("nan")):
        with pytest.raises(DensityError, match=r"\(0, 1\]"):
            pn.prune(model, "phew", bad, input_shape=(1, 28, 28))
    with pytest.raises(DensityError, match="sparsity pass 0.05"):
        pn.prune(model, "phew", 95, input_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="bias must be"):
        pn.prune(model, "phew", 0.1, input_shape=(1, 28, 28), bias="big")
    with pytest.raises(pn.errors.RegistryError, match="unknown pruning method 'phw'.*phew"):
        pn.prune(model, "phw", 0.1)


@pytest.mark.parametrize("density", [0.002, 0.02, 0.3])
def test_reach_through_kept_weights_equals_networkx_reachability(density):
    """Oracle: networkx descendants/ancestors of the DAG under the mask the weight state spells."""
    import networkx as nx

    model = pn.models.get("resnet20", seed=0, width=4)
    dag = pn.to_dag(model, (3, 8, 8))
    net = FlatNetwork(dag)
    state = (np.random.default_rng(1).random(len(net.absw)) < density).astype(np.uint8)
    kept = np.flatnonzero(state == 1)
    g = dag.with_mask(net.to_mask(state, {})).to_networkx()
    off = net.lay_off
    starts = {"fwd": [(0, u) for u in range(dag.layers[0].size)],
              "bwd": [(i, u) for i in dag.output_layers for u in range(dag.layers[i].size)]}
    for forward, w, key in ((True, net.forward, "fwd"), (False, net.backward, "bwd")):
        live = np.zeros(off[-1], dtype=np.bool_)
        for layer, u in starts[key]:
            live[off[layer] + u] = True
        kernels.reach(w, state, kept, live, forward)
        expect = np.zeros(off[-1], dtype=np.bool_)
        for node in starts[key]:
            for layer, u in {node} | (nx.descendants(g, node) if forward else nx.ancestors(g, node)):
                expect[off[layer] + u] = True
        np.testing.assert_array_equal(live, expect)


@pytest.mark.parametrize("way", ["rejection", "scan"])
def test_bridges_are_drawn_in_proportion_to_magnitude_among_the_candidates(way):
    """Oracle: the candidates listed by brute force over the weight matrices (free u→v with u reached
    from the input, v reaching the output), each drawn with frequency ∝ |w| (chi-square), never a
    non-candidate, and never the same weight twice in one call."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    net = FlatNetwork(pn.to_dag(model, (4,)))
    state = np.zeros(net.num_weights, dtype=np.uint8)
    state[:6] = 1  # some weights already kept: never candidates
    fwd = np.zeros(net.lay_off[-1], dtype=np.bool_)
    bwd = np.zeros(net.lay_off[-1], dtype=np.bool_)
    fwd[[0, 1, 2, 4 + 1, 4 + 3]] = True  # inputs 0-2 and hidden 1, 3 reached from the input
    bwd[[4 + 0, 4 + 1, 4 + 4, 9 + 0, 9 + 2]] = True  # hidden 0, 1, 4 and outputs 0, 2 reach the output
    absw = net.absw.astype(np.float64)
    cand = []
    for name, (n_in, near, far) in {"0.weight": (4, 0, 4), "2.weight": (5, 4, 9)}.items():
        o = net.param_offset[name]
        for v in range(model[int(name[0])].out_features):
            for u in range(n_in):
                idx = o + v * n_in + u
                if fwd[near + u] and bwd[far + v] and state[idx] == 0:
                    cand.append(idx)
    cand = np.array(cand)
    if way == "scan":  # the pass alone: no rejection first (as when candidates hold little weight)
        draw = lambda c, r: kernels._bridges_scan(net.forward, state, net.allowed, net.absw, fwd, bwd, c, False, r)  # noqa: E731
    else:
        draw = lambda c, r: kernels.bridges(net.forward, state, net.allowed, net.absw, fwd, bwd, c, False, r)  # noqa: E731
    rng = np.array([7], dtype=np.uint64)
    counts = np.zeros(net.num_weights, dtype=np.int64)
    before = state.copy()
    for _ in range(6000):
        chosen = draw(1, rng)
        counts[chosen] += 1
    assert (state == before).all() and counts.sum() == 6000
    assert counts[np.setdiff1d(np.arange(net.num_weights), cand)].sum() == 0
    expected = absw[cand] / absw[cand].sum() * 6000
    assert scipy.stats.chisquare(counts[cand], expected).pvalue > 1e-3
    many = draw(len(cand) + 3, rng)  # more asked than there are: every candidate once
    assert sorted(many.tolist()) == sorted(cand.tolist())
