"""Figure: log10 input→output paths vs density per ticket finder (unit level)."""

from __future__ import annotations

import matplotlib.pyplot as plt

from figtools import COLORS, density_sweep, mean_std, parse, save, subtitle


def main():
    s = parse(__doc__)
    table = mean_std(density_sweep(s), ("method", "density"), ("log10_paths",))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(r["method"] for r in table):
        pts = sorted((r for r in table if r["method"] == method), key=lambda r: r["density"])
        ax.errorbar([100 * r["density"] for r in pts], [r["log10_paths_mean"] for r in pts],
                    yerr=[r["log10_paths_std"] for r in pts], label=method, color=COLORS.get(method), marker="o",
                    ms=3, capsize=2)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("density (% of weights kept)")
    ax.set_ylabel("log10 input→output paths (missing: layer collapse)")
    ax.set_title(f"Paths vs density — {subtitle(s)}", fontsize=9)
    ax.legend(fontsize=8, ncol=2)
    save(fig, table, "paths_vs_density", s)


if __name__ == "__main__":
    main()
