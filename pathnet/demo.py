"""`pathnet demo`: the toolkit end to end on offline data, in a few minutes on a laptop CPU.

Two networks — LeNet-300-100 on the 5,000 bundled MNIST images and Conv-2 on MNIST-1D — each get
PHEW, SynFlow, SNIP, GraSP, random and magnitude tickets at 5%. Every ticket is analysed (paths,
effective density, bottleneck), trained briefly, and compared with a one-shot lottery ticket
(the magnitude mask of the trained dense network, i.e. IMP's first level pruned to 5% at once)
by chance-corrected Jaccard. One table is printed; a CSV, a JSON and a PNG summary go to the run
directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import data as datasets, models
from .experiment import Cell, run_cell
from .mask import Mask
from .errors import check_density, check_int, check_seed
from .mask import prunable_weights as pn_weights
from .pruning import METHODS as _REGISTRY, budget, prune
from .run import check_run_dir
from .training.loop import resolve_device
from .similarity import compare
from .training import train
from .io import atomic_write

__all__ = ["run_demo"]

METHODS = ("phew", "synflow", "snip", "grasp", "random", "magnitude")
NETWORKS = (("lenet300", "mnist5k", 5), ("conv2", "mnist1d", 8))  # model, data, epochs
COLUMNS = ("network", "method", "test_accuracy", "log10_paths", "effective_density", "bottleneck_width",
           "jaccard_vs_lt")


def _lottery_reference(model_name: str, dataset: str, density: float, epochs: int, device: str, seed: int) -> Mask:
    """The one-shot lottery-ticket mask: magnitude pruning of the trained dense network."""
    ds = datasets.get(dataset)
    model = models.get(model_name, num_classes=ds.num_classes, input_shape=ds.input_shape, seed=seed)
    train(model, None, ds, epochs=epochs, seed=seed, device=device, progress=False)
    return prune(model, "magnitude", density, seed=seed)


def run_demo(out_dir: str = "runs/demo", *, density: float = 0.05, epochs: int | None = None, device: str = "auto",
             seed: int = 0, networks=NETWORKS, methods=METHODS, progress: bool = True) -> list[dict]:
    """Run the demo into `out_dir`; return its rows. Every argument is checked before any work."""
    check_density(density)
    check_seed(seed)
    if epochs is not None:
        check_int("epochs", epochs, min=1)
    resolve_device(device)
    out = check_run_dir(out_dir)
    for model_name, dataset, default_epochs in networks:
        models.MODELS[model_name]
        datasets.DATASETS[dataset]
        check_int("epochs", default_epochs, min=1)
    for method in methods:
        _REGISTRY[method]
    for model_name, dataset, _ in networks:  # the budget: round(density · N) ≥ 1 on every network
        ds = datasets.get(dataset)
        budget(sum(w.numel() for w in pn_weights(models.get(model_name, num_classes=ds.num_classes,
                                                                   input_shape=ds.input_shape)).values()), density)
    rows = []
    for model_name, dataset, default_epochs in networks:
        n_epochs = epochs or default_epochs
        reference = _lottery_reference(model_name, dataset, density, n_epochs, device, seed)
        for method in methods:
            if progress:
                print(f"  {model_name} on {dataset}: {method} …", flush=True)
            row = run_cell(Cell(model_name, dataset, method, density, seed, n_epochs), device=device,
                           mask_dir=out / "masks")
            row["network"] = f"{model_name}/{dataset}"
            row["jaccard_vs_lt"] = compare(Mask.load(row["mask_path"]), reference).chance_jaccard
            rows.append(row)
    csv = "\n".join([",".join(COLUMNS)] + [",".join(str(r[c]) for c in COLUMNS) for r in rows]) + "\n"
    atomic_write(out / "demo.csv", lambda tmp: Path(tmp).write_text(csv))
    atomic_write(out / "demo.json", lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=1, default=str)))
    _plot(rows, out / "demo.png", density)
    return rows


def table(rows: list[dict]) -> str:
    """The demo's rows as a text table."""
    head = ("network", "method", "test acc.", "log10 paths", "eff. density", "bottleneck", "χ-Jaccard vs LT")
    body = [(r["network"], r["method"], f"{r['test_accuracy']:.3f}", f"{r['log10_paths']:.2f}",
             f"{r['effective_density']:.4f}", str(r["bottleneck_width"]), f"{r['jaccard_vs_lt']:+.3f}") for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    fmt = lambda x: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths)))  # noqa
    return "\n".join([fmt(head), "-" * len(fmt(head))] + [fmt(x) for x in body])


def _plot(rows: list[dict], path: Path, density: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    networks = list(dict.fromkeys(r["network"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    width = 0.8 / len(networks)
    for i, net in enumerate(networks):
        by = {r["method"]: r for r in rows if r["network"] == net}
        x = np.arange(len(methods)) + i * width
        axes[0].bar(x, [by[m]["test_accuracy"] for m in methods], width, label=net)
        axes[1].bar(x, [max(by[m]["log10_paths"], 0) if np.isfinite(by[m]["log10_paths"]) else 0 for m in methods],
                    width, label=net)
    for ax, title in zip(axes[:2], ("test accuracy", "log10 input→output paths")):
        ax.set_xticks(np.arange(len(methods)) + width * (len(networks) - 1) / 2, methods, rotation=30)
        ax.set_title(f"{title} at {density:.0%} density")
        ax.legend(fontsize=8)
    first = [r for r in rows if r["network"] == networks[0]]
    for r in first:
        widths = [layer["effective_width"] / layer["units"] for layer in r["layers"]]
        axes[2].plot(range(1, len(widths) + 1), widths, marker="o", label=r["method"])
    axes[2].set_xticks(range(1, len(first[0]["layers"]) + 1))
    axes[2].set_title(f"effective width per layer ({networks[0]})")
    axes[2].set_xlabel("layer")
    axes[2].set_ylabel("units on some input→output path / units")
    axes[2].set_ylim(0, 1.05)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
