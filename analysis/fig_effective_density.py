"""Figure: effective density (weights on some input→output path) vs direct density per ticket finder."""

from __future__ import annotations

import matplotlib.pyplot as plt

from figtools import COLORS, density_sweep, mean_std, parse, save, subtitle


def main():
    s = parse(__doc__)
    rows = density_sweep(s)
    for r in rows:
        r["effective_fraction"] = r["effective_density"] / r["density"]
    table = mean_std(rows, ("method", "density"), ("effective_density", "effective_fraction"))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(r["method"] for r in table):
        pts = sorted((r for r in table if r["method"] == method), key=lambda r: r["density"])
        ax.errorbar([100 * r["density"] for r in pts], [r["effective_fraction_mean"] for r in pts],
                    yerr=[r["effective_fraction_std"] for r in pts], label=method, color=COLORS.get(method),
                    marker="o", ms=3, capsize=2)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("density (% of weights kept)")
    ax.set_ylabel("effective density / density")
    ax.set_title(f"Kept weights that lie on an input→output path — {subtitle(s)}", fontsize=9)
    ax.legend(fontsize=8, ncol=2)
    save(fig, table, "effective_density", s)


if __name__ == "__main__":
    main()
