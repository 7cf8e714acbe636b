"""Figure: log10 input→output paths vs density per ticket finder (unit level)."""

from __future__ import annotations

from figtools import density_sweep, mean_std, parse, plot_vs_density


def main():
    s = parse(__doc__)
    table = mean_std(density_sweep(s), ("method", "density"), ("log10_paths",))
    plot_vs_density(table, "log10_paths", "log10 input→output paths (missing: layer collapse)", "Paths vs density",
                    s, "paths_vs_density")


if __name__ == "__main__":
    main()
