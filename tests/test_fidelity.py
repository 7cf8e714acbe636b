"""Layer selection (exclude=, density_of=), the options reproducing the reference implementations, and
mask interop with other tools' formats.

Oracles: independent computations written here from the papers' formulas and the reference repos'
documented behaviour (plain autograd in eval mode for SNIP; the official GraSP procedure with
re-initialised Linear layers and two half-batches; Synaptic-Flow's per-round count N − int((1 − d)·N));
exact counts (invariants); and bit-for-bit equality of masks and bytes after export → import.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pathnet as pn
from pathnet.cli import main
from pathnet.data import sample_batches
from pathnet.errors import DensityError, MaskError, OptionError
from pathnet.mask import FORMATS, Mask, prunable_weights


def _bn_net(seed: int = 0, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3),
                         nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 16), nn.ReLU(),
                         nn.Linear(16, 10)).to(dtype)


def _data(n: int = 60, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 10


def _top(scores: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """The k largest scores over all layers (continuous scores: no ties at the cut)."""
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    cut = torch.sort(flat, descending=True).values[k - 1]
    return {n: s >= cut for n, s in scores.items()}


def _kept(mask: Mask, names) -> int:
    return sum(int(mask[n].sum()) for n in names)


# -- exclude= and density_of= -------------------------------------------------------------------------

@pytest.mark.parametrize("method,options", [("random", {}), ("erk", {}), ("smart_ratio", {}), ("magnitude", {}),
                                            ("snip", {"samples": 30}), ("synflow", {"iterations": 5}),
                                            ("phew", {})])
def test_excluded_weights_stay_dense_outside_an_exact_budget(method, options):
    """Invariant: excluded all True; round(d · N_prunable) kept among the others, or round(d · N_all) in
    all with density_of="all"; the resolved names and density_of are recorded."""
    model = _bn_net(dtype=torch.float32)
    sizes = {k: w.numel() for k, w in prunable_weights(model).items()}
    names = list(sizes)
    excluded = [names[0], names[-1]]  # "first" and "output"
    rest = [n for n in names if n not in excluded]
    kw = dict(data=_data(), input_shape=(1, 8, 8), seed=3, **options)
    mask = pn.prune(model, method, 0.1, exclude=["first", "output"], **kw)
    assert all(bool(mask[n].all()) for n in excluded)
    assert _kept(mask, rest) == round(0.1 * sum(sizes[n] for n in rest))
    assert mask.meta["exclude"] == excluded and mask.meta["density_of"] == "prunable"
    assert list(mask) == names
    every = pn.prune(model, method, 0.3, exclude="output,first", density_of="all", **kw)
    assert all(bool(every[n].all()) for n in excluded)
    assert every.num_kept == round(0.3 * sum(sizes.values()))


def test_exclude_takes_names_globs_and_presets_and_refuses_what_matches_nothing():
    """Oracle: the model's own parameter names."""
    model = pn.models.get("vgg16", num_classes=10)
    resolve = pn.pruning.resolve_exclude
    assert resolve(model, "output") == ["fc.weight"]
    assert resolve(model, ["first"]) == ["features.0.weight"]
    assert resolve(model, "features.0.weight,fc.*") == ["features.0.weight", "fc.weight"]
    vit = pn.models.get("vit_tiny", num_classes=10)
    assert resolve(vit, "embeddings_and_head") == ["conv_proj.weight", "heads.head.weight"]
    with pytest.raises(OptionError, match="exclude='classifier.*' matches no prunable weight"):
        pn.prune(model, "random", 0.1, exclude="classifier.*")
    with pytest.raises(OptionError, match="excludes every prunable weight"):
        pn.prune(_bn_net(), "random", 0.1, exclude="*")
    with pytest.raises(DensityError, match="no more than the"):
        pn.prune(_bn_net(), "random", 0.001, exclude="0.weight,7.weight", density_of="all")


def test_imp_output_preset_keeps_the_classifier_dense_through_every_level():
    """Invariant: the classifier all True at every level; level L keeps round(0.8^L · N_rest) of the rest,
    inside level L−1's mask."""
    model = pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0)
    sizes = {k: w.numel() for k, w in prunable_weights(model).items()}
    rest = list(sizes)[:-1]
    res = pn.imp(model, "digits", levels=2, rewind="0it", epochs=1, batch_size=256, progress=False,
                 exclude="output")
    n_rest = sum(sizes[n] for n in rest)
    for level, mask in enumerate(res.masks):
        assert bool(mask["5.weight"].all())
        assert _kept(mask, rest) == round(0.8 ** level * n_rest)
        if level:
            assert not bool((mask[rest[0]] & ~res.masks[level - 1][rest[0]]).any())
            assert mask.meta["exclude"] == ["5.weight"]


# -- bn_mode ------------------------------------------------------------------------------------------

def test_snip_with_bn_in_eval_mode_equals_plain_autograd_in_eval_mode():
    """Oracle: |θ ⊙ ∂L/∂θ| by plain autograd with the whole model in eval mode (Synaptic-Flow's default)."""
    model, data = _bn_net(), _data()
    mask = pn.prune(model, "snip", 0.05, data=data, samples=40, seed=2, bn_mode="eval")
    ref = copy.deepcopy(model).eval()
    (x, y), = sample_batches(data, 40, seed=2)  # the same 40 examples
    weights = prunable_weights(ref)
    grads = torch.autograd.grad(F.cross_entropy(ref(x.double()), y), list(weights.values()))
    scores = {k: (w * g).abs().detach() for (k, w), g in zip(weights.items(), grads)}
    expected = _top(scores, round(0.05 * sum(s.numel() for s in scores.values())))
    assert all(torch.equal(mask[k], expected[k]) for k in scores)
    assert mask != pn.prune(model, "snip", 0.05, data=data, samples=40, seed=2)  # train mode (default) differs
    assert model.training  # the caller's model untouched


# -- GraSP as the official code runs it ---------------------------------------------------------------

def test_grasp_reinit_linear_and_two_splits_equal_the_official_procedure():
    """Oracle: the official GraSP procedure written out: a copy with every Linear re-initialised (xavier
    normal, module order), g = Σ over the two half-batches of ∇L (logits / 200), Hg = Σ over the halves
    of ∇(g · ∇L_half), BN in train mode (batch statistics per half); remove the largest −θ ⊙ Hg, θ the
    copy's weights."""
    model, data, seed, d = _bn_net(), _data(), 4, 0.1
    mask = pn.prune(model, "grasp", d, data=data, per_class=4, seed=seed, reinit_linear=True, splits=2)
    (x, y), = sample_batches(data, per_class=4, seed=seed)  # the class-balanced batch, classes in order
    x = x.double()
    torch.manual_seed(seed)
    net = copy.deepcopy(model).train()
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
    weights = list(prunable_weights(net).values())
    n = len(y)
    halves = [(x[: n // 2], y[: n // 2]), (x[n // 2:], y[n // 2:])]
    g = None
    for xb, yb in halves:
        gb = torch.autograd.grad(F.cross_entropy(net(xb) / 200, yb), weights)
        g = list(gb) if g is None else [a + b for a, b in zip(g, gb)]
    hg = [torch.zeros_like(w) for w in weights]
    for xb, yb in halves:
        gf = torch.autograd.grad(F.cross_entropy(net(xb) / 200, yb), weights, create_graph=True)
        z = sum((gi.detach() * fi).sum() for gi, fi in zip(g, gf))
        hg = [a + b for a, b in zip(hg, torch.autograd.grad(z, weights))]
    grasp = {k: -(w * h).detach() for k, w, h in zip(prunable_weights(net), weights, hg)}
    expected = _top({k: -v for k, v in grasp.items()}, round(d * sum(v.numel() for v in grasp.values())))
    assert all(torch.equal(mask[k], expected[k]) for k in grasp)
    default = pn.prune(model, "grasp", d, data=data, per_class=4, seed=seed)
    assert mask != default and mask.meta["reinit_linear"] and mask.meta["splits"] == 2
    assert mask != pn.prune(model, "grasp", d, data=data, per_class=4, seed=seed, reinit_linear=True)


# -- SynFlow's count ----------------------------------------------------------------------------------

def _synflow_reference(model: nn.Module, density: float, rounds: int, shape) -> dict[str, torch.Tensor]:
    """Synaptic-Flow's loop written out: the |θ| network in float64 (eval), R = Σ f(1), scores |θ ⊙ ∂R/∂θ|,
    round k keeps N − int((1 − d_k)·N), d_k = d^(k/n), of the weights still unpruned."""
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in net.state_dict().values():
            t.abs_()
    weights = prunable_weights(net)
    n_all = sum(w.numel() for w in weights.values())
    orig = {k: w.detach().clone() for k, w in weights.items()}
    keep = {k: torch.ones_like(w, dtype=torch.bool) for k, w in weights.items()}
    for r in range(1, rounds + 1):
        with torch.no_grad():
            for k, w in weights.items():
                w.copy_(orig[k] * keep[k])
        grads = torch.autograd.grad(net(torch.ones(1, *shape, dtype=torch.float64)).sum(), list(weights.values()))
        scores = {k: torch.where(keep[k], (w * g).abs(), torch.full_like(w, -1.0))
                  for (k, w), g in zip(weights.items(), grads)}
        k_keep = n_all - int((1.0 - density ** (r / rounds)) * n_all)
        keep = _top(scores, k_keep)
    return keep


def test_synflow_floor_pruned_count_equals_synaptic_flows_rounds():
    """Oracle: the loop above; and the count differs from round(d·N) where the conventions differ."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10))  # N = 900
    d = 0.0105  # round(9.45) = 9 but 900 − int(890.55) = 10
    mask = pn.prune(model, "synflow", d, input_shape=(20,), iterations=4, count="floor_pruned")
    expected = _synflow_reference(model, d, 4, (20,))
    assert mask.num_kept == 10 and all(torch.equal(mask[k], expected[k]) for k in expected)
    assert pn.prune(model, "synflow", d, input_shape=(20,), iterations=4).num_kept == 9


# -- mask interop -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", list(FORMATS))
def test_export_then_load_is_the_same_mask_and_the_same_bytes(tmp_path, fmt):
    """Oracle: bit-for-bit equality of the entries (names in order) and of the re-exported file."""
    model = pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0)
    mask = pn.prune(model, "random", 0.2, seed=5)
    path = mask.export(tmp_path / ("a.safetensors" if fmt == "pathnet" else "a.pth"), fmt)
    back = Mask.load(path)
    assert back == mask and list(back) == list(mask)
    again = back.export(tmp_path / ("b.safetensors" if fmt == "pathnet" else "b.pth"), fmt)
    assert again.read_bytes() == path.read_bytes()
    raw = torch.load(path, weights_only=True) if fmt != "pathnet" else None
    if fmt == "open_lth":  # open_lth's Mask.save: plain names, int tensors
        assert list(raw) == list(mask) and all(v.dtype == torch.int32 for v in raw.values())
    elif fmt in ("synflow", "torch-prune-state"):
        assert list(raw) == [f"{k}_mask" for k in mask] and all(v.dtype == torch.float32 for v in raw.values())


def test_to_torch_prune_then_from_model_round_trips_including_attention(tmp_path):
    """Oracle: torch.nn.utils.prune's own buffers and forward (the pruned entries of the effective weight are
    zero); a Synaptic-Flow checkpoint with all-ones bias masks and open_lth's mask_* buffers read back the same."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.attn(x, x, x)[0])

    model = Net()
    mask = pn.prune(model, "random", 0.3, seed=1)
    out = mask.to_torch_prune(copy.deepcopy(model))
    assert isinstance(out.attn.in_proj_weight_mask, torch.Tensor)
    assert Mask.from_model(out) == mask
    assert bool((out.attn.in_proj_weight[~mask["attn.in_proj_weight"]] == 0).all())
    state = out.state_dict()
    assert Mask.from_state_dict(state) == mask
    with_bias = {**mask.to_state_dict("synflow"), "fc.bias_mask": torch.ones(3)}
    assert Mask.from_state_dict(with_bias) == mask
    with pytest.raises(MaskError, match="prunes a bias"):
        Mask.from_state_dict({**with_bias, "fc.bias_mask": torch.tensor([1.0, 0.0, 1.0])})
    open_lth_buffers = {"mask_" + k.replace(".", "___"): v.float() for k, v in mask.items()}
    assert Mask.from_state_dict(open_lth_buffers) == mask
    with pytest.raises(MaskError):
        mask.to_torch_prune(pn.models.get("lenet300", input_shape=(1, 8, 8)))


def test_convert_command_goes_through_every_format_and_back(tmp_path, capsys):
    """Oracle: the mask written by pathnet prune, bit for bit after a tour of every format."""
    first = tmp_path / "m.safetensors"
    assert main(["prune", "random", "0.1", "--model", "lenet300", "--exclude", "output", "--out", str(first),
                 "--quiet"]) == 0
    src = first
    for i, fmt in enumerate(["open_lth", "synflow", "torch-prune-state", "pathnet"]):
        dst = tmp_path / (f"m{i}.pth" if fmt != "pathnet" else f"m{i}.safetensors")
        assert main(["convert", str(src), str(dst), "--to", fmt]) == 0
        src = dst
    assert Mask.load(src) == Mask.load(first)
    assert main(["convert", str(first), str(tmp_path / "x.safetensors"), "--to", "open_lth"]) == 2
    assert ".pt or .pth" in capsys.readouterr().err
    assert main(["prune", "random", "0.1", "--model", "lenet300", "--exclude", "nothing*", "--out",
                 str(tmp_path / "y.safetensors")]) == 2
    assert "matches no prunable weight" in capsys.readouterr().err
    assert np.isclose(Mask.load(first).layer_densities()["5.weight"], 1.0)


def test_phew_never_identity_reproduces_the_authors_resnet20_densities():
    """Oracle: the per-layer densities the authors' PHEW code produced (../shared/reference/phew_reference.json,
    beside the checkout). Their walks never take an identity shortcut."""
    import json
    from pathlib import Path

    ref = Path(__file__).resolve().parents[2] / "shared" / "reference" / "phew_reference.json"
    if not ref.is_file():
        pytest.skip("the shared PHEW reference is not beside the checkout")
    run = next(r for r in json.loads(ref.read_text())["runs"] if r["model"] == "resnet20" and r["density_pct"] == 5)
    ratios = {}
    for rule in ("random", "never_identity"):
        model = pn.models.get("resnet20", seed=0)
        mask = pn.prune(model, "phew", 0.05, input_shape=(3, 32, 32), seed=0, shortcuts=rule)
        assert mask.num_kept == round(0.05 * mask.num_total)
        ratios[rule] = np.array([d / r for d, r in zip(mask.layer_densities().values(), run["layer_density"])])
    assert np.all((ratios["never_identity"] > 0.8) & (ratios["never_identity"] < 1.4))
    assert np.abs(np.log(ratios["never_identity"])).mean() < 0.5 * np.abs(np.log(ratios["random"])).mean()
