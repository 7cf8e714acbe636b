"""Figure: gradient norm of the masked network at initialisation vs density per ticket finder."""

from __future__ import annotations

from figtools import density_sweep, mean_std, parse, plot_vs_density


def main():
    s = parse(__doc__)
    table = mean_std(density_sweep(s), ("method", "density"), ("grad_norm",))
    plot_vs_density(table, "grad_norm", "‖∂L/∂θ‖ at initialisation (256 training examples)", "Gradient norm at init",
                    s, "grad_norm_at_init", logy=True)


if __name__ == "__main__":
    main()
