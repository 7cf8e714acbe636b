"""Sweeps: a grid of cells (model × dataset × method × density × seed) run locally or on Ray,
into one results table.

Each finished cell is written atomically as ``cells/<key>.json`` in the run directory and
skipped when the sweep runs again, so a killed sweep finishes only what is missing. The table
(``results.csv``, ``results.json``) is rebuilt from the cell files in grid order.

A grid file (TOML)::

    [grid]                       # every list is an axis; scalars are fixed
    model = "lenet300"
    dataset = "digits"
    method = ["phew", "synflow", "random"]
    density = [0.1, 0.05]
    seed = [0, 1, 2]
    epochs = 5

    [options.phew]               # extra options per pruning method (optional)
    bias = "magnitude"

    [train]                      # training overrides (optional): lr, batch_size, ...
    lr = 0.05
"""

from __future__ import annotations

import itertools
import json
import os
import tomllib
from pathlib import Path
from typing import Any, Iterable, Sequence

from tqdm.auto import tqdm

from . import data as datasets, models
from .errors import HparamError
from .experiment import ROW_COLUMNS, Cell, run_cell
from .pruning import METHODS
from .io import atomic_write
from .training.loop import versions

__all__ = ["grid_cells", "load_grid", "run_sweep", "read_table"]

_AXES = ("model", "dataset", "method", "density", "seed", "epochs")


def grid_cells(grid: dict[str, Any], options: dict[str, dict] | None = None) -> list[Cell]:
    """All cells of a grid (dict axis → value or list of values), validated before anything runs."""
    unknown = set(grid) - set(_AXES)
    if unknown:
        raise HparamError(f"unknown grid axes {sorted(unknown)}; a grid has {', '.join(_AXES)}")
    missing = {"model", "dataset", "method", "density"} - set(grid)
    if missing:
        raise HparamError(f"the grid needs {sorted(missing)}")
    axes = {k: (v if isinstance(v, list) else [v]) for k, v in grid.items()}
    axes.setdefault("seed", [0])
    axes.setdefault("epochs", [None])
    for name in axes["model"]:
        models.MODELS[name]
    for name in axes["dataset"]:
        datasets.DATASETS[name]
    for name in axes["method"]:
        if name != "imp":
            METHODS[name]
    options = options or {}
    return [Cell(m, d, meth, float(dens), int(seed), epochs, dict(options.get(meth, {})))
            for m, d, meth, dens, seed, epochs in itertools.product(*(axes[k] for k in _AXES))]


def load_grid(path: str | os.PathLike) -> tuple[list[Cell], dict[str, Any]]:
    """Cells and training overrides from a TOML grid file."""
    path = Path(path)
    if not path.is_file():
        raise HparamError(f"no grid file at {path}")
    try:
        spec = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise HparamError(f"{path} is not valid TOML: {e}") from None
    if "grid" not in spec:
        raise HparamError(f"{path} has no [grid] table (see pathnet.sweep's docstring for the format)")
    return grid_cells(spec["grid"], spec.get("options")), dict(spec.get("train", {}))


def _cell_path(run_dir: Path, cell: Cell) -> Path:
    return run_dir / "cells" / f"{cell.key()}.json"


def _run_and_save(cell: Cell, run_dir: str, device: str, data_root, train_overrides,
                  deterministic: bool = False) -> dict:
    import torch

    if str(device) in ("auto", "cpu") and not torch.cuda.is_available():
        torch.set_num_threads(1)  # cells run side by side: one thread each (see README)
    row = run_cell(cell, device=device, data_root=data_root, train_overrides=train_overrides,
                   mask_dir=Path(run_dir) / "masks", deterministic=deterministic)
    path = _cell_path(Path(run_dir), cell)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(row, indent=1, default=str)))
    return row


def run_sweep(cells: Sequence[Cell], run_dir: str | os.PathLike, *, backend: str = "local", address: str | None = None,
              gpus_per_cell: float = 0, cpus_per_cell: float = 1, device: str = "auto", data_root: str | None = None,
              train_overrides: dict | None = None, progress: bool | None = None,
              deterministic: bool = False) -> list[dict]:
    """Run the cells not yet finished in `run_dir`; return all rows in grid order (`deterministic`: train
    with deterministic algorithms only, see pathnet.training.loop.deterministic_mode)."""
    if backend not in ("local", "ray"):
        raise HparamError(f"backend must be 'local' or 'ray', got {backend!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "grid.json", lambda tmp: Path(tmp).write_text(json.dumps(
        {"cells": [c.key() for c in cells], "train": train_overrides or {}, "deterministic": deterministic,
         "versions": versions()}, indent=1)))
    todo = [c for c in cells if not _cell_path(run_dir, c).is_file()]
    args = (str(run_dir), device, data_root, train_overrides, deterministic)
    with tqdm(total=len(cells), initial=len(cells) - len(todo), desc="sweep", unit="cell",
              disable=not (progress if progress is not None else os.isatty(2))) as bar:
        if backend == "local":
            for cell in todo:
                _run_and_save(cell, *args)
                bar.update(1)
        elif todo:
            _run_on_ray(todo, args, address, gpus_per_cell, cpus_per_cell, bar)
    rows = [json.loads(_cell_path(run_dir, c).read_text()) for c in cells]
    write_table(rows, run_dir)
    return rows


def _run_on_ray(cells: Sequence[Cell], args: tuple, address, gpus, cpus, bar) -> None:
    try:
        import ray
    except ImportError:
        raise HparamError("the ray backend needs Ray: pip install -e '.[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
                 logging_level="ERROR")
    remote = ray.remote(num_gpus=gpus, num_cpus=cpus)(_run_and_save)
    pending = [remote.remote(cell, *args) for cell in cells]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        ray.get(done)  # re-raises a cell's error here
        bar.update(len(done))


def write_table(rows: Iterable[dict], run_dir: Path) -> None:
    """results.csv (the scalar columns) and results.json (everything), atomically."""
    rows = list(rows)
    lines = [",".join(ROW_COLUMNS)] + [",".join("" if r.get(c) is None else str(r.get(c)) for c in ROW_COLUMNS)
                                       for r in rows]
    atomic_write(run_dir / "results.csv", lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    atomic_write(run_dir / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(rows, default=str)))


def read_table(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of a finished sweep (results.json)."""
    return json.loads((Path(run_dir) / "results.json").read_text())
