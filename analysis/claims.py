"""Do the papers' claims hold? Five headline claims of the four papers behind pathnet's finders, each
tested on the largest setting that runs offline on two CPU cores, with a paired test over seeds and a
verdict.

    python analysis/claims.py                                  # VGG-11 and ResNet-20 (1-D) on MNIST-1D
    python analysis/claims.py --data cifar10 --data-root DIR   # the papers' setting: VGG-16, ResNet-20
    python analysis/claims.py --quick                          # tiny, seconds: checks the pipeline only

Experiments, each kept under --runs so an interrupted run resumes (--only runs some of them):
  finders     every at-init finder at every density, plus the dense net: prune, analyse, train (a sweep:
              --backend ray spreads its cells over a Ray cluster)
  gradnorm    ‖∂L/∂θ‖ of each finder's ticket over the first iterations of its training
  rewinding   IMP (20% per level) rewinding to step k, and the error barrier between two copies of the
              ticket trained with different data orders
  similarity  chance-corrected Jaccard between IMP masks (rewinding to 0) and the at-init finders' masks
              of the same density and initialisation
  criteria    IMP (rewinding to 0) keeping the top of |θ|·|∂L/∂θ| instead of |θ| at every level
Outputs in --out: claims.csv (one row per test), claims.md (the README's table), claims_accuracy,
claims_grad_norm, claims_rewinding and claims_similarity (.png + .csv).

Each test is a paired difference A − B over matched units (model, density, seed): the effect is the
mean difference with its 95% t-interval, Cohen's d_z and the paired t-test's two-sided p. Verdict of a
test "A beats B": holds if the interval lies above 0; does not hold if it lies below the test's margin
(a gain of that size is ruled out, which includes B winning); inconclusive otherwise. A non-inferiority
test ("A is within the margin of B") holds if the interval lies above −margin and does not hold if it
lies below. A claim holds if all its deciding tests hold and does not hold if one of them does not.
Where a deciding test is inconclusive at the base seeds, its cells are rerun with the extra seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from figtools import COLORS, ROOT, density_lines, imp_instability, imp_run, imp_similarity, mean_std, save  # sets up matplotlib

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

import pathnet as pn  # noqa: E402
from pathnet.experiment import Cell  # noqa: E402
from pathnet.io import write_csv, write_json, write_text  # noqa: E402
from pathnet.sweep import run_sweep  # noqa: E402
from pathnet.training.loop import Callback, versions  # noqa: E402

# magnitude_gradient at init with its default exponents (a = b = 1) is SNIP's score, |θ|·|∂L/∂θ|, and gives
# SNIP's masks bit for bit (tests/test_claims.py), so at init claim 4 compares SNIP with magnitude
FINDERS = ("phew", "snip", "grasp", "synflow", "magnitude")
RIVALS = ("snip", "grasp", "synflow")  # claim 1: the pruning-before-training methods PHEW is said to beat
CRITERIA = ("magnitude_gradient", "magnitude")  # claim 4 within IMP: the criterion each level keeps the top of
EXPERIMENTS = ("finders", "gradnorm", "rewinding", "similarity", "criteria")
ACCURACY_MARGIN = 0.005  # half a point of accuracy (or of error): the smallest difference called a gain


@dataclass(frozen=True)
class Plan:
    """What the claims are tested on."""

    setting: str  # quick, mnist1d or cifar10
    dataset: str
    models: tuple[str, ...]  # the nets every finder runs on (claims 1, 3, 4)
    deep: str  # the net IMP rewinding runs on (claims 2, 5)
    epochs: int | None  # None: the dataset's recipe
    densities: tuple[float, ...]
    headline: tuple[float, ...]  # claim 1's densities
    extreme: tuple[float, ...]  # claim 3's
    seeds: tuple[int, ...]
    extra_seeds: tuple[int, ...]  # added to the cells of an inconclusive deciding test
    imp_levels: int
    rewinds: tuple[str, ...]  # the first is 0, the last the latest rewind (≈ 7% of training)
    alphas: int
    grad_steps: int
    grad_density: float
    data_root: str | None = None
    runs: Path = ROOT / "runs" / "claims"
    out: Path = ROOT / "figures"
    backend: str = "local"
    address: str | None = None
    max_concurrent: int | None = None


PLANS = {
    "quick": dict(dataset="digits", models=("conv2",), deep="conv2", epochs=1, densities=(0.1, 0.02),
                  headline=(0.1, 0.02), extreme=(0.02,), seeds=(0, 1), extra_seeds=(), imp_levels=2,
                  rewinds=("0it", "5it"), alphas=3, grad_steps=5, grad_density=0.1),
    # 15 epochs: dense VGG-11 reaches 97.6% and ResNet-20 98.6% (99.1% after 30); 63 iterations an epoch,
    # so the rewinds are 0, 1%, 3% and 7% of training
    "mnist1d": dict(dataset="mnist1d", models=("vgg11", "resnet20"), deep="resnet20", epochs=15,
                    densities=(0.1, 0.05, 0.02, 0.01, 0.005), headline=(0.1, 0.05, 0.02), extreme=(0.01, 0.005),
                    seeds=(0, 1, 2), extra_seeds=(3, 4), imp_levels=8, rewinds=("0it", "10it", "30it", "65it"),
                    alphas=21, grad_steps=100, grad_density=0.05),
    # the papers' setting: open_lth's CIFAR-10 recipes (160 epochs, 391 iterations each)
    "cifar10": dict(dataset="cifar10", models=("vgg16", "resnet20"), deep="resnet20", epochs=None,
                    densities=(0.1, 0.05, 0.02, 0.01, 0.005), headline=(0.1, 0.05, 0.02), extreme=(0.01, 0.005),
                    seeds=(0, 1, 2), extra_seeds=(3, 4), imp_levels=8,
                    rewinds=("0it", "100it", "500it", "2000it", "4000it"), alphas=30, grad_steps=100,
                    grad_density=0.05),
}


# -- experiments ----------------------------------------------------------------------------------

def _data(plan: Plan):
    return pn.data.get(plan.dataset, root=plan.data_root)


def finder_cells(plan: Plan, wanted: set | None = None) -> list[Cell]:
    """The dense net and every finder at every density, for every model and base seed, plus the
    (model, method, density, seed) cells in `wanted`."""
    cells = [Cell(model, plan.dataset, method, density, seed, plan.epochs)
             for model in plan.models for seed in plan.seeds
             for method, density in [("random", 1.0)] + [(m, d) for m in FINDERS for d in plan.densities]]
    have = {(c.model, c.method, c.density, c.seed) for c in cells}
    cells += [Cell(m, plan.dataset, method, d, s, plan.epochs) for m, method, d, s in sorted(wanted or ())
              if (m, method, d, s) not in have]
    return cells


def run_finders(plan: Plan, wanted: set | None = None) -> list[dict]:
    rows = run_sweep(finder_cells(plan, wanted), plan.runs / "finders", backend=plan.backend, address=plan.address,
                     max_concurrent=plan.max_concurrent, data_root=plan.data_root)
    for r in rows:
        widths = sum(layer["width"] for layer in r["layers"])
        r["alive_fraction"] = sum(layer["effective_width"] for layer in r["layers"]) / widths
    return rows


class GradNorms(Callback):
    """‖∂L/∂θ‖ of the prunable weights (pruned ones' gradients are zero) after each step, for `steps` steps."""

    def __init__(self, steps: int):
        self.steps, self.norms, self.weights = steps, [], []

    def on_train_start(self, state) -> None:
        self.weights = list(pn.prunable_weights(state.model).values())

    def on_step_end(self, state) -> None:
        self.norms.append(float(torch.sqrt(sum((w.grad.detach().double() ** 2).sum() for w in self.weights))))
        state.stop = len(self.norms) >= self.steps


def run_gradnorm(plan: Plan, finder_rows: list[dict]) -> list[dict]:
    """The first `grad_steps` steps of each finder's ticket at `grad_density` (its real schedule, stopped
    early), one row per (model, method, seed), kept as JSON."""
    ds, rows = _data(plan), []
    for r in finder_rows:
        if r["density"] != plan.grad_density or r["method"] not in FINDERS:
            continue
        done = plan.runs / "gradnorm" / f"{r['model']}-{r['method']}-{r['density']:g}-s{r['seed']}.json"
        if not done.is_file():
            model = pn.models.get(r["model"], num_classes=ds.num_classes, input_shape=ds.input_shape, seed=r["seed"])
            cb = GradNorms(plan.grad_steps)
            pn.train(model, pn.Mask.load(r["mask_path"]), ds, epochs=plan.epochs, seed=r["seed"], callbacks=[cb],
                     progress=False)
            write_json(done, {"model": r["model"], "method": r["method"], "density": r["density"],
                              "seed": r["seed"], "norms": cb.norms})
        rows.append(json.loads(done.read_text()))
    return rows


def run_rewinding(plan: Plan, seeds) -> list[dict]:
    ds = _data(plan)
    return [imp_instability(plan.deep, ds, levels=plan.imp_levels, rewind=rewind, seed=seed, epochs=plan.epochs,
                            alphas=plan.alphas, runs=plan.runs / "rewinding")
            for rewind in plan.rewinds for seed in seeds]


def _similarity_levels(plan: Plan) -> list[int]:
    return sorted({(plan.imp_levels + 1) // 2, plan.imp_levels})


def run_similarity(plan: Plan, seeds) -> list[dict]:
    """Global chance-corrected Jaccard with the IMP mask (rewinding to 0) at the last level and the middle
    one, for each finder and random masks (chance), one JSON per seed."""
    ds, rows = _data(plan), []
    levels = _similarity_levels(plan)
    for seed in seeds:
        done = plan.runs / "similarity" / f"{plan.deep}-s{seed}.json"
        if not done.is_file():
            _, ticket = imp_run(plan.deep, ds, levels=plan.imp_levels, rewind=plan.rewinds[0], seed=seed,
                                epochs=plan.epochs, runs=plan.runs / "rewinding")
            found = imp_similarity(plan.deep, ds, ticket, seed, levels, FINDERS + ("random",))
            write_json(done, [r for r in found if r["layer"] == "global"])
        rows += json.loads(done.read_text())
    return rows


def run_criteria(plan: Plan, seeds) -> list[dict]:
    """IMP (rewinding to 0) with each of CRITERIA, every level's ticket accuracy, one row per level."""
    ds, rows = _data(plan), []
    for seed in seeds:
        for criterion in CRITERIA:
            _, ticket = imp_run(plan.deep, ds, levels=plan.imp_levels, rewind=plan.rewinds[0], seed=seed,
                                epochs=plan.epochs, runs=plan.runs / "rewinding", criterion=criterion)
            rows += [{"model": plan.deep, "method": criterion, "seed": seed, "level": level,
                      "density": round(ticket.densities[level], 6), "test_accuracy": ticket.accuracy[level]}
                     for level in range(1, len(ticket.masks))]
    return rows


# -- statistics -----------------------------------------------------------------------------------

def paired(a, b) -> dict:
    """A − B over matched units: n, mean (effect), 95% t-interval (low, high), Cohen's d_z, two-sided p."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n, mean = d.size, float(d.mean())
    if n < 2:
        return {"n": n, "effect": mean, "low": -math.inf, "high": math.inf, "d_z": math.nan, "p": math.nan}
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    if sd > 0:
        p, d_z = float(stats.ttest_1samp(d, 0.0).pvalue), mean / sd
    else:
        p, d_z = (1.0, 0.0) if mean == 0 else (0.0, math.copysign(math.inf, mean))
    return {"n": n, "effect": mean, "low": mean - half, "high": mean + half, "d_z": d_z, "p": p}


def verdict(t: dict, margin: float, kind: str = "beats") -> str:
    """'holds', 'does not hold' or 'inconclusive' for "A beats B" or "A is within `margin` of B"."""
    floor, ceiling = (0.0, margin) if kind == "beats" else (-margin, -margin)
    if t["low"] > floor:
        return "holds"
    if t["high"] < ceiling:
        return "does not hold"
    return "inconclusive"


@dataclass
class Test:
    """One paired comparison and what it says about a claim."""

    claim: int
    name: str
    unit: str  # what the effect is measured in
    margin: float
    deciding: bool  # part of the claim's verdict (else reported beside it)
    experiment: str
    figure: str
    a: list = field(default_factory=list)
    b: list = field(default_factory=list)
    kind: str = "beats"
    cells: set = field(default_factory=set)  # finder cells (model, method, density) the pairs use

    def row(self, setting: str) -> dict:
        t = paired(self.a, self.b)
        return {"claim": self.claim, "test": self.name, "setting": setting, "unit": self.unit, **t,
                "margin": self.margin, "kind": self.kind, "verdict": verdict(t, self.margin, self.kind),
                "deciding": self.deciding, "experiment": self.experiment, "figure": self.figure}


def _by(rows: list[dict], key, value) -> dict:
    return {key(r): value(r) for r in rows}


def _finder_pairs(test: Test, rows: list[dict], a: str, b: str, densities, value) -> Test:
    vals = _by(rows, lambda r: (r["model"], r["method"], r["density"], r["seed"]), value)
    for (model, method, density, seed), v in sorted(vals.items()):
        if method == a and density in densities and (model, b, density, seed) in vals:
            test.a.append(v)
            test.b.append(vals[(model, b, density, seed)])
    test.cells |= {(m, x, d) for m in {r["model"] for r in rows} for x in (a, b) for d in densities}
    return test


def build_tests(plan: Plan, finders: list[dict], grads: list[dict], rewinding: list[dict],
                similarity: list[dict], criteria: list[dict]) -> list[Test]:
    tests = []
    acc = lambda r: r["test_accuracy"]  # noqa: E731
    for rival in RIVALS:
        tests.append(_finder_pairs(Test(1, f"PHEW beats {rival} (test accuracy)", "accuracy", ACCURACY_MARGIN, True,
                                        "finders", "claims_accuracy.png"),
                                   finders, "phew", rival, plan.headline, acc))
    for rival in RIVALS:
        tests.append(_finder_pairs(Test(1, f"PHEW keeps more units than {rival}", "fraction of units on a path",
                                        0.01, False, "finders", "claims_accuracy.png"),
                                   finders, "phew", rival, plan.headline, lambda r: r["alive_fraction"]))
    early = lambda r: float(np.log(np.mean(r["norms"])))  # noqa: E731
    for rival in RIVALS:
        tests.append(_finder_pairs(Test(1, f"PHEW has a larger early gradient norm than {rival}",
                                        "log ratio of mean ‖g‖, first steps", math.log(1.05), False, "gradnorm",
                                        "claims_grad_norm.png"),
                                   grads, "phew", rival, (plan.grad_density,), early))
    by_k = _by(rewinding, lambda r: (r["rewind"], r["seed"]), lambda r: r)
    first, last = plan.rewinds[0], plan.rewinds[-1]
    seeds = sorted(s for k, s in by_k if k == first and (last, s) in by_k)
    r0 = [by_k[(first, s)] for s in seeds]
    rk = [by_k[(last, s)] for s in seeds]
    rewind = lambda name, unit, a, b, kind="beats": Test(  # noqa: E731
        2, name, unit, ACCURACY_MARGIN, True, "rewinding", "claims_rewinding.png", a, b, kind)
    tests += [
        rewind(f"rewinding to {first} falls short of the dense net", "accuracy",
               [r["dense_accuracy"] for r in r0], [r["test_accuracy"] for r in r0]),
        rewind(f"rewinding to {last} beats rewinding to {first}", "accuracy",
               [r["test_accuracy"] for r in rk], [r["test_accuracy"] for r in r0]),
        rewind(f"rewinding to {last} matches the dense net", "accuracy",
               [r["test_accuracy"] for r in rk], [r["dense_accuracy"] for r in rk], "within"),
        rewind(f"rewinding to {last} lowers the error barrier", "error",
               [r["barrier"] for r in r0], [r["barrier"] for r in rk]),
    ]
    tests.append(_finder_pairs(Test(3, "GraSP beats SNIP at extreme sparsity", "accuracy", ACCURACY_MARGIN, True,
                                    "finders", "claims_accuracy.png"), finders, "grasp", "snip", plan.extreme, acc))
    tests.append(_finder_pairs(Test(4, "at init: |θ|·|∂L/∂θ| (= SNIP) beats |θ|", "accuracy", ACCURACY_MARGIN,
                                    True, "finders", "claims_accuracy.png"),
                               finders, "snip", "magnitude", plan.densities, acc))
    tests.append(_finder_pairs(Test(4, "in IMP: |θ|·|∂L/∂θ| beats |θ| at every level", "accuracy", ACCURACY_MARGIN,
                                    True, "criteria", "claims_criteria.png"),
                               criteria, "magnitude_gradient", "magnitude", sorted({r["density"] for r in criteria}),
                               acc))
    cj = lambda r: r["chance_jaccard"]  # noqa: E731
    dens = sorted({r["density"] for r in similarity})
    tests.append(_finder_pairs(Test(5, "PHEW overlaps IMP masks beyond chance", "chance-corrected Jaccard", 0.01, True,
                                    "similarity", "claims_similarity.png"), similarity, "phew", "random", dens, cj))
    for other in FINDERS[1:]:
        tests.append(_finder_pairs(Test(5, f"PHEW overlaps IMP masks more than {other}", "chance-corrected Jaccard",
                                        0.01, False, "similarity", "claims_similarity.png"),
                                   similarity, "phew", other, dens, cj))
    return tests


def read_rows(path: str | Path) -> list[dict]:
    """claims.csv read back with its types (what the README's table is rendered from)."""
    types = {"claim": int, "n": int, "deciding": lambda v: v == "True",
             **{k: float for k in ("effect", "low", "high", "d_z", "p", "margin")}}
    with open(path, newline="") as f:
        return [{k: types.get(k, str)(v) for k, v in r.items()} for r in csv.DictReader(f)]


def claim_verdict(rows: list[dict]) -> str:
    deciding = [r["verdict"] for r in rows if r["deciding"]]
    if all(v == "holds" for v in deciding):
        return "holds"
    return "does not hold" if "does not hold" in deciding else "inconclusive"


# -- the claims, as the papers state them --------------------------------------------------------

CLAIMS = {
    1: ("PHEW beats SNIP, GraSP and SynFlow at 10, 5 and 2% density, keeping wider layers with larger early "
        "gradient norms (Patil & Dovrolis 2021)", "VGG-16/19, ResNet-20/32 on CIFAR-10/100, Tiny-ImageNet"),
    2: ("IMP rewinding to 0 fails on deeper nets; rewinding to an early step recovers dense accuracy, "
        "together with stability (Frankle et al. 2020)", "ResNet-20, VGG-16 on CIFAR-10; ResNet-50 on ImageNet"),
    3: ("GraSP beats SNIP at extreme sparsity (Wang et al. 2020)", "VGG-19, ResNet-32 on CIFAR-10/100, 1–2% density"),
    4: ("Adding the loss gradient to a data-free criterion (magnitude × gradient) consistently improves on it "
        "(Lévai & Zombori)", "fully connected and conv nets on MNIST/CIFAR-10"),
    5: ("PHEW tickets are structurally close to IMP masks (Patil & Dovrolis 2021)", "VGG/ResNet on CIFAR-10"),
}


def our_setting(plan: Plan, claim: int) -> str:
    ep = _epochs(plan)
    pct = lambda ds: "/".join(f"{100 * d:g}" for d in ds) + "%"  # noqa: E731
    nets = " and ".join(plan.models)
    levels = _similarity_levels(plan)
    return {1: f"{nets} on {plan.dataset}, {ep}, {pct(plan.headline)}",
            2: f"{plan.deep} on {plan.dataset}, {ep}, IMP to {100 * 0.8 ** plan.imp_levels:.1f}%, "
               f"k ∈ {{{', '.join(plan.rewinds)}}}",
            3: f"{nets} on {plan.dataset}, {ep}, {pct(plan.extreme)}",
            4: f"at init: {nets} on {plan.dataset}, {ep}, {pct(plan.densities)}; in IMP: {plan.deep}, levels 1–"
               f"{plan.imp_levels} (80% → {100 * 0.8 ** plan.imp_levels:.1f}%)",
            5: f"{plan.deep} on {plan.dataset}, IMP masks (rewinding to 0) at {100 * 0.8 ** levels[0]:.1f}% and "
               f"{100 * 0.8 ** levels[1]:.1f}%"}[claim]


def _fmt(row: dict) -> str:
    scale = 100 if row["unit"] in ("accuracy", "error") else 1
    unit = " pts" if scale == 100 else ""
    x = lambda v: f"{scale * v:+.2f}" if math.isfinite(v) else "±∞"  # noqa: E731
    return f"{x(row['effect'])}{unit} [{x(row['low'])}, {x(row['high'])}], n = {row['n']}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a literal bar inside a Markdown table cell


def markdown(plan: Plan, rows: list[dict]) -> str:
    lines = ["| claim | paper's setting | our setting | test (A − B) | result: mean [95% CI] | verdict | figure |",
             "|---|---|---|---|---|---|---|"]
    for claim, (text, paper) in CLAIMS.items():
        mine = [r for r in rows if r["claim"] == claim and r["deciding"]]
        overall = claim_verdict([r for r in rows if r["claim"] == claim])
        for i, r in enumerate(mine):
            head = (f"**{claim}.** {text} — **{overall}**", paper, our_setting(plan, claim)) if i == 0 else ("", "", "")
            lines.append(f"| {head[0]} | {head[1]} | {head[2]} | {_cell(r['test'])} | {_fmt(r)} | {r['verdict']} | "
                         f"[{r['figure']}](figures/{r['figure']}) |")
    side = [r for r in rows if not r["deciding"]]
    if side:
        lines += ["", "Reported beside the verdicts:", "", "| claim | test (A − B) | result: mean [95% CI] | reading |",
                  "|---|---|---|---|"]
        lines += [f"| {r['claim']} | {_cell(r['test'])} ({r['unit']}) | {_fmt(r)} | {r['verdict']} |" for r in side]
    return "\n".join(lines) + "\n"


# -- figures --------------------------------------------------------------------------------------

def fig_accuracy(plan: Plan, finders: list[dict]) -> None:
    table = mean_std(finders, ("model", "method", "density"), ("test_accuracy", "alive_fraction", "grad_norm"))
    fig, axes = plt.subplots(1, len(plan.models), figsize=(6.2 * len(plan.models), 4.4), squeeze=False)
    for ax, model in zip(axes[0], plan.models):
        mine = [r for r in table if r["model"] == model]
        density_lines(ax, mine, "test_accuracy", FINDERS, scale=100, bold=("phew",))
        dense = [r for r in mine if r["density"] == 1.0]
        if dense:
            ax.axhline(100 * dense[0]["test_accuracy_mean"], color="grey", ls="--", lw=0.8, label="dense")
        _label(ax, "density (% of weights kept)", "test accuracy (%)", f"{model} on {plan.dataset}")
    fig.suptitle(f"At-init finders, mean ± std over seeds ({_epochs(plan)})", fontsize=10)
    save(fig, table, "claims_accuracy", plan.out)


def fig_grad_norm(plan: Plan, grads: list[dict]) -> None:
    fig, axes = plt.subplots(1, len(plan.models), figsize=(6.2 * len(plan.models), 4.2), squeeze=False)
    table = []
    for ax, model in zip(axes[0], plan.models):
        for method in FINDERS:
            norms = np.array([r["norms"] for r in grads if r["model"] == model and r["method"] == method])
            if not norms.size:
                continue
            steps = np.arange(1, norms.shape[1] + 1)
            mean, std = norms.mean(0), norms.std(0)
            ax.plot(steps, mean, color=COLORS.get(method, "C7"), label=method, lw=2 if method == "phew" else 1)
            ax.fill_between(steps, mean - std, mean + std, color=COLORS.get(method, "C7"), alpha=0.15)
            table += [{"model": model, "method": method, "density": plan.grad_density, "step": int(s), "n": len(norms),
                       "grad_norm_mean": float(m), "grad_norm_std": float(v)} for s, m, v in zip(steps, mean, std)]
        ax.set_yscale("log")
        _label(ax, "training step", "‖∂L/∂θ‖ of the kept weights", f"{model} at {100 * plan.grad_density:g}% density")
    fig.suptitle(f"Gradient norm early in training, mean ± std over seeds ({plan.dataset})", fontsize=10)
    save(fig, table, "claims_grad_norm", plan.out)


def fig_rewinding(plan: Plan, rewinding: list[dict]) -> None:
    table = mean_std(rewinding, ("rewind", "rewind_step", "density"),
                     ("test_accuracy", "dense_accuracy", "barrier", "train_barrier"))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    steps = [max(r["rewind_step"], 0.5) for r in table]
    axes[0].errorbar(steps, [100 * r["test_accuracy_mean"] for r in table],
                     yerr=[100 * r["test_accuracy_std"] for r in table], marker="o", capsize=2, label="IMP ticket")
    axes[0].axhline(100 * np.mean([r["dense_accuracy_mean"] for r in table]), color="grey", ls="--", lw=0.8,
                    label="dense")
    axes[0].set_ylabel("test accuracy (%)")
    for key, label in (("barrier", "test"), ("train_barrier", "train")):
        axes[1].errorbar(steps, [100 * r[f"{key}_mean"] for r in table], yerr=[100 * r[f"{key}_std"] for r in table],
                         marker="o", capsize=2, label=label)
    axes[1].set_ylabel("error barrier between two copies (%)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("rewind step k (iterations; k = 0 drawn at 0.5)")
        ax.legend(fontsize=8)
    fig.suptitle(f"IMP rewinding on {plan.deep} ({plan.dataset}) at {100 * table[0]['density']:.1f}% density, "
                 f"mean ± std over seeds", fontsize=10)
    save(fig, table, "claims_rewinding", plan.out)


def fig_similarity(plan: Plan, similarity: list[dict]) -> None:
    table = mean_std(similarity, ("method", "density"), ("chance_jaccard",))
    densities = sorted({r["density"] for r in table}, reverse=True)
    methods = [*FINDERS, "random"]
    fig, ax = plt.subplots(figsize=(8.5, 4.3))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        pts = {r["density"]: r for r in table if r["method"] == method}
        ax.bar(np.arange(len(densities)) + i * width, [pts[d]["chance_jaccard_mean"] for d in densities], width,
               yerr=[pts[d]["chance_jaccard_std"] for d in densities], color=COLORS.get(method, "C7"), label=method,
               capsize=2)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(np.arange(len(densities)) + width * (len(methods) - 1) / 2, [f"{100 * d:.1f}%" for d in densities])
    ax.set_xlabel("density of the IMP mask (rewinding to 0)")
    ax.set_ylabel("chance-corrected Jaccard with IMP")
    ax.legend(fontsize=7, ncol=4)
    ax.set_title(f"How close each at-init finder comes to IMP — {plan.deep} on {plan.dataset}, mean ± std over seeds",
                 fontsize=9)
    save(fig, table, "claims_similarity", plan.out)


def fig_criteria(plan: Plan, criteria: list[dict]) -> None:
    table = mean_std(criteria, ("method", "level", "density"), ("test_accuracy",))
    fig, ax = plt.subplots(figsize=(7.5, 4.3))
    for criterion, color in zip(CRITERIA, ("C2", "C4")):
        pts = sorted((r for r in table if r["method"] == criterion), key=lambda r: r["level"])
        ax.errorbar([100 * r["density"] for r in pts], [100 * r["test_accuracy_mean"] for r in pts],
                    yerr=[100 * r["test_accuracy_std"] for r in pts], marker="o", ms=3, capsize=2, color=color,
                    label={"magnitude": "|θ| (IMP)", "magnitude_gradient": "|θ|·|∂L/∂θ|"}[criterion])
    ax.set_xscale("log")
    ax.invert_xaxis()
    _label(ax, "density (% of weights kept)", "test accuracy (%)",
           f"IMP's criterion — {plan.deep} on {plan.dataset}, rewinding to 0, mean ± std over seeds")
    save(fig, table, "claims_criteria", plan.out)


def _label(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)


def _epochs(plan: Plan) -> str:
    if plan.epochs is None:
        return "the dataset's recipe"
    return f"{plan.epochs} epoch{'s' if plan.epochs != 1 else ''}"


# -- driver ---------------------------------------------------------------------------------------

def extra_work(plan: Plan, tests: list[Test], rows: list[dict]) -> dict[str, set]:
    """What the extra seeds must run: for each deciding test that is inconclusive, its finder cells
    (model, method, density) at every extra seed, or the extra seeds of its IMP experiment."""
    todo: dict[str, set] = {}
    if not plan.extra_seeds:
        return todo
    for test, row in zip(tests, rows):
        if not test.deciding or row["verdict"] != "inconclusive":
            continue
        if test.experiment == "finders":
            todo.setdefault("finders", set()).update(
                (m, method, d, s) for m, method, d in test.cells for s in plan.extra_seeds)
        else:
            todo.setdefault(test.experiment, set()).update(plan.extra_seeds)
    return todo


def run(plan: Plan, only: tuple[str, ...] = EXPERIMENTS) -> list[dict] | None:
    """Run (or resume) the experiments; with all of them, write the figures and the claims table."""
    torch.set_num_threads(1)
    extra_finders: set = set()
    extra_seeds: dict[str, tuple] = {}
    todo: dict[str, set] = {}
    for attempt in range(2):
        if attempt:
            print(f"claims: inconclusive tests get seeds {plan.extra_seeds}: {sorted(todo)}", flush=True)
        finders = run_finders(plan, extra_finders) if {"finders", "gradnorm"} & set(only) else []
        grads = run_gradnorm(plan, finders) if "gradnorm" in only else []
        seeds = lambda e: plan.seeds + extra_seeds.get(e, ())  # noqa: E731
        rewinding = run_rewinding(plan, seeds("rewinding")) if "rewinding" in only else []
        similarity = run_similarity(plan, seeds("similarity")) if "similarity" in only else []
        criteria = run_criteria(plan, seeds("criteria")) if "criteria" in only else []
        if set(only) != set(EXPERIMENTS):
            return None
        tests = build_tests(plan, finders, grads, rewinding, similarity, criteria)
        rows = [t.row(plan.setting) for t in tests]
        todo = extra_work(plan, tests, rows) if attempt == 0 else {}
        if not todo:
            break
        extra_finders = todo.get("finders", set())
        extra_seeds = {e: plan.extra_seeds for e in todo if e != "finders"}
    fig_accuracy(plan, finders)
    fig_grad_norm(plan, grads)
    fig_rewinding(plan, rewinding)
    fig_similarity(plan, similarity)
    fig_criteria(plan, criteria)
    for r in rows:
        r["claim_verdict"] = claim_verdict([x for x in rows if x["claim"] == r["claim"]])
    write_csv(plan.out / "claims.csv", rows)
    write_text(plan.out / "claims.md", markdown(plan, rows))
    write_json(plan.runs / "claims.json", {"plan": {k: str(v) for k, v in vars(plan).items()}, "tests": rows,
                                           "versions": versions()})
    for claim in CLAIMS:
        print(f"claim {claim}: {claim_verdict([r for r in rows if r['claim'] == claim])}")
    print(f"wrote {plan.out / 'claims.csv'} and claims.md")
    return rows


def parse(argv=None) -> tuple[Plan, tuple[str, ...]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a tiny version in seconds (checks the pipeline, for CI)")
    p.add_argument("--data", choices=("mnist1d", "cifar10"), help="mnist1d (offline, default) or cifar10 (needs "
                   "--data-root; the papers' nets and recipes, meant for a GPU)")
    p.add_argument("--data-root", help="the folder holding CIFAR-10 (torchvision's layout); implies --data cifar10")
    p.add_argument("--only", nargs="+", choices=EXPERIMENTS, help="run only these experiments (no figures)")
    p.add_argument("--out", default=str(ROOT / "figures"), help="where the PNGs and CSVs go (default: figures/)")
    p.add_argument("--runs", default=str(ROOT / "runs" / "claims"), help="where finished work is kept for resuming")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="run the finders' sweep here or "
                   "on Ray")
    p.add_argument("--address", help="a running Ray cluster's HOST:PORT (default: a local Ray)")
    p.add_argument("--max-concurrent", type=int, help="at most this many sweep cells at once on Ray")
    a = p.parse_args(argv)
    setting = "quick" if a.quick else (a.data or ("cifar10" if a.data_root else "mnist1d"))
    if setting == "cifar10" and not a.data_root:
        p.error("--data cifar10 needs --data-root DIR (the folder holding CIFAR-10)")
    if a.quick and (a.data or a.data_root):
        p.error("--quick runs on offline data; leave out --data and --data-root")
    if a.max_concurrent is not None and a.max_concurrent < 1:
        p.error(f"--max-concurrent must be at least 1, got {a.max_concurrent}")
    plan = Plan(setting=setting, **PLANS[setting], data_root=a.data_root, runs=Path(a.runs) / setting, out=Path(a.out),
                backend=a.backend, address=a.address, max_concurrent=a.max_concurrent)
    return plan, tuple(a.only or EXPERIMENTS)


def main(argv=None) -> int:
    try:
        run(*parse(argv))
    except pn.errors.PathnetError as e:
        print(f"claims: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"claims: interrupted ({e or 'Ctrl-C'}); run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
