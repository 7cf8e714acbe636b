"""Figure: per-layer effective width and density of PHEW, SynFlow and SNIP tickets on a Vision Transformer.

Every Q, K, V, output and MLP projection is a layer of units; attention joins each output unit to
its V unit and to every Q and K unit of its head. Tickets only (no training): vit_tiny (4 blocks,
width 64, 4 heads, 7×7 patches) on the 5,000 bundled MNIST images, or on CIFAR-10 with --data-root.
"""

from __future__ import annotations

from fig_width_profiles import plot_widths, width_table
from figtools import parse

METHODS = ("phew", "synflow", "snip")


def main():
    s = parse(__doc__)
    dataset = "digits" if s.quick else ("cifar10" if s.data_root else "mnist5k")
    options = {"depth": 1, "width": 8, "heads": 2} if s.quick else {}
    density = 0.05
    table = width_table("vit_tiny", dataset, density, s, METHODS, **options)
    plot_widths(table, f"ViT width profiles at {density:.0%} — vit_tiny on {dataset}, {len(s.seeds)} seed(s), "
                "mean ± std", "vit_widths", s, METHODS)


if __name__ == "__main__":
    main()
