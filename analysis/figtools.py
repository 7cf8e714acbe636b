"""Shared by the figure scripts: arguments, the shared density sweep, IMP runs, aggregation, output.

Every script writes figures/<name>.png and figures/<name>.csv (atomically) and takes --quick
(tiny, seconds: for tests), --data-root (CIFAR-10 from disk instead of offline data), --out and
--runs (where finished work is kept, so an interrupted full run resumes).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import pathnet as pn  # noqa: E402
from pathnet.io import atomic_write, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COLORS = {"phew": "C0", "synflow": "C1", "snip": "C2", "grasp": "C3", "magnitude": "C4", "random": "C5", "erk": "C6",
          "smart_ratio": "C8", "imp": "k"}


@dataclass(frozen=True)
class Setup:
    """What the figures run on: offline data by default, CIFAR-10 with --data-root."""

    model: str
    dataset: str
    epochs: int
    densities: tuple[float, ...]
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    imp_epochs: int
    data_root: str | None
    quick: bool
    runs: Path
    out: Path


def parse(description: str) -> Setup:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a tiny version in seconds (for tests)")
    p.add_argument("--data-root", help="run on CIFAR-10 (ResNet-20) from this folder instead of offline data")
    p.add_argument("--out", default=str(ROOT / "figures"), help="where the PNG and CSV go (default: figures/)")
    p.add_argument("--runs", default=str(ROOT / "runs" / "figures"), help="where finished work is kept")
    a = p.parse_args()
    torch.set_num_threads(1)
    methods = ("phew", "synflow", "snip", "grasp", "magnitude", "random", "erk")
    runs = Path(a.runs) / ("quick" if a.quick else "full")
    if a.quick:
        return Setup("lenet300", "digits", 1, (0.1, 0.03), (0,), ("phew", "random"), 1, None, True, runs, Path(a.out))
    if a.data_root:
        return Setup("resnet20", "cifar10", 160, (0.1, 0.05, 0.02, 0.01, 0.005), (0, 1, 2), methods, 160, a.data_root,
                     False, runs / "cifar10", Path(a.out))
    return Setup("lenet300", "mnist5k", 5, (0.1, 0.05, 0.02, 0.01, 0.005), (0, 1, 2), methods, 5, None, False, runs,
                 Path(a.out))


def density_sweep(s: Setup) -> list[dict]:
    """prune → analyze → train for every (method, density, seed): shared by several figures, resumable."""
    from pathnet.sweep import grid_cells, run_sweep

    cells = grid_cells({"model": s.model, "dataset": s.dataset, "method": list(s.methods),
                        "density": list(s.densities), "seed": list(s.seeds), "epochs": s.epochs})
    return run_sweep(cells, s.runs / "density_sweep", data_root=s.data_root)


def imp_runs(s: Setup, levels: int | None = None) -> list:
    """One IMP run (20% per level, rewinding to 0) per seed down to the sparsest density, resumable."""
    levels = levels or int(np.ceil(np.log(min(s.densities)) / np.log(0.8)))
    ds = pn.data.get(s.dataset, root=s.data_root)
    return [imp_run(s.model, ds, levels=levels, rewind="0it", seed=seed, epochs=s.imp_epochs, runs=s.runs)[1]
            for seed in s.seeds]


def imp_run(model_name: str, ds, *, levels: int, rewind: str, seed: int, epochs: int | None, runs: Path,
            criterion: str = "magnitude"):
    """(model, IMPResult): IMP at 20% per level of `model_name` from seed `seed`'s initialisation, rewinding
    to `rewind`, keeping the top of `criterion`; kept under `runs`, so a finished run is read back and an
    unfinished one resumes."""
    model = pn.models.get(model_name, num_classes=ds.num_classes, input_shape=ds.input_shape, seed=seed)
    tag = "" if criterion == "magnitude" else f"-{criterion}"
    ticket = pn.imp(model, ds, levels=levels, rewind=rewind, criterion=criterion, seed=seed, epochs=epochs,
                    progress=False, run_dir=runs / f"imp-{model_name}-{ds.name}-k{rewind}{tag}-s{seed}")
    return model, ticket


def imp_instability(model_name: str, ds, *, levels: int, rewind: str, seed: int, epochs: int | None, alphas: int,
                    runs: Path) -> dict:
    """The IMP ticket of :func:`imp_run` and its instability: the error barrier between two copies trained
    from the rewind point with data orders `seed` and `seed` + 1000. One row, kept as JSON under `runs`."""
    done = runs / f"{model_name}-{ds.name}-k{rewind}-s{seed}.json"
    if done.is_file():
        return json.loads(done.read_text())
    model, ticket = imp_run(model_name, ds, levels=levels, rewind=rewind, seed=seed, epochs=epochs, runs=runs)
    res = pn.instability(model, ticket.masks[-1], ds, rewind_state=ticket.rewind_state, start_step=ticket.rewind_step,
                         seeds=(seed, seed + 1000), alphas=alphas, epochs=epochs, progress=False)
    row = {"model": model_name, "rewind": rewind, "rewind_step": ticket.rewind_step, "seed": seed,
           "density": ticket.masks[-1].density, "test_accuracy": ticket.accuracy[-1],
           "dense_accuracy": ticket.accuracy[0], "barrier": res.barrier, "train_barrier": res.train_barrier,
           "test_error": res.test_error, "alphas": res.alphas}
    write_json(done, row)
    return row


def imp_similarity(model_name: str, ds, ticket, seed: int, levels, methods) -> list[dict]:
    """Chance-corrected Jaccard between the IMP masks of `levels` and each method's mask of the same
    density from the same initialisation (seed `seed`): a "global" row and one per layer."""
    model = pn.models.get(model_name, num_classes=ds.num_classes, input_shape=ds.input_shape, seed=seed)
    rows = []  # prune leaves the model as it was, so one initialisation serves every level and method
    for level in levels:
        target = ticket.masks[level]
        for method in methods:
            cmp = pn.compare(pn.prune(model, method, target.density, data=ds, input_shape=ds.input_shape, seed=seed),
                             target)
            base = {"model": model_name, "method": method, "seed": seed, "level": level,
                    "density": round(target.density, 6)}
            rows.append({**base, "layer": "global", "chance_jaccard": cmp.chance_jaccard})
            rows += [{**base, "layer": r.name, "chance_jaccard": r.chance_jaccard} for r in cmp.layers]
    return rows


def mean_std(rows: list[dict], by: tuple[str, ...], values: tuple[str, ...]) -> list[dict]:
    """Rows grouped by `by`, each value as mean and std over the group (non-finite values dropped)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    table = []
    for key, members in groups.items():
        row = dict(zip(by, key))
        row["n"] = len(members)
        for v in values:
            xs = np.array([float(m[v]) for m in members], dtype=float)
            xs = xs[np.isfinite(xs)]
            row[f"{v}_mean"] = float(xs.mean()) if xs.size else float("nan")
            row[f"{v}_std"] = float(xs.std()) if xs.size else float("nan")
        table.append(row)
    return table


def save(fig, rows: list[dict], name: str, out: Path) -> None:
    """<out>/<name>.png and <out>/<name>.csv, atomically."""
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    atomic_write(out / f"{name}.png", lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    keys = list(rows[0])

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)

    atomic_write(out / f"{name}.csv", write)
    print(f"wrote {out / name}.png and .csv")


def subtitle(s: Setup) -> str:
    return f"{s.model} on {s.dataset}, {s.epochs} epochs, {len(s.seeds)} seed(s), mean ± std"


def density_lines(ax, table: list[dict], value: str, methods, *, scale: float = 1, bold: tuple[str, ...] = ()) -> None:
    """On `ax`, one line per method of `value`_mean ± `value`_std (times `scale`) against density, on a
    log axis with sparser to the right."""
    for method in methods:
        pts = sorted((r for r in table if r["method"] == method), key=lambda r: r["density"])
        ax.errorbar([100 * r["density"] for r in pts], [scale * r[f"{value}_mean"] for r in pts],
                    yerr=[scale * r[f"{value}_std"] for r in pts], label=method, color=COLORS.get(method, "C7"),
                    marker="o", ms=3, capsize=2, lw=2 if method in bold else 1)
    ax.set_xscale("log")
    ax.invert_xaxis()


def plot_vs_density(table: list[dict], value: str, ylabel: str, title: str, s: Setup, name: str, *,
                    logy: bool = False, ylim: tuple | None = None, bold: tuple[str, ...] = ()) -> None:
    """:func:`density_lines` for every method of `table`, in a figure of its own, saved as `name`."""
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    density_lines(ax, table, value, dict.fromkeys(r["method"] for r in table), bold=bold)
    if logy:
        ax.set_yscale("log")
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_xlabel("density (% of weights kept)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title} — {subtitle(s)}", fontsize=9)
    ax.legend(fontsize=8, ncol=2)
    save(fig, table, name, s.out)
