"""Benchmark: compacting tickets into smaller dense networks — parameters, FLOPs and real CPU time.

For PHEW, SynFlow, SNIP, magnitude and random tickets at 10/5/2/1% on VGG-16 and ResNet-20
(CIFAR shapes; `--resnet50` adds torchvision's ResNet-50 at 224²): parameters and multiply-adds per
example before/after compaction, and CPU inference time of the masked dense model vs the compacted
one (batch 1 and 64, median of --repeat, one torch thread, OMP_WAIT_POLICY=PASSIVE), measured in the
same process. The outputs of the two models are checked to agree first. SNIP scores on CIFAR-10 with
--data-root, else on Gaussian-noise images (its column says which). Writes figures/compaction.png and
.csv (speed-up against density per method) and prints the table.

    python analysis/bench_compact.py [--quick] [--resnet50] [--repeat 5] [--data-root ~/data]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import pathnet as pn  # noqa: E402
from pathnet.io import atomic_write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("phew", "synflow", "snip", "magnitude", "random")
COLORS = {"phew": "C0", "synflow": "C1", "snip": "C2", "magnitude": "C4", "random": "C5"}


def timed(model, x, repeat: int) -> float:
    """Median wall time of a forward pass (one warm-up first)."""
    with torch.no_grad():
        model(x)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def scoring_data(shape, data_root):
    if data_root:
        return pn.data.get("cifar10", root=data_root), "cifar10"
    g = torch.Generator().manual_seed(0)
    noise = torch.utils.data.TensorDataset(torch.randn(256, *shape, generator=g), torch.randint(0, 10, (256,), generator=g))
    return pn.data.Dataset("noise", noise, noise, tuple(shape), 10), "noise"


def run(models, densities, methods, batches, repeat, data_root) -> list[dict]:
    import copy

    torch.set_num_threads(1)
    rows = []
    for name, build, shape in models:
        model = build().eval()
        data, data_name = scoring_data(shape, data_root)
        inputs = {b: torch.randn(b, *shape) for b in batches}
        dense_t = {b: timed(model, inputs[b], repeat) for b in batches}
        for method in methods:
            for d in densities:
                mask = pn.prune(model, method, d, input_shape=shape, data=data, seed=0)
                masked = copy.deepcopy(model)
                mask.apply(masked)
                if pn.analyze(mask, model, shape).layer_collapse:  # no path: nothing to compact, nothing to time
                    rows.append({"model": name, "method": method, "density": d, "collapsed": True})
                    print(f"{name:9s} {method:9s} {d:5.0%}  layer collapse: no input→output path", flush=True)
                    continue
                small, _, rep = pn.compact(model, mask, shape)
                small.eval()
                with torch.no_grad():
                    err = float((masked(inputs[batches[0]]) - small(inputs[batches[0]])).abs().max())
                row = {"model": name, "method": method, "density": d, "collapsed": False,
                       "scored_on": data_name if method == "snip" else "-", "params_before": rep.params_before, "params_after": rep.params_after,
                       "flops_before": rep.flops_before, "flops_after": rep.flops_after,
                       "param_ratio": rep.param_ratio, "flop_ratio": rep.flop_ratio, "max_abs_diff": err,
                       "units_folded": rep.units_folded, "units_kept_constant": rep.units_kept_constant}
                for b in batches:
                    t_masked, t_small = timed(masked, inputs[b], repeat), timed(small, inputs[b], repeat)
                    row.update({f"dense_ms_b{b}": dense_t[b] * 1e3, f"masked_ms_b{b}": t_masked * 1e3,
                                f"compact_ms_b{b}": t_small * 1e3, f"speedup_b{b}": t_masked / t_small})
                row["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
                rows.append(row)
                print(f"{name:9s} {method:9s} {d:5.0%}  params ×{rep.param_ratio:.3f}  FLOPs ×{rep.flop_ratio:.3f}  "
                      + "  ".join(f"b{b}: {row[f'masked_ms_b{b}']:.1f}→{row[f'compact_ms_b{b}']:.1f} ms "
                                  f"({row[f'speedup_b{b}']:.2f}×)" for b in batches)
                      + f"  |Δ|≤{err:.1e}", flush=True)
    return rows


def plot(rows, batches, out: Path) -> None:
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(len(models), len(batches) + 1, figsize=(4.2 * (len(batches) + 1), 3.4 * len(models)),
                             squeeze=False)
    for i, model in enumerate(models):
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((r for r in rows if r["model"] == model and r["method"] == method and not r["collapsed"]),
                         key=lambda r: r["density"])
            x = [r["density"] for r in pts]
            axes[i, 0].plot(x, [1 / r["flop_ratio"] for r in pts], "o-", color=COLORS[method], label=method, ms=3)
            for j, b in enumerate(batches, 1):
                axes[i, j].plot(x, [r[f"speedup_b{b}"] for r in pts], "o-", color=COLORS[method], label=method, ms=3)
        axes[i, 0].set_ylabel(f"{model}\nFLOP reduction (×)")
        for j, b in enumerate(batches, 1):
            axes[i, j].set_ylabel(f"CPU speed-up vs masked (×), batch {b}")
            axes[i, j].axhline(1.0, color="grey", lw=0.8)
        for ax in axes[i]:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("density")
            ax.legend(fontsize=7)
    fig.suptitle("Compaction: dropping the units no input→output path uses (same function, smaller dense net); "
                 "one CPU thread", fontsize=9)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "compaction.png", lambda tmp: fig.savefig(tmp, dpi=130, format="png"))
    keys = list(next(r for r in rows if not r["collapsed"]))
    text = "\n".join([",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in rows]) + "\n"
    atomic_write(out / "compaction.csv", lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {out / 'compaction.png'} and .csv")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny models, seconds (for tests)")
    p.add_argument("--resnet50", action="store_true", help="add torchvision ResNet-50 at 224²")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--data-root", help="score SNIP on CIFAR-10 from this folder (default: noise images)")
    p.add_argument("--out", default=str(ROOT / "figures"))
    p.add_argument("--runs", help=argparse.SUPPRESS)  # accepted like the figure scripts'
    a = p.parse_args()
    if a.quick:
        models = [("conv2", lambda: pn.models.get("conv2", seed=0), (3, 32, 32)),
                  ("resnet20", lambda: pn.models.get("resnet20", seed=0, width=8), (3, 32, 32))]
        rows = run(models, (0.1, 0.02), ("phew", "random"), (1, 8), 2, None)
        return plot(rows, (1, 8), Path(a.out))
    models = [("vgg16", lambda: pn.models.get("vgg16", seed=0), (3, 32, 32)),
              ("resnet20", lambda: pn.models.get("resnet20", seed=0), (3, 32, 32))]
    if a.resnet50:
        import torchvision

        models.append(("resnet50", lambda: torchvision.models.resnet50(weights=None), (3, 224, 224)))
    rows = run(models, (0.1, 0.05, 0.02, 0.01), METHODS, (1, 64), a.repeat, a.data_root)
    plot(rows, (1, 64), Path(a.out))


if __name__ == "__main__":
    main()
