"""Agreement of pathnet's ticket finders with the reference implementations, each reference formula
recomputed here independently (from the papers and the repos' documented behaviour, not their code).

For each method: the reference's scores/mask on the same weights and data, and pathnet's mask under the
option that reproduces the reference and under pathnet's defaults (Jaccard of the kept sets; Spearman of
the scores where the difference is a different score rather than a different count):

- SNIP vs Synaptic-Flow (model in eval mode by default): ResNet-20 with BatchNorm, 128 examples, 5%.
- GraSP vs the official code (Linear layers re-initialised xavier-normal in the scoring copy, the
  class-balanced batch scored in two halves with their own BN statistics): ResNet-20, 10 per class, 5%.
- SynFlow vs Synaptic-Flow (each round keeps N − int((1 − d)·N)): 10 / 1 / 0.1%; Conv-4 with 20 rounds
  by default, VGG-16 with 100 rounds with --full (about 25 minutes on one core).
- IMP vs open_lth (each level prunes ceil(0.2·R) + 1 of the R remaining weights; pathnet keeps
  round(0.8^L · N)): counts per level, LeNet-300-100 and VGG-16 with the classifier excluded.
- PHEW vs the authors' repo: per-layer densities against ../shared/reference/phew_reference.json
  (or --phew-reference PATH), VGG-16 and ResNet-20 at 1–10%.

Data are seeded Gaussian inputs at CIFAR-10 shapes with balanced labels (agreement does not need real
images). One thread; the default run takes about 2–3 minutes.

    python analysis/check_references.py [--full] [--csv out.csv]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import pathnet as pn  # noqa: E402
from pathnet.data import sample_batches  # noqa: E402
from pathnet.io import write_csv  # noqa: E402
from pathnet.mask import prunable_weights  # noqa: E402

SHAPE = (3, 32, 32)
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "phew_reference.json"


# -- helpers ------------------------------------------------------------------------------------------

def jaccard(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    inter = sum(int((a[k] & b[k]).sum()) for k in a)
    union = sum(int((a[k] | b[k]).sum()) for k in a)
    return inter / union


def spearman(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    x = torch.cat([a[k].reshape(-1).double() for k in a]).numpy()
    y = torch.cat([b[k].reshape(-1).double() for k in a]).numpy()
    rx, ry = np.argsort(np.argsort(x)).astype(float), np.argsort(np.argsort(y)).astype(float)
    return float(np.corrcoef(rx, ry)[0, 1])


def top_mask(scores: dict[str, torch.Tensor], keep: int) -> dict[str, torch.Tensor]:
    """The `keep` largest scores over all layers, ties broken by position (the reference repos cut at a
    threshold; with continuous scores there are no ties)."""
    flat = torch.cat([s.reshape(-1).double() for s in scores.values()])
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[torch.topk(flat, keep).indices] = True
    out, start = {}, 0
    for k, s in scores.items():
        out[k] = chosen[start:start + s.numel()].reshape(s.shape)
        start += s.numel()
    return out


def data(n: int = 1000, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=g), torch.arange(n) % 10


def row(method, reference, option, under_option, under_defaults, notes):
    return {"method": method, "reference": reference, "option": option, "agreement_option": under_option,
            "agreement_defaults": under_defaults, "notes": notes}


# -- SNIP (Synaptic-Flow): |θ ⊙ ∂L/∂θ| with the model in eval mode ------------------------------------

def check_snip(density: float = 0.05):
    model = pn.models.get("resnet20", num_classes=10, seed=0)
    xy = data()
    batches = sample_batches(xy, 128, seed=0)
    ref = copy.deepcopy(model).eval()  # Synaptic-Flow: model.eval() unless --prune-train-mode
    weights = prunable_weights(ref)
    total = None
    for x, y in batches:  # Synaptic-Flow sums the loss gradients of its batches
        g = torch.autograd.grad(F.cross_entropy(ref(x), y), list(weights.values()))
        total = g if total is None else [a + b for a, b in zip(total, g)]
    ref_scores = {k: (w * g).abs().detach() for (k, w), g in zip(weights.items(), total)}
    n = sum(s.numel() for s in ref_scores.values())
    ref_mask = top_mask(ref_scores, round(density * n))
    opt = pn.prune(model, "snip", density, data=xy, samples=128, seed=0, bn_mode="eval")
    dflt = pn.prune(model, "snip", density, data=xy, samples=128, seed=0)
    train_scores = pn.pruning.saliency.snip_scores(copy.deepcopy(model).train(), batches)
    return row("SNIP", "Synaptic-Flow (eval mode)", "bn_mode=eval",
               f"Jaccard {jaccard(opt, ref_mask):.4f}",
               f"Jaccard {jaccard(dflt, ref_mask):.4f}, Spearman {spearman(train_scores, ref_scores):.3f}",
               "ResNet-20 (BN), 128 examples, 5%; default = train-mode BN (Synaptic-Flow's --prune-train-mode)")


# -- GraSP (official code): re-initialised Linear layers, two half-batches --------------------------------

def official_grasp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, T: float = 200.0):
    torch.manual_seed(seed)
    net = copy.deepcopy(model).train()
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
    names = list(prunable_weights(net))
    ws = list(prunable_weights(net).values())
    n = len(y)
    halves = [(x[: n // 2], y[: n // 2]), (x[n // 2:], y[n // 2:])]
    g = [torch.zeros_like(w) for w in ws]
    for xb, yb in halves:
        g = [a + b for a, b in zip(g, torch.autograd.grad(F.cross_entropy(net(xb) / T, yb), ws))]
    hg = [torch.zeros_like(w) for w in ws]
    for xb, yb in halves:
        gf = torch.autograd.grad(F.cross_entropy(net(xb) / T, yb), ws, create_graph=True)
        z = sum((a * b).sum() for a, b in zip(g, gf))
        hg = [a + b for a, b in zip(hg, torch.autograd.grad(z, ws))]
    return {k: (-w * h).detach() for k, w, h in zip(names, ws, hg)}  # removed: the largest


def check_grasp(density: float = 0.05):
    model = pn.models.get("resnet20", num_classes=10, seed=0)
    xy = data()
    (x, y), = sample_batches(xy, per_class=10, seed=0)
    scores = official_grasp(model, x, y, seed=0)
    n = sum(s.numel() for s in scores.values())
    ref_mask = top_mask({k: -s for k, s in scores.items()}, n - int(n * (1 - density)))
    opt = pn.prune(model, "grasp", density, data=xy, per_class=10, seed=0, reinit_linear=True, splits=2)
    dflt = pn.prune(model, "grasp", density, data=xy, per_class=10, seed=0)
    return row("GraSP", "official GraSP (reinit=True)", "reinit_linear=true splits=2",
               f"Jaccard {jaccard(opt, ref_mask):.4f}", f"Jaccard {jaccard(dflt, ref_mask):.4f}",
               "ResNet-20, 10 per class, 5%; the official code keeps N − int((1−d)·N), pathnet round(d·N): "
               "at most one weight apart")


# -- SynFlow (Synaptic-Flow): per-round count N − int((1 − d_k)·N) ------------------------------------------

def reference_synflow(model: nn.Module, density: float, rounds: int) -> dict[str, torch.Tensor]:
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    weights = prunable_weights(net)
    names = list(weights)
    orig = [w.detach().clone() for w in weights.values()]
    n = sum(w.numel() for w in orig)
    keep = [torch.ones_like(w, dtype=torch.bool) for w in orig]
    ones = torch.ones(1, *SHAPE, dtype=torch.float64)
    for r in range(1, rounds + 1):
        with torch.no_grad():
            for w, o, k in zip(weights.values(), orig, keep):
                w.copy_(o * k)
        grads = torch.autograd.grad(net(ones).sum(), list(weights.values()))
        flat = torch.cat([(w * g).abs().detach().reshape(-1) for w, g in zip(weights.values(), grads)])
        flat[~torch.cat([k.reshape(-1) for k in keep])] = -1.0  # pruned stay pruned
        pruned = int((1.0 - density ** (r / rounds)) * n)
        chosen = torch.zeros(n, dtype=torch.bool)
        chosen[torch.topk(flat, n - pruned, sorted=False).indices] = True
        keep = list(chosen.split([o.numel() for o in orig]))
        keep = [k.reshape(o.shape) for k, o in zip(keep, orig)]
    return dict(zip(names, keep))


def check_synflow(full: bool):
    name, rounds = ("vgg16", 100) if full else ("conv4", 20)
    model = pn.models.get(name, num_classes=10, input_shape=SHAPE, seed=0)
    opt_j, dflt_j = [], []
    for d in (0.1, 0.01, 0.001):
        ref = reference_synflow(model, d, rounds)
        kw = dict(input_shape=SHAPE, iterations=rounds, seed=0)
        opt_j.append(jaccard(pn.prune(model, "synflow", d, count="floor_pruned", **kw), ref))
        dflt_j.append(jaccard(pn.prune(model, "synflow", d, **kw), ref))
    fmt = lambda js: "Jaccard " + " / ".join(f"{j:.4f}" for j in js)  # noqa: E731
    return row("SynFlow", "Synaptic-Flow", "count=floor_pruned", fmt(opt_j), fmt(dflt_j),
               f"{'VGG-16' if full else 'Conv-4'}, {rounds} rounds, at 10 / 1 / 0.1%")


# -- IMP (open_lth): each level prunes ceil(0.2·R) + 1 -----------------------------------------------------

def check_imp(levels: int = 10, rate: float = 0.2):
    notes = []
    worst = 0.0
    for name, shape in (("lenet300", (1, 28, 28)), ("vgg16", SHAPE)):
        model = pn.models.get(name, num_classes=10, input_shape=shape, seed=0)
        sizes = [w.numel() for w in prunable_weights(model).values()]
        n = sum(sizes[:-1])  # open_lth's default: the output layer is never pruned
        remaining, diffs = n, []
        for level in range(1, levels + 1):
            remaining -= math.ceil(rate * remaining) + 1  # open_lth: threshold at sorted[ceil(f·R)], keep >
            ours = round((1 - rate) ** level * n)
            diffs.append(ours - remaining)
            worst = max(worst, abs(ours - remaining) / remaining)
        notes.append(f"{name}: pathnet − open_lth kept at L=1…{levels}: {diffs[0]:+d} … {diffs[-1]:+d}")
    return row("IMP", "open_lth", "exclude=output", "same layers (classifier dense)",
               f"counts within {worst:.2%} per level", "; ".join(notes) + " (N = all but the classifier)")


# -- PHEW (authors' repo): per-layer densities -----------------------------------------------------------

def check_phew(reference: Path):
    runs = json.loads(reference.read_text())["runs"]
    out = []
    ratios = {(rule, part): [] for rule in ("random", "never_identity") for part in ("vgg16", "identity", "shortcut")}
    for run in runs:
        for rule in ("random", "never_identity") if run["model"] == "resnet20" else ("random",):
            model = pn.models.get(run["model"], num_classes=10, seed=0)
            mask = pn.prune(model, "phew", run["density_pct"] / 100, input_shape=SHAPE, seed=0, shortcuts=rule)
            for (name, d), r in zip(mask.layer_densities().items(), run["layer_density"]):
                ratio = d / r if r > 0 else float("nan")
                if run["model"] == "vgg16":
                    ratios[(rule, "vgg16")].append(ratio)
                elif "shortcut" in name:
                    ratios[(rule, "shortcut")].append(ratio)
                elif name.startswith("blocks.") and int(name.split(".")[1]) not in (3, 6):
                    ratios[(rule, "identity")].append(ratio)
    r = {k: np.array(v) for k, v in ratios.items()}
    v = r[("random", "vgg16")]
    out.append(row("PHEW", "authors' repo (VGG-16)", "(defaults)",
                   f"per-layer density ratio median {np.median(v):.2f}, range {v.min():.2f}–{v.max():.2f}", "same",
                   "VGG-16 at 1 / 2 / 5%; pathnet's init, the reference's own init"))
    i, s = r[("never_identity", "identity")], r[("never_identity", "shortcut")]
    i0, s0 = r[("random", "identity")], r[("random", "shortcut")]
    out.append(row("PHEW", "authors' repo (ResNet-20)", "shortcuts=never_identity",
                   f"identity blocks median ×{np.median(i):.2f} ({i.min():.2f}–{i.max():.2f}); downsampling "
                   f"shortcuts ×{np.median(s):.2f} ({s.min():.2f}–{s.max():.2f})",
                   f"identity blocks median ×{np.median(i0):.2f}; downsampling shortcuts median ×{np.median(s0):.2f} "
                   f"(range {s0.min():.2f}–{s0.max():.2f})",
                   "ResNet-20 at 1 / 2 / 5 / 10%; by default pathnet forks into identity shortcuts at random, the "
                   "authors' walks never take the identity"))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="SynFlow on VGG-16 with 100 rounds (slow)")
    parser.add_argument("--phew-reference", type=Path, default=REFERENCE, help="phew_reference.json")
    parser.add_argument("--csv", help="also write the table as CSV")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for check in (check_snip, check_grasp, lambda: check_synflow(args.full), check_imp):
        t0 = time.perf_counter()
        rows.append(check())
        print(f"  ({rows[-1]['method']}: {time.perf_counter() - t0:.0f} s)", flush=True)
    if args.phew_reference.is_file():
        t0 = time.perf_counter()
        rows.extend(check_phew(args.phew_reference))
        print(f"  (PHEW: {time.perf_counter() - t0:.0f} s)", flush=True)
    else:
        print(f"  (PHEW skipped: no reference file at {args.phew_reference})")
    print("\n| method | reference | option that matches | agreement under the option | under defaults | notes |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in ("method", "reference", "option", "agreement_option",
                                                     "agreement_defaults", "notes")) + " |")
    if args.csv:
        write_csv(args.csv, rows)


if __name__ == "__main__":
    main()
