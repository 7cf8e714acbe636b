"""Figure: per-layer effective width and density of PHEW, SynFlow, SNIP and random tickets.

PHEW's claim: as many paths as SynFlow but wider layers, no bottleneck. Tickets only (no
training): VGG-11 on MNIST-1D (1-D convolutions; 8 conv layers and a classifier), or ResNet-20
on CIFAR-10 with --data-root.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

import pathnet as pn
from figtools import COLORS, parse, save

METHODS = ("phew", "synflow", "snip", "random")


def width_table(model_name: str, dataset: str, density: float, s, methods=METHODS, **model_options) -> list[dict]:
    """Per method and layer with a weight: mean ± std over seeds of density, width and effective width."""
    ds = pn.data.get(dataset, root=s.data_root)
    rows = []
    for method in methods:
        for seed in s.seeds:
            model = pn.models.get(model_name, num_classes=ds.num_classes, input_shape=ds.input_shape, seed=seed,
                                  **model_options)
            mask = pn.prune(model, method, density, data=ds, input_shape=ds.input_shape, seed=seed)
            report = pn.analyze(mask, model, ds.input_shape)
            for i, r in enumerate(row for row in report.layers if row.param is not None):
                rows.append({"method": method, "seed": seed, "layer": i + 1, "name": r.name, "units": r.units,
                             "density": r.density, "effective_width": r.effective_width / r.units,
                             "width": r.width / r.units, "log10_paths": report.log10_paths})
    table = []
    for method in methods:
        for layer in sorted({r["layer"] for r in rows}):
            members = [r for r in rows if r["method"] == method and r["layer"] == layer]
            entry = {"method": method, "layer": layer, "name": members[0]["name"], "units": members[0]["units"],
                     "n": len(members)}
            for key in ("density", "width", "effective_width", "log10_paths"):
                xs = np.array([m[key] for m in members], dtype=float)
                entry[f"{key}_mean"], entry[f"{key}_std"] = float(xs.mean()), float(xs.std())
            table.append(entry)
    return table


def plot_widths(table: list[dict], title: str, name: str, s, methods=METHODS) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    for method in methods:
        pts = [r for r in table if r["method"] == method]
        x = [r["layer"] for r in pts]
        for ax, key in zip(axes, ("effective_width", "density")):
            ax.errorbar(x, [r[f"{key}_mean"] for r in pts], yerr=[r[f"{key}_std"] for r in pts], marker="o", ms=3,
                        capsize=2, color=COLORS[method],
                        label=f"{method} (log10 paths {pts[0]['log10_paths_mean']:.1f})")
    axes[0].set_ylabel("units on some input→output path / units")
    axes[0].set_ylim(0, 1.05)
    axes[1].set_ylabel("layer density")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("layer")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    save(fig, table, name, s.out)


def main():
    s = parse(__doc__)
    model_name, dataset, density = ("conv2", "digits", 0.05) if s.quick else (
        ("resnet20", "cifar10", 0.02) if s.data_root else ("vgg11", "mnist1d", 0.02))
    table = width_table(model_name, dataset, density, s)
    plot_widths(table, f"Width profiles at {density:.0%} — {model_name} on {dataset}, {len(s.seeds)} seed(s), "
                "mean ± std", "width_profiles", s)


if __name__ == "__main__":
    main()
