"""Benchmark: analyze() and compare() on torchvision's ResNet-50 (~25M weights) at density 0.1.

Prints wall times (best of --repeat, after the JIT warm-up) of ``to_dag`` (once per architecture),
``analyze`` (paths forward and backward, effective mask, per-layer widths; the DAG prebuilt) and
``compare`` (weight, effective, unit and path measures), next to one numpy pass over the mask,
the memory-bound floor measured in the same run.

    OMP_WAIT_POLICY=PASSIVE python analysis/bench_metrics.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

import pathnet as pn  # noqa: E402
from benchtools import best_of  # noqa: E402
from pathnet.similarity import random_like  # noqa: E402


def bernoulli_mask(model, density, seed):
    g = torch.Generator().manual_seed(seed)
    return pn.Mask({k: torch.rand(w.shape, generator=g) < density for k, w in pn.prunable_weights(model).items()})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--density", type=float, default=0.1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = torchvision.models.resnet50(weights=None)
    a, b = bernoulli_mask(model, args.density, 0), random_like(bernoulli_mask(model, args.density, 1), 2)
    pn.analyze(pn.Mask.ones(pn.models.get("lenet300")), pn.models.get("lenet300"), (1, 28, 28))  # JIT warm-up

    t_dag, dag = best_of(lambda: pn.to_dag(model, (3, 224, 224)), 1)
    t_floor, _ = best_of(lambda: sum(int(np.count_nonzero(m.numpy())) for m in a.values()), args.repeat)
    t_analyze, rep = best_of(lambda: pn.analyze(a, dag=dag), args.repeat)
    t_compare, cmp = best_of(lambda: pn.compare(a, b, dag=dag), args.repeat)
    print(f"ResNet-50: {a.num_total:,} weights, density {a.density:.3f}; {dag!r}")
    print(f"log10 paths {rep.log10_paths:.2f}, effective density {rep.effective_density:.4f}, "
          f"path jaccard {cmp.path_jaccard:.3g}\n")
    print(f"{'step':34} {'seconds':>8} {'× floor':>8}")
    for name, t in [("numpy pass over the mask (floor)", t_floor), ("to_dag (once per architecture)", t_dag),
                    ("analyze (DAG prebuilt)", t_analyze), ("compare (DAG prebuilt)", t_compare)]:
        print(f"{name:34} {t:>8.3f} {t / t_floor:>8.0f}")


if __name__ == "__main__":
    main()
