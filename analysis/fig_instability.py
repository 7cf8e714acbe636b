"""Figure: instability (error barrier on the linear path between two copies trained with
different data order) vs the rewind step k of IMP tickets (Frankle et al. 2020)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

import pathnet as pn
from figtools import imp_instability, parse, save


def main():
    s = parse(__doc__)
    if s.quick:
        model_name, dataset, levels, epochs, rewinds, alphas = "lenet300", "digits", 1, 1, ("0it", "2it"), 3
    elif s.data_root:
        model_name, dataset, levels, epochs, rewinds, alphas = ("resnet20", "cifar10", 3, 160,
                                                                ("0it", "100it", "500it", "2000it", "5ep"), 30)
    else:
        model_name, dataset, levels, epochs, rewinds, alphas = ("conv2", "mnist1d", 3, 8,
                                                                ("0it", "10it", "30it", "1ep", "2ep", "4ep"), 30)
    ds = pn.data.get(dataset, root=s.data_root)
    rows, curves = [], {}
    for rewind in rewinds:
        for seed in s.seeds:
            row = imp_instability(model_name, ds, levels=levels, rewind=rewind, seed=seed, epochs=epochs,
                                  alphas=alphas, runs=s.runs / "instability")
            rows.append(row)
            curves.setdefault(rewind, []).append(row["test_error"])
    table = []
    for rewind in rewinds:
        members = [r for r in rows if r["rewind"] == rewind]
        entry = {"rewind": rewind, "rewind_step": members[0]["rewind_step"], "density": members[0]["density"],
                 "n": len(members)}
        for key in ("barrier", "train_barrier"):
            xs = np.array([m[key] for m in members])
            entry[f"{key}_mean"], entry[f"{key}_std"] = float(xs.mean()), float(xs.std())
        table.append(entry)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    steps = [max(r["rewind_step"], 0.5) for r in table]
    for key, label in (("barrier", "test"), ("train_barrier", "train")):
        axes[0].errorbar(steps, [100 * r[f"{key}_mean"] for r in table], yerr=[100 * r[f"{key}_std"] for r in table],
                         marker="o", capsize=2, label=label)
    axes[0].axhline(2, color="grey", ls="--", lw=0.8, label="stable below 2%")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("rewind step k (iterations; k = 0 drawn at 0.5)")
    axes[0].set_ylabel("error barrier (%)")
    axes[0].legend(fontsize=8)
    for rewind in (rewinds[0], rewinds[-1]):
        err = 100 * np.array(curves[rewind])
        alphas_ = rows[0]["alphas"]
        axes[1].errorbar(alphas_, err.mean(0), yerr=err.std(0), capsize=2, label=f"k = {rewind}")
    axes[1].set_xlabel("α (interpolation between the two copies)")
    axes[1].set_ylabel("test error (%)")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Instability of IMP tickets at {100 * table[0]['density']:.0f}% — {model_name} on {dataset}, "
                 f"{len(s.seeds)} seed(s), mean ± std", fontsize=10)
    save(fig, table, "instability", s.out)


if __name__ == "__main__":
    main()
