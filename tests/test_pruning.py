"""The baseline ticket finders against autograd, finite differences and their defining laws."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pathnet as pn
from pathnet.errors import DataError, DensityError, GraphError, RegistryError, WeightError
from pathnet.pruning import keep_top, schedule, shuffle_global, shuffle_layerwise
from pathnet.pruning.random import erk_densities, smart_ratio_densities
from pathnet.pruning.saliency import hessian_gradient, linearized, snip_scores, synflow_scores

METHODS = ["random", "erk", "smart_ratio", "magnitude", "snip", "grasp", "synflow", "magnitude_gradient"]
FAST = {"snip": {"samples": 16}, "magnitude_gradient": {"samples": 16, "a": 2, "b": 0.5},
        "grasp": {"per_class": 1}, "synflow": {"iterations": 5}}


@pytest.fixture(scope="module")
def models():
    return {"lenet300": (pn.models.get("lenet300", seed=0), pn.data.get("mnist5k")),
            "resnet20": (pn.models.get("resnet20", seed=0), pn.data.get("synthetic")),
            "vgg16": (pn.models.get("vgg16", seed=0), pn.data.get("synthetic"))}


@pytest.mark.parametrize("name", ["lenet300", "resnet20", "vgg16"])
@pytest.mark.parametrize("method", METHODS)
def test_exact_density(models, name, method):
    model, ds = models[name]
    for density in (0.1, 0.01):
        mask = pn.prune(model, method, density, data=ds, input_shape=ds.input_shape, seed=1, **FAST.get(method, {}))
        assert mask.num_kept == round(density * mask.num_total), (method, density)
        assert mask.meta["method"] == method and mask.meta["seed"] == 1


def test_blend_is_magnitude_gradient_under_its_old_name(models):
    """One registered object: 'blend' finds the magnitude_gradient method (same mask, its name in the metadata)."""
    model, ds = models["lenet300"]
    assert pn.METHODS["blend"] is pn.METHODS["magnitude_gradient"] and "blend" not in pn.METHODS.names()
    a = pn.prune(model, "blend", 0.1, data=ds, samples=16, a=2, b=0.5)
    assert a == pn.prune(model, "magnitude_gradient", 0.1, data=ds, samples=16, a=2, b=0.5)
    assert a.meta["method"] == "magnitude_gradient"


def test_scoring_leaves_the_model_alone(models):
    model, ds = models["resnet20"]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng_state = torch.get_rng_state()
    for method in ("snip", "grasp", "synflow"):
        pn.prune(model, method, 0.1, data=ds, input_shape=ds.input_shape, **FAST[method])
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng_state)


def test_same_seed_same_mask(models):
    model, ds = models["lenet300"]
    for method in ("random", "erk", "snip", "grasp"):
        a = pn.prune(model, method, 0.05, data=ds, seed=3)
        assert a == pn.prune(model, method, 0.05, data=ds, seed=3)
        assert a != pn.prune(model, method, 0.05, data=ds, seed=4)


def small_nets():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 9), nn.Tanh(), nn.Linear(9, 7), nn.ReLU(), nn.Linear(7, 3))
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, stride=2), nn.Flatten(),
                         nn.Linear(3, 3))
    return [(mlp.double(), (1, 3, 4)), (conv.double(), (1, 4, 4))]


def batches(shape, seed=0, n=12):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g))]


@pytest.mark.parametrize("net", range(2))
def test_snip_equals_autograd(net):
    model, shape = small_nets()[net]
    data = batches(shape)
    model.zero_grad()
    F.cross_entropy(model(data[0][0]), data[0][1]).backward()
    expected = {k: (w.grad * w).abs() for k, w in pn.prunable_weights(model).items()}
    got = snip_scores(model, data)
    assert all(torch.allclose(got[k], expected[k], rtol=1e-12, atol=0) for k in expected)


@pytest.mark.parametrize("net", range(2))
def test_grasp_hessian_gradient_equals_finite_differences(net):
    model, shape = small_nets()[net]
    data = batches(shape, seed=net)
    temperature = 2.0  # T = 200 makes H·g ~1e-12 on these tiny nets; the identity is the same
    hg = hessian_gradient(model, data, temperature)
    weights = pn.prunable_weights(model)

    def grad_at(shift):
        with torch.no_grad():
            for k, w in weights.items():
                w.add_(shift[k])
        loss = F.cross_entropy(model(data[0][0]) / temperature, data[0][1])
        grads = torch.autograd.grad(loss, list(weights.values()))
        with torch.no_grad():
            for k, w in weights.items():
                w.sub_(shift[k])
        return dict(zip(weights, grads))

    g = grad_at({k: torch.zeros_like(w) for k, w in weights.items()})
    eps = 1e-5
    plus, minus = grad_at({k: eps * v for k, v in g.items()}), grad_at({k: -eps * v for k, v in g.items()})
    for k in weights:
        fd = (plus[k] - minus[k]) / (2 * eps)
        assert torch.linalg.norm(fd - hg[k]) <= 1e-4 * torch.linalg.norm(fd), k


def test_synflow_conserves_flow_across_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(6, 5, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(5, 8, bias=False),
                          nn.ReLU(), nn.Linear(8, 4, bias=False))
    net = linearized(model)
    scores = synflow_scores(net, input_shape=(2, 6, 6))
    sums = [float(s.sum()) for s in scores.values()]
    r = float(net(torch.ones(1, 2, 6, 6, dtype=torch.float64)).sum().detach())
    assert all(s == pytest.approx(r, rel=1e-6) for s in sums)


def test_synflow_avoids_layer_collapse_on_vgg16(models):
    model, _ = models["vgg16"]
    mask = pn.prune(model, "synflow", 0.001, input_shape=(3, 32, 32))
    assert mask.meta["iterations"] == 100 and mask.meta["dtype"] == "float64"
    assert min(int(m.sum()) for m in mask.values()) > 0
    assert not pn.analyze(mask, model, (3, 32, 32)).layer_collapse


def test_keep_top_is_exact_with_ties_and_never_revives(device):
    on = lambda scores: {k: v.to(device) for k, v in scores.items()}  # noqa: E731
    scores = on({"a": torch.zeros(10, 10), "b": torch.ones(5, 4)})  # massive ties
    for density in (0.05, 0.3, 0.5, 0.77):
        m = keep_top(scores, density, seed=0)
        assert m.num_kept == round(density * 120)
        lw = keep_top(scores, density, scope="layerwise", seed=0)
        assert lw.num_kept == round(density * 120)
        assert abs(int(lw["a"].sum()) - density * 100) <= 1 and abs(int(lw["b"].sum()) - density * 20) <= 1
    assert keep_top(scores, 0.3, seed=0) != keep_top(scores, 0.3, seed=1)  # ties broken by the seed
    current = keep_top(on({"a": torch.rand(10, 10), "b": torch.rand(5, 4)}), 0.5, seed=0)
    favour_pruned = on({k: (~m).double() for k, m in current.items()})  # the pruned weights now score highest
    inner = keep_top(favour_pruned, 0.2, current=current, seed=0)
    assert (inner & ~current).num_kept == 0 and inner.num_kept == 24
    with pytest.raises(DensityError, match="remain unpruned"):
        keep_top(scores, 0.6, current=current)
    with pytest.raises(WeightError, match="NaN"):
        keep_top(on({"a": torch.tensor([1.0, float("nan")])}), 0.5)


def _numpy_keep_top(scores, density, scope, current, seed):
    """The selection keep_top made on the host (numpy, float64) before it ran on the scores' device."""
    from pathnet.pruning.threshold import allocate

    names = list(scores)
    sizes = np.array([scores[k].numel() for k in names])
    alive = [np.flatnonzero(current[k].reshape(-1).numpy()) if current is not None else np.arange(n)
             for k, n in zip(names, sizes)]
    values = [scores[k].double().reshape(-1).numpy()[idx] for k, idx in zip(names, alive)]
    rng = np.random.default_rng(seed)

    def top(v, k):
        if k >= v.size or k <= 0:
            return np.arange(v.size) if k > 0 else np.zeros(0, dtype=np.int64)
        kth = np.partition(v, v.size - k)[v.size - k]
        above = np.flatnonzero(v > kth)
        return np.concatenate([above, rng.permutation(np.flatnonzero(v == kth))[: k - above.size]])

    n_keep, room = round(density * sizes.sum()), np.array([len(i) for i in alive])
    if scope == "global":
        chosen, offsets = top(np.concatenate(values), n_keep), np.concatenate([[0], np.cumsum(room)])
        picks = [chosen[(chosen >= offsets[i]) & (chosen < offsets[i + 1])] - offsets[i] for i in range(len(names))]
    else:
        picks = [top(v, int(c)) for v, c in zip(values, allocate(np.minimum(density * sizes, room), room, n_keep))]
    out = {}
    for k, idx, pick in zip(names, alive, picks):
        keep = np.zeros(scores[k].numel(), dtype=bool)
        keep[idx[pick]] = True
        out[k] = torch.from_numpy(keep.reshape(scores[k].shape))
    return pn.Mask(out)


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_keep_top_picks_what_the_numpy_selection_picked(device, scope):
    """Oracle: the host numpy selection keep_top used before (the same seed breaks ties the same way)."""
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.randint(0, 6, (30, 20), generator=g).float(),  # ties at every cut
              "b": torch.rand(7, 3, 3, 3, generator=g).double(), "c": torch.randn(50, generator=g).abs().half()}
    current = _numpy_keep_top(scores, 0.6, scope, None, seed=9)
    for density, cur, seed in [(0.3, None, 0), (0.1, None, 5), (0.25, current, 1), (0.6, current, 2)]:
        expected = _numpy_keep_top(scores, density, scope, cur, seed)
        got = keep_top({k: v.to(device) for k, v in scores.items()}, density, scope=scope, current=cur, seed=seed)
        assert got == expected and got.num_kept == round(density * got.num_total)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_keep_top_gives_the_same_mask_on_cpu_and_cuda():
    """Invariant: the scores' device does not change the mask (SynFlow scores of VGG-16, and rounded ones with ties)."""
    model = pn.models.get("vgg16", seed=0)
    scores = synflow_scores(linearized(model), input_shape=(3, 32, 32))
    rounded = {k: (v / v.max()).mul(100).round() for k, v in scores.items()}
    for s in (scores, rounded):
        for scope in ("global", "layerwise"):
            cpu = keep_top(s, 0.05, scope=scope, seed=3)
            assert keep_top({k: v.cuda() for k, v in s.items()}, 0.05, scope=scope, seed=3) == cpu
            inner = keep_top(s, 0.01, scope=scope, current=cpu, seed=4)
            assert keep_top({k: v.cuda() for k, v in s.items()}, 0.01, scope=scope, current=cpu, seed=4) == inner


@pytest.mark.parametrize("seed", [0, 7, 2**32 - 1, 2**32 + 5, -3])
def test_random_positions_are_the_first_entries_of_torch_randperm(seed):
    """Oracle: torch.randperm itself, layer after layer from one generator (the partial shuffle must
    pick the same positions, and leave the generator where the full permutations would)."""
    from pathnet.pruning.threshold import layer_counts_mask

    shapes = {"a": (7,), "b": (1,), "c": (30, 40), "d": (3, 3, 3, 3), "e": (50_000,), "f": (2, 2)}
    counts = {"a": 7, "b": 1, "c": 13, "d": 0, "e": 49_999, "f": 2}
    g = torch.Generator().manual_seed(seed)
    expected = {}
    for k, shape in shapes.items():
        flat = torch.zeros(math.prod(shape), dtype=torch.bool)
        flat[torch.randperm(flat.numel(), generator=g)[: counts[k]]] = True
        expected[k] = flat.reshape(shape)
    got = layer_counts_mask(counts, shapes, seed, {})
    assert all(torch.equal(got[k], expected[k]) for k in shapes)


def test_schedules():
    assert schedule(0.01, 2) == pytest.approx([0.1, 0.01])
    assert schedule(0.2, 4, "linear") == pytest.approx([0.8, 0.6, 0.4, 0.2])


def test_erk_follows_its_formula():
    model = pn.models.get("conv4", seed=0)
    dens = erk_densities(model, 0.05)
    weights = pn.prunable_weights(model)
    ratio = {k: dens[k] / (sum(w.shape) / math.prod(w.shape)) for k, w in weights.items() if dens[k] < 1}
    assert max(ratio.values()) == pytest.approx(min(ratio.values()), rel=1e-9)  # ∝ Σ dims / Π dims
    assert sum(dens[k] * w.numel() for k, w in weights.items()) == pytest.approx(0.05 * sum(
        w.numel() for w in weights.values()))
    capped = erk_densities(model, 0.5)
    assert max(capped.values()) == 1.0  # small layers fill up first


def test_smart_ratio_follows_its_formula():
    model = pn.models.get("resnet20", seed=0)
    dens = smart_ratio_densities(model, 0.05)
    names = list(dens)
    assert dens[names[-1]] == pytest.approx(0.3)  # the classifier
    n = len(names)
    raw = [(n - i + 1) ** 2 + (n - i + 1) for i in range(1, n)]
    ratio = [dens[k] / r for k, r in zip(names[:-1], raw) if dens[k] < 1]
    assert max(ratio) == pytest.approx(min(ratio), rel=1e-9)


def test_shuffles_permute_and_keep_counts():
    model = pn.models.get("resnet20", seed=0)
    mask = pn.prune(model, "magnitude", 0.1)
    lw = shuffle_layerwise(mask, seed=0)
    assert lw.layer_densities() == mask.layer_densities() and lw != mask
    assert pn.compare(lw, mask).chance_jaccard == pytest.approx(0, abs=0.02)
    gl = shuffle_global(mask, seed=0)
    assert gl.num_kept == mask.num_kept and gl.layer_densities() != mask.layer_densities()


def test_bad_input(models):
    model, ds = models["lenet300"]
    with pytest.raises(RegistryError, match="unknown pruning method 'snp'.*grasp.*snip"):
        pn.prune(model, "snp", 0.1)
    with pytest.raises(DataError, match="snip scores weights with the loss on data: pass data="):
        pn.prune(model, "snip", 0.1)
    with pytest.raises(GraphError, match="synflow.*input_shape"):
        pn.prune(model, "synflow", 0.1)
    with pytest.raises(DensityError):
        pn.prune(model, "random", 1.5)
    with pytest.raises(DataError, match="fewer than"):
        pn.prune(model, "grasp", 0.1, data=ds, per_class=10_000)
    broken = pn.models.get("lenet300", seed=0)
    with torch.no_grad():
        broken[1].weight[0, 0] = float("nan")
    with pytest.raises(WeightError, match="NaN"):
        pn.prune(broken, "magnitude", 0.1)


def test_data_forms_agree():
    ds = pn.data.get("digits")
    x, y = ds.train.tensors
    model = pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0)
    forms = [ds, ds.train, (x, y), "digits", torch.utils.data.DataLoader(ds.train, batch_size=100)]
    masks = [pn.prune(model, "snip", 0.1, data=d, samples=64) for d in forms]
    assert all(m == masks[0] for m in masks)
