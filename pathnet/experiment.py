"""One experiment cell — prune → analyze → train — as a value that can be hashed, run anywhere
(locally, on a Ray worker, on a GPU) and turned into one row of a results table.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from . import data as datasets, models
from .hparams import run_name
from .mask import Mask, prunable_weights
from .metrics import analyze
from .pruning import prune
from .training import imp, train
from .training.loop import resolve_device, versions

__all__ = ["Cell", "run_cell", "grad_norm", "ROW_COLUMNS"]

#: the scalar columns of a result row, in table order
ROW_COLUMNS = ("model", "dataset", "method", "density", "seed", "epochs", "kept", "test_accuracy", "log10_paths",
               "effective_density", "bottleneck_width", "layer_collapse", "grad_norm", "prune_seconds",
               "train_seconds", "device", "host", "node_id", "seconds", "retries")


@dataclass(frozen=True)
class Cell:
    """(model, dataset, method, density, seed) plus training length and pruning options.

    `method` is any name of pathnet.METHODS, or "imp" (iterative magnitude pruning with
    rewinding, ≤ 20% per level, ending exactly at `density`).
    """

    model: str
    dataset: str
    method: str
    density: float
    seed: int = 0
    epochs: int | None = None  # None: the dataset's default recipe
    options: dict[str, Any] = field(default_factory=dict)  # extra pruning (or IMP) options
    train: dict[str, Any] = field(default_factory=dict)  # training overrides (a sweep's [train] table)

    def key(self) -> str:
        """A stable name for the cell's result file: a hash of the whole cell, training overrides included
        (a cell without them keeps the name it had before cells carried them)."""
        values = asdict(self)
        if not values["train"]:
            values.pop("train")
        return f"{self.model}-{self.dataset}-{self.method}-{self.density:g}-s{self.seed}-{run_name(values)}"


def grad_norm(model: torch.nn.Module, mask: Mask, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """‖∂L/∂θ‖ of the masked network at its current weights (gradients of pruned weights dropped)."""
    net = copy.deepcopy(model)
    mask.apply(net)
    net.train()
    x, y = batch
    p = next(net.parameters())
    loss = F.cross_entropy(net(x.to(p.device)), y.to(p.device))
    weights = prunable_weights(net)
    grads = torch.autograd.grad(loss, list(weights.values()))
    return float(torch.sqrt(sum(((g * mask[k].to(g.device)) ** 2).sum() for k, g in zip(weights, grads))))


def run_cell(cell: Cell, *, device: str = "auto", data_root: str | None = None, progress: bool = False,
             train_overrides: dict[str, Any] | None = None, mask_dir: str | os.PathLike | None = None,
             deterministic: bool = False, run_dir: str | os.PathLike | None = None, callbacks: Sequence = (),
             checkpoint_every: str = "1ep") -> dict[str, Any]:
    """Run one cell and return its row: the scalar ROW_COLUMNS plus per-layer structure, the
    training history, hyperparameters, mask provenance and versions. With `mask_dir` the mask is
    saved there as ``<cell key>.safetensors`` (its path in the row's ``mask_path``). `deterministic` is
    passed to training (and recorded in the row).

    With `run_dir`, training (or IMP) checkpoints there every `checkpoint_every` steps and resumes from
    what it finds there, to the same result as an uninterrupted run; `callbacks` go to training
    (pathnet.training.loop.Callback; for IMP, to every level's training)."""
    ds = datasets.get(cell.dataset, root=data_root)
    build = lambda: models.get(cell.model, num_classes=ds.num_classes, input_shape=ds.input_shape,  # noqa: E731
                               seed=cell.seed)
    model = build()
    overrides = {**cell.train, **(train_overrides or {})}
    if cell.epochs is not None:
        overrides["epochs"] = cell.epochs
    training = ({"run_dir": run_dir, "checkpoint_every": checkpoint_every} if run_dir is not None else {})
    if callbacks:
        training["callbacks"] = tuple(callbacks)
    t0 = time.perf_counter()
    if cell.method == "imp":  # L levels of at most 20% each, ending exactly at the density
        levels = max(1, math.ceil(math.log(cell.density) / math.log(0.8)))
        result = imp(model, ds, levels=levels, rate=1 - cell.density ** (1 / levels), seed=cell.seed, device=device,
                     progress=progress, deterministic=deterministic, **{**cell.options, **overrides}, **training)
        mask, trained, train_seconds = result.masks[-1], result.results[-1], None
        at_init = build()
        at_init.load_state_dict(result.rewind_state)
    else:
        mask = prune(model, cell.method, cell.density, data=ds, input_shape=ds.input_shape, seed=cell.seed,
                     **cell.options)
        at_init = copy.deepcopy(model)
    prune_seconds = time.perf_counter() - t0
    mask_path = str(mask.save(Path(mask_dir) / f"{cell.key()}.safetensors")) if mask_dir is not None else None
    report = analyze(mask, at_init, ds.input_shape)
    norm = grad_norm(at_init.to(resolve_device(device)), mask, datasets.sample_batches(ds.train, 256, seed=cell.seed)[0])
    if cell.method != "imp":
        t1 = time.perf_counter()
        trained = train(model, mask, ds, seed=cell.seed, device=device, progress=progress,
                        deterministic=deterministic, **training, **overrides).to_dict()
        train_seconds = time.perf_counter() - t1
    row = {"model": cell.model, "dataset": cell.dataset, "method": cell.method, "density": cell.density,
           "seed": cell.seed, "epochs": trained["hparams"]["duration"], "kept": mask.num_kept,
           "test_accuracy": trained["test_accuracy"], "log10_paths": report.log10_paths,
           "effective_density": report.effective_density, "bottleneck_width": report.bottleneck_width,
           "layer_collapse": report.layer_collapse, "grad_norm": norm, "prune_seconds": round(prune_seconds, 3),
           "train_seconds": round(train_seconds, 3) if train_seconds is not None else None,
           "device": trained["device"]}
    row["layers"] = [{"name": r.name, "density": r.density, "effective_density": r.effective_density,
                      "width": r.width, "effective_width": r.effective_width, "units": r.units}
                     for r in report.layers if r.param is not None]
    row.update(mask_path=mask_path, history=trained["history"], hparams=trained["hparams"], mask_meta=dict(mask.meta),
               deterministic=deterministic, versions=versions(), cell=asdict(cell))
    return row
