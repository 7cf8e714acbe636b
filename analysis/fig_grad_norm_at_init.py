"""Figure: gradient norm of the masked network at initialisation vs density per ticket finder."""

from __future__ import annotations

import matplotlib.pyplot as plt

from figtools import COLORS, density_sweep, mean_std, parse, save, subtitle


def main():
    s = parse(__doc__)
    table = mean_std(density_sweep(s), ("method", "density"), ("grad_norm",))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(r["method"] for r in table):
        pts = sorted((r for r in table if r["method"] == method), key=lambda r: r["density"])
        ax.errorbar([100 * r["density"] for r in pts], [r["grad_norm_mean"] for r in pts],
                    yerr=[r["grad_norm_std"] for r in pts], label=method, color=COLORS.get(method), marker="o",
                    ms=3, capsize=2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("density (% of weights kept)")
    ax.set_ylabel("‖∂L/∂θ‖ at initialisation (256 training examples)")
    ax.set_title(f"Gradient norm at init — {subtitle(s)}", fontsize=9)
    ax.legend(fontsize=8, ncol=2)
    save(fig, table, "grad_norm_at_init", s)


if __name__ == "__main__":
    main()
