"""Figure: test accuracy vs density for every ticket finder and IMP with rewinding."""

from __future__ import annotations

from figtools import density_sweep, imp_runs, mean_std, parse, plot_vs_density


def main():
    s = parse(__doc__)
    rows = density_sweep(s)
    for run in imp_runs(s):  # one IMP run per seed gives every density 0.8^L on its way down
        for level, (mask, acc) in enumerate(zip(run.masks, run.accuracy)):
            if level and mask.density >= min(s.densities) * 0.99:
                rows.append({"method": "imp", "density": round(mask.density, 6), "test_accuracy": acc})
    table = mean_std(rows, ("method", "density"), ("test_accuracy",))
    plot_vs_density(table, "test_accuracy", "test accuracy", "Accuracy vs density", s, "accuracy_vs_density",
                    bold=("phew", "imp"))


if __name__ == "__main__":
    main()
