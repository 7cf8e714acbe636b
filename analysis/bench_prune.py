"""Benchmark: wall time of every ticket finder on VGG-16 (CIFAR shapes), one CPU thread.

Data-dependent methods score on the offline `synthetic` set at CIFAR shapes (their defaults:
128 samples for SNIP and the gradient mixes, 10 per class for GraSP); SynFlow runs its 100
rounds in float64. Also prints, for --collapse densities, which methods prune some layer
entirely (layer collapse, SynFlow's headline contrast). The same-run baseline is magnitude
pruning (one global top-k over |θ|).

    OMP_WAIT_POLICY=PASSIVE python analysis/bench_prune.py [--density 0.05] [--collapse 0.001 0.0001]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import pathnet as pn  # noqa: E402
from benchtools import best_of  # noqa: E402

METHODS = ["magnitude", "random", "erk", "smart_ratio", "phew", "snip", "grasp", "synflow", "magnitude_gradient"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--collapse", type=float, nargs="*", default=[0.001, 0.0001])
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = pn.models.get(args.model, seed=0)
    data = pn.data.get("synthetic")
    shape = data.input_shape
    run = lambda method, d: pn.prune(model, method, d, data=data, input_shape=shape, seed=0)  # noqa: E731
    run("phew", 0.01)  # JIT warm-up
    base, _ = best_of(lambda: run("magnitude", args.density), 3)
    print(f"{args.model} at density {args.density}, one thread\n\n{'method':20} {'seconds':>8} {'× magnitude':>12}")
    for method in METHODS:
        t, mask = best_of(lambda: run(method, args.density), 1)
        assert mask.num_kept == round(args.density * mask.num_total)
        print(f"{method:20} {t:>8.2f} {t / base:>12.1f}")
    for d in args.collapse:
        print(f"\nlayer collapse at density {d}:")
        for method in METHODS:
            mask = run(method, d)
            empty = [k for k, m in mask.items() if not m.any()]
            report = pn.analyze(mask, model, shape)
            print(f"  {method:20} {'COLLAPSE' if report.layer_collapse else 'paths  ':9} "
                  f"log10 paths {report.log10_paths:8.2f}  empty layers: {len(empty)}")


if __name__ == "__main__":
    main()
