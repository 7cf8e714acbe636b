"""Figure: pathnet's PHEW and metric timings next to the authors' reference code (same kind of
2-core machine, one thread; reference numbers from analysis/reference/phew_reference.json)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import pathnet as pn
from figtools import parse, save

REFERENCE = Path(__file__).resolve().parent / "reference" / "phew_reference.json"


def best_time(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    s = parse(__doc__)
    reference = {(r["model"], r["density_pct"]): r["t_generate_probability_s"] + r["t_phew_masks_s"]
                 for r in json.loads(REFERENCE.read_text())["runs"]}
    cases = [("resnet20", 10.0)] if s.quick else [(m, d) for m in ("resnet20", "vgg16") for d in (1.0, 2.0, 5.0, 10.0)]
    pn.prune(pn.models.get("lenet300"), "phew", 0.01, input_shape=(1, 28, 28))  # JIT warm-up
    rows = []
    for model_name, pct in cases:
        model = pn.models.get(model_name, seed=0)
        mask = pn.prune(model, "phew", pct / 100, input_shape=(3, 32, 32))
        t_phew = best_time(lambda: pn.prune(model, "phew", pct / 100, input_shape=(3, 32, 32)), 1 if s.quick else 3)
        t_analyze = best_time(lambda: pn.analyze(mask, model, (3, 32, 32)), 1 if s.quick else 3)
        ref = reference.get((model_name, pct))
        rows.append({"model": model_name, "density_pct": pct, "kept": mask.num_kept, "pathnet_phew_s": t_phew,
                     "pathnet_analyze_s": t_analyze, "reference_phew_s": ref if ref else float("nan"),
                     "speedup": ref / t_phew if ref else float("nan")})
    fig, ax = plt.subplots(figsize=(9, 4.3))
    x = np.arange(len(rows))
    ax.bar(x - 0.27, [r["reference_phew_s"] for r in rows], 0.27, label="PHEW, authors' code", color="grey")
    ax.bar(x, [r["pathnet_phew_s"] for r in rows], 0.27, label="PHEW, pathnet (to_dag + walks)", color="C0")
    ax.bar(x + 0.27, [r["pathnet_analyze_s"] for r in rows], 0.27, label="pathnet analyze (paths, effective mask)",
           color="C2")
    for xi, r in zip(x, rows):
        if np.isfinite(r["speedup"]):
            ax.text(xi, r["pathnet_phew_s"] * 1.3, f"{r['speedup']:.0f}×", ha="center", fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(x, [f"{r['model']}\n{r['density_pct']:g}%" for r in rows], fontsize=8)
    ax.set_ylabel("wall seconds (one thread)")
    ax.set_title("Ticket and metric timings (reference VGG-16 at 2% and 5% ran with the other core busy)",
                 fontsize=9)
    ax.legend(fontsize=8)
    save(fig, rows, "benchmarks", s.out)


if __name__ == "__main__":
    main()
