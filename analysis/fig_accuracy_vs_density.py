"""Figure: test accuracy vs density for every ticket finder and IMP with rewinding."""

from __future__ import annotations

import matplotlib.pyplot as plt

from figtools import COLORS, density_sweep, imp_runs, mean_std, parse, save, subtitle


def main():
    s = parse(__doc__)
    rows = density_sweep(s)
    for run in imp_runs(s):
        for level, (mask, acc) in enumerate(zip(run.masks, run.accuracy)):
            if level and mask.density >= min(s.densities) * 0.99:
                rows.append({"method": "imp", "density": round(mask.density, 6), "test_accuracy": acc})
    table = mean_std(rows, ("method", "density"), ("test_accuracy",))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(r["method"] for r in table):
        pts = sorted((r for r in table if r["method"] == method), key=lambda r: r["density"])
        ax.errorbar([100 * r["density"] for r in pts], [r["test_accuracy_mean"] for r in pts],
                    yerr=[r["test_accuracy_std"] for r in pts], label=method, color=COLORS.get(method), marker="o",
                    ms=3, capsize=2, lw=2 if method in ("phew", "imp") else 1)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("density (% of weights kept)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Accuracy vs density — {subtitle(s)}", fontsize=9)
    ax.legend(fontsize=8, ncol=2)
    save(fig, table, "accuracy_vs_density", s)


if __name__ == "__main__":
    main()
