"""Benchmark: to_dag, PHEW 1/5/10%, random, analyze and compare on large torchvision models.

For each model (in its own process, so peak memory is the model's own): seconds per stage, seconds
per million weights, the ratio to one warm numpy read of the model's weights measured in the same
process (``sum(w.sum() for w in weights)``), and peak RSS after each stage. One torch thread,
OMP_WAIT_POLICY=PASSIVE, Numba JIT warm (a tiny model runs first).

    python analysis/bench_scale.py [--models resnet18 resnet50 wide_resnet50_2 vgg16 vit_b_16] [--size 224]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def child(name: str, size: int) -> None:
    import torch
    from torchvision import models as tvm

    import pathnet as pn

    torch.set_num_threads(1)
    warm = pn.models.get("lenet300", seed=0)
    pn.analyze(pn.prune(warm, "phew", 0.1, input_shape=(1, 28, 28)), warm, (1, 28, 28))  # JIT warm-up: walks,
    pn.prune(warm, "phew", 0.3, input_shape=(1, 28, 28), patience=1)  # bridges,
    pn.prune(warm, "random", 0.1)  # the partial shuffle
    model = tvm.get_model(name, weights=None)
    weights = [w.detach().numpy() for w in pn.prunable_weights(model).values()]
    sum(float(w.sum()) for w in weights)
    t = time.perf_counter()
    sum(float(w.sum()) for w in weights)
    floor = time.perf_counter() - t
    n = sum(w.size for w in weights)
    shape = (3, size, size)
    rows = []

    def stage(label, fn):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        rows.append({"stage": label, "seconds": dt, "s_per_M": dt / (n / 1e6), "x_floor": dt / floor,
                     "peak_rss_gb": peak_gb()})
        return out

    stage("to_dag", lambda: pn.to_dag(model, shape))
    masks = {}
    for d in (0.01, 0.05, 0.1):
        masks[d] = stage(f"phew {d:.0%}", lambda d=d: pn.prune(model, "phew", d, input_shape=shape, seed=0))
    rand = stage("random 5%", lambda: pn.prune(model, "random", 0.05, seed=0))
    stage("analyze (API)", lambda: pn.analyze(masks[0.05], model, shape))
    stage("compare (API)", lambda: pn.compare(masks[0.05], rand, model, shape))
    print("BENCH " + json.dumps({"model": name, "weights": n, "floor_s": floor, "edges": pn.to_dag(model, shape)
                                 .num_edges, "rows": rows}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet18", "resnet50", "wide_resnet50_2", "vgg16", "vit_b_16"])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a.child, a.size)
    print("one torch thread, OMP_WAIT_POLICY=PASSIVE; ratios are to one numpy read of the weights (same process)")
    print("| model | weights | edges | stage | seconds | s per M weights | × numpy read | peak RSS GB |")
    print("|---|---|---|---|---|---|---|---|")
    for name in a.models:
        proc = subprocess.run([sys.executable, __file__, "--child", name, "--size", str(a.size)], capture_output=True,
                              text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")), None)
        if line is None:
            print(f"| {name} | – | – | failed | {(proc.stderr.strip().splitlines() or ['?'])[-1][:120]} | | | |")
            continue
        r = json.loads(line[6:])
        for i, row in enumerate(r["rows"]):
            head = (f"| {name} | {r['weights'] / 1e6:.1f}M | {r['edges'] / 1e6:.1f}M" if i == 0 else "| | |")
            print(f"{head} | {row['stage']} | {row['seconds']:.2f} | {row['s_per_M']:.3f} | {row['x_floor']:.0f} | "
                  f"{row['peak_rss_gb']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
