"""Figure: effective density (weights on some input→output path) vs direct density per ticket finder."""

from __future__ import annotations

from figtools import density_sweep, mean_std, parse, plot_vs_density


def main():
    s = parse(__doc__)
    rows = density_sweep(s)
    for r in rows:
        r["effective_fraction"] = r["effective_density"] / r["density"]
    table = mean_std(rows, ("method", "density"), ("effective_density", "effective_fraction"))
    plot_vs_density(table, "effective_fraction", "effective density / density",
                    "Kept weights that lie on an input→output path", s, "effective_density", ylim=(0, 1.05))


if __name__ == "__main__":
    main()
