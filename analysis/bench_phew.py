"""Benchmark: PHEW ticket wall time on VGG-16 and ResNet-20 (CIFAR shapes), one CPU thread.

Prints, per model and density, the end-to-end time of ``pn.prune(model, "phew", ...)`` after the
JIT warm-up (to_dag + flat arrays + walks), the walk time alone, µs per kept weight (growth
should be linear), a same-run baseline (a global magnitude top-k over the same weights: the
cheapest ticket there is) and, where ../shared/reference/phew_reference.json is present, the
authors' reference time measured on this kind of machine.

    OMP_WAIT_POLICY=PASSIVE python analysis/bench_phew.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import pathnet as pn  # noqa: E402
from benchtools import best_of  # noqa: E402
from pathnet.pruning.phew import phew_mask  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "phew_reference.json"


def magnitude_topk(model, density):
    w = np.concatenate([p.detach().abs().reshape(-1).numpy() for p in pn.prunable_weights(model).values()])
    k = int(round(density * w.size))
    return np.argpartition(-w, k - 1)[:k]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    reference = {}
    if REFERENCE.is_file():
        for r in json.loads(REFERENCE.read_text())["runs"]:
            reference[(r["model"], r["density_pct"])] = r["t_generate_probability_s"] + r["t_phew_masks_s"]

    t = time.perf_counter()
    phew_mask(pn.to_dag(pn.models.get("lenet300", seed=0), (1, 28, 28)), 0.01)
    print(f"JIT warm-up (numba cache load or compile): {time.perf_counter() - t:.2f} s\n")

    print(f"{'model':9} {'density':>7} {'kept':>9} {'prune s':>8} {'walks s':>8} {'µs/kept':>8} "
          f"{'top-k s':>8} {'×top-k':>7} {'ref s':>7} {'speed-up':>9}")
    for name in ("resnet20", "vgg16"):
        model = pn.models.get(name, seed=0)
        dag = pn.to_dag(model, (3, 32, 32))
        for pct in (10, 5, 2, 1):
            d = pct / 100
            total, mask = best_of(lambda: pn.prune(model, "phew", d, input_shape=(3, 32, 32), seed=0), args.repeat)
            walks, _ = best_of(lambda: phew_mask(dag, d, seed=0), args.repeat)
            topk, _ = best_of(lambda: magnitude_topk(model, d), args.repeat)
            ref = reference.get((name, float(pct)))
            print(f"{name:9} {pct:>6}% {mask.num_kept:>9,} {total:>8.3f} {walks:>8.3f} "
                  f"{1e6 * total / mask.num_kept:>8.2f} {topk:>8.3f} {total / topk:>7.1f} "
                  f"{ref if ref else float('nan'):>7.1f} {ref / total if ref else float('nan'):>8.0f}×")


if __name__ == "__main__":
    main()
