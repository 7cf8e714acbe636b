"""Figure: chance-corrected Jaccard between each method's mask and the IMP mask (rewinding to 0)
of the same density and the same initialisation, per layer and globally."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

import pathnet as pn
from figtools import COLORS, imp_runs, imp_similarity, parse, save, subtitle


def main():
    s = parse(__doc__)
    ds = pn.data.get(s.dataset, root=s.data_root)
    runs = imp_runs(s)
    levels = [lv for lv in range(1, len(runs[0].masks)) if runs[0].masks[lv].density >= min(s.densities) * 0.99]
    picks = sorted({levels[-1], levels[len(levels) // 2]})  # the sparsest IMP level and one in between
    rows = []
    for seed, run in zip(s.seeds, runs):
        rows += imp_similarity(s.model, ds, run, seed, picks, s.methods)
    table = []
    for key in dict.fromkeys((r["method"], r["density"], r["layer"]) for r in rows):
        xs = np.array([r["chance_jaccard"] for r in rows if (r["method"], r["density"], r["layer"]) == key])
        table.append({"method": key[0], "density": key[1], "layer": key[2], "n": len(xs),
                      "chance_jaccard_mean": float(xs.mean()), "chance_jaccard_std": float(xs.std())})
    layers = list(dict.fromkeys(r["layer"] for r in table))
    densities = sorted({r["density"] for r in table}, reverse=True)
    fig, axes = plt.subplots(1, len(densities), figsize=(6 * len(densities), 4.2), squeeze=False)
    width = 0.8 / len(s.methods)
    for ax, density in zip(axes[0], densities):
        for i, method in enumerate(s.methods):
            pts = {r["layer"]: r for r in table if r["method"] == method and r["density"] == density}
            ax.bar(np.arange(len(layers)) + i * width, [pts[lay]["chance_jaccard_mean"] for lay in layers], width,
                   yerr=[pts[lay]["chance_jaccard_std"] for lay in layers], color=COLORS.get(method), label=method,
                   capsize=1.5)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(np.arange(len(layers)) + width * (len(s.methods) - 1) / 2, layers, fontsize=8)
        ax.set_ylabel("chance-corrected Jaccard with the IMP mask")
        ax.set_title(f"density {100 * density:.2f}%", fontsize=9)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"Overlap with IMP tickets — {subtitle(s)}", fontsize=10)
    save(fig, table, "imp_similarity", s.out)


if __name__ == "__main__":
    main()
