"""Every torchvision classification model through pathnet: to_dag → PHEW 5% → random 5% → analyze → compare.

Each model runs in its own subprocess with a time and memory limit, at the smallest input it accepts
from 64² up (224² for ViT, Swin and MaxViT, whose patch/window sizes fix it), with weights=None.
Writes one row per model to ``figures/zoo.csv`` and prints a table per family (for the README).

    OMP_WAIT_POLICY=PASSIVE python analysis/zoo.py [--timeout 90] [--memory-gb 8] [--models resnet18 vit_b_16]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

FIELDS = ["model", "family", "status", "input", "weights", "units", "edges", "layers", "to_dag_s", "phew_s",
          "random_s", "analyze_s", "compare_s", "seconds", "phew_density", "phew_effective", "random_effective",
          "log10_paths", "constant_weights", "peak_rss_gb", "error"]
FAMILIES = [("vit_", "ViT"), ("swin_v2", "Swin-v2"), ("swin", "Swin"), ("maxvit", "MaxViT"), ("convnext", "ConvNeXt"),
            ("shufflenet", "ShuffleNet-v2"), ("googlenet", "GoogLeNet"), ("inception", "Inception-v3"),
            ("resnext", "ResNeXt"), ("wide_resnet", "Wide-ResNet"), ("resnet", "ResNet"), ("vgg", "VGG"),
            ("densenet", "DenseNet"), ("mobilenet_v2", "MobileNet-v2"), ("mobilenet_v3", "MobileNet-v3"),
            ("efficientnet_v2", "EfficientNet-v2"), ("efficientnet", "EfficientNet"), ("mnasnet", "MNASNet"),
            ("regnet", "RegNet"), ("squeezenet", "SqueezeNet"), ("alexnet", "AlexNet")]
SIZES = (64, 96, 128, 160, 224, 299)


def family(name: str) -> str:
    return next(f for prefix, f in FAMILIES if name.startswith(prefix))


def run_one(name: str) -> dict:
    """The whole pipeline for one model (runs inside the child process); returns its row."""
    import torch
    from torchvision import models as tvm

    import pathnet as pn
    from pathnet.errors import GraphError

    torch.set_num_threads(1)
    kw = {"init_weights": False} if name in ("googlenet", "inception_v3") else {}
    model = tvm.get_model(name, weights=None, **kw)
    row = {"model": name, "family": family(name)}
    sizes = (224,) if name.startswith(("vit_", "swin", "maxvit")) else SIZES
    t0 = time.perf_counter()
    for size in sizes:
        shape = (3, size, size)
        try:
            t = time.perf_counter()
            dag = pn.to_dag(model, shape)
            row["to_dag_s"] = time.perf_counter() - t
            break
        except GraphError as e:
            if "running" not in str(e) or size == sizes[-1]:
                raise
    row.update(input=size, weights=dag.num_weights, units=dag.num_units, edges=dag.num_edges, layers=len(dag.layers),
               constant_weights=sum(pn.prunable_weights(model)[k].numel() for k in dag.constant_params))
    t = time.perf_counter()
    phew = pn.prune(model, "phew", 0.05, input_shape=shape, seed=0)
    row["phew_s"] = time.perf_counter() - t
    t = time.perf_counter()
    rand = pn.prune(model, "random", 0.05, seed=0)
    row["random_s"] = time.perf_counter() - t
    t = time.perf_counter()
    rep = pn.analyze(phew, dag=dag)
    row["analyze_s"] = time.perf_counter() - t
    t = time.perf_counter()
    cmp = pn.compare(phew, rand, dag=dag)
    row["compare_s"] = time.perf_counter() - t
    rep_r = pn.analyze(rand, dag=dag)
    row.update(phew_density=phew.density, phew_effective=rep.effective_density / rep.density,
               random_effective=rep_r.effective_density / rep_r.density, log10_paths=rep.log10_paths,
               seconds=time.perf_counter() - t0, status="passed", jaccard=cmp.jaccard)
    row.pop("jaccard")
    return row


def child(name: str, memory_gb: float) -> None:
    limit = int(memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        row = run_one(name)
    except MemoryError:
        row = {"model": name, "family": family(name), "status": "memory", "error": f"over {memory_gb} GB"}
    except Exception as e:  # noqa: BLE001 - the row records what failed
        row = {"model": name, "family": family(name), "status": "failed",
               "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    row["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("ZOO-ROW " + json.dumps(row), flush=True)


def fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else ("" if v is None else str(v))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="default: every torchvision classification model")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds per model")
    parser.add_argument("--memory-gb", type=float, default=8.0, help="address-space limit per model")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "figures" / "zoo.csv"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.memory_gb)
    from torchvision import models as tvm

    names = args.models or tvm.list_models(module=tvm)
    rows = []
    for name in names:
        t = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, __file__, "--child", name, "--memory-gb", str(args.memory_gb)],
                                  capture_output=True, text=True, timeout=args.timeout,
                                  env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("ZOO-ROW ")), None)
            row = json.loads(line[8:]) if line else {
                "model": name, "family": family(name), "status": "crashed",
                "error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
        except subprocess.TimeoutExpired:
            row = {"model": name, "family": family(name), "status": "timeout", "error": f"over {args.timeout:.0f} s"}
        row.setdefault("seconds", time.perf_counter() - t)
        rows.append(row)
        print(f"{name:24s} {row['status']:8s} {row['seconds']:7.1f} s  {row.get('error') or ''}", file=sys.stderr,
              flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for row in rows:
            w.writerow({k: fmt(row.get(k)) for k in FIELDS})
    print("| family | models | passed | other (status) | seconds (min–max) |\n|---|---|---|---|---|")
    for fam in dict.fromkeys(r["family"] for r in rows):
        rs = [r for r in rows if r["family"] == fam]
        ok = [r for r in rs if r["status"] == "passed"]
        other = ", ".join(f"{r['model']} ({r['status']})" for r in rs if r["status"] != "passed")
        secs = [r["seconds"] for r in rs]
        print(f"| {fam} | {len(rs)} | {len(ok)} | {other or '–'} | {min(secs):.1f}–{max(secs):.1f} |")


if __name__ == "__main__":
    main()
