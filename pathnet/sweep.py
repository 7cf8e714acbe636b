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

Every axis value, option and override is checked before the first cell runs: options from the
methods' declarations (``pathnet methods``), ``[options.imp]`` from IMP's, ``[train]`` from
TrainingHparams; an options table for a method the grid does not run is refused.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import threading
import time
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from tqdm.auto import tqdm

from . import __version__, data as datasets, models
from .errors import HparamError, check_density, check_int, check_seed
from .experiment import ROW_COLUMNS, Cell, run_cell
from .hparams import TrainingHparams
from .io import atomic_write, write_json
from .pruning import METHODS
from .run import bound, check_run_dir
from .training.loop import log_line, progress_mode, resolve_device, versions

__all__ = ["grid_cells", "load_grid", "run_sweep", "read_table"]

_AXES = ("model", "dataset", "method", "density", "seed", "epochs")
_TABLES = ("grid", "options", "train")


def _method_options(method: str, given: Any) -> dict[str, Any]:
    """`given` options of `method` validated (only the keys given, so cell keys stay as they were)."""
    from .training.imp import IMP_OPTIONS

    if not isinstance(given, dict):
        raise HparamError(f"[options.{method}] must be a table of key = value, got {given!r}")
    checked = (IMP_OPTIONS.validate(given, where="imp option ") if method == "imp"
               else METHODS[method].check_options(given))
    return {k: checked[k] for k in given}


def check_train(train: Any) -> dict[str, Any]:
    """A sweep's [train] table: training hyperparameters (pathnet.hparams.TrainingHparams fields), checked."""
    if train is None:
        return {}
    if not isinstance(train, dict):
        raise HparamError(f"[train] must be a table of key = value, got {train!r}")
    TrainingHparams().with_(**train)
    return dict(train)


def grid_cells(grid: dict[str, Any], options: dict[str, dict] | None = None,
               train: dict[str, Any] | None = None) -> list[Cell]:
    """All cells of a grid (dict axis → value or list of values), every value and option checked before
    anything runs; `options` maps a method of the grid to its options, `train` holds training overrides."""
    if not isinstance(grid, dict):
        raise HparamError(f"a grid is a table axis = value(s), got {grid!r}")
    unknown = [k for k in grid if k not in _AXES]
    if unknown:
        raise HparamError(f"unknown grid axes {unknown}; a grid has {', '.join(_AXES)}")
    missing = [k for k in ("model", "dataset", "method", "density") if k not in grid]
    if missing:
        raise HparamError(f"the grid needs {missing} (it has {', '.join(grid) or 'nothing'})")
    axes = {k: (v if isinstance(v, list) else [v]) for k, v in grid.items()}
    for k, values in axes.items():
        if not values:
            raise HparamError(f"grid axis {k} = [] is empty; give at least one value")
    axes.setdefault("seed", [0])
    axes.setdefault("epochs", [None])
    for name in axes["model"]:
        models.MODELS[name]
    for name in axes["dataset"]:
        datasets.DATASETS[name]
    for name in axes["method"]:
        if name != "imp":
            METHODS[name]
    densities = [check_density(d) for d in axes["density"]]
    seeds = [check_seed(v) for v in axes["seed"]]
    epochs = [None if e is None else check_int("epochs", e, min=1) for e in axes["epochs"]]
    options = options or {}
    if not isinstance(options, dict):
        raise HparamError(f"[options] must hold one table per method, e.g. [options.phew], got {options!r}")
    stray = [m for m in options if m not in axes["method"]]
    if stray:
        raise HparamError(f"[options.{stray[0]}] is for a method the grid does not run; the grid's methods are "
                          f"{', '.join(map(str, axes['method']))}")
    checked = {m: _method_options(m, o) for m, o in options.items()}
    train = check_train(train)
    return [Cell(m, d, meth, dens, seed, ep, dict(checked.get(meth, {})), dict(train))
            for m, d, meth, dens, seed, ep in itertools.product(axes["model"], axes["dataset"], axes["method"],
                                                                densities, seeds, epochs)]


def load_grid(path: str | os.PathLike) -> tuple[list[Cell], dict[str, Any]]:
    """Cells (carrying the [train] overrides) and the training overrides, from a TOML grid file."""
    path = Path(path)
    if not path.is_file():
        raise HparamError(f"no grid file at {path}")
    try:
        spec = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise HparamError(f"{path} is not valid TOML: {str(e).splitlines()[0]}") from None
    if "grid" not in spec:
        raise HparamError(f"{path} has no [grid] table (see pathnet.sweep's docstring for the format)")
    stray = [k for k in spec if k not in _TABLES]
    if stray:
        raise HparamError(f"{path}: unknown table or key {stray[0]!r}; a grid file has [{'], ['.join(_TABLES)}]")
    train = check_train(spec.get("train"))
    return grid_cells(spec["grid"], spec.get("options"), train), train


def check_fits(cells: Sequence[Cell], data_root: str | None = None) -> None:
    """Each (model, dataset) pair of the cells built once and fed two examples: a model that does not take
    a dataset's inputs fails here, before the first cell runs."""
    import torch

    for model_name, ds_name in dict.fromkeys((c.model, c.dataset) for c in cells):
        ds = datasets.get(ds_name, root=data_root)
        x = torch.stack([ds.test[i][0] for i in range(min(2, len(ds.test)))])
        try:
            model = models.get(model_name, num_classes=ds.num_classes, input_shape=ds.input_shape)
            with torch.no_grad():
                model.eval()(x)
        except (RuntimeError, ValueError, IndexError, TypeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise HparamError(f"model {model_name} does not take {ds_name}'s inputs of shape {ds.input_shape} "
                              f"({first}); pair it with another dataset") from None


def _cell_path(run_dir: Path, cell: Cell) -> Path:
    return run_dir / "cells" / f"{cell.key()}.json"


def _run_and_save(cell: Cell, run_dir: str, device: str, data_root, train_overrides,
                  deterministic: bool = False) -> dict:
    import torch

    if str(device) in ("auto", "cpu") and not torch.cuda.is_available():
        torch.set_num_threads(1)  # cells run side by side: one thread each (see README)
    row = run_cell(cell, device=device, data_root=data_root, train_overrides=train_overrides,
                   mask_dir=Path(run_dir) / "masks", deterministic=deterministic)
    write_json(_cell_path(Path(run_dir), cell), row)
    return row


def _cell_line(i: int, n: int, row: dict, seconds: float) -> str:
    return (f"sweep cell {i}/{n}  {row['model']} {row['dataset']} {row['method']} {row['density']:g} s{row['seed']}  "
            f"test acc {row['test_accuracy']:.4f}  log10 paths {row['log10_paths']:.2f}  {seconds:.1f} s")


def run_sweep(cells: Sequence[Cell], run_dir: str | os.PathLike, *, backend: str = "local", address: str | None = None,
              gpus_per_cell: float = 0, cpus_per_cell: float = 1, device: str = "auto", data_root: str | None = None,
              train_overrides: dict | None = None, progress: bool | None = None,
              deterministic: bool = False, overwrite: bool = False) -> list[dict]:
    """Run the cells not yet finished in `run_dir`; return all rows in grid order (`deterministic`: train
    with deterministic algorithms only, see pathnet.training.loop.deterministic_mode).

    Everything is checked before the first cell runs. The run dir is bound to its arguments
    (``manifest.json``: training overrides, deterministic, pathnet version; cells may be added) and
    locked; `overwrite` clears it first. Each cell's key hashes the whole cell, training overrides
    included. `progress`: a tqdm bar on a terminal, else one line per cell (False: silent)."""
    if backend not in ("local", "ray"):
        raise HparamError(f"backend must be 'local' or 'ray', got {backend!r}")
    for name, v in (("gpus_per_cell", gpus_per_cell), ("cpus_per_cell", cpus_per_cell)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise HparamError(f"{name}={v!r} is not allowed: give a number ≥ 0")
    if not isinstance(deterministic, bool) or not isinstance(overwrite, bool):
        raise HparamError(f"deterministic and overwrite must be True or False, got {deterministic!r}, {overwrite!r}")
    if backend == "local":
        resolve_device(device)
    mode = progress_mode(progress)
    cells = list(cells)
    if not cells or not all(isinstance(c, Cell) for c in cells):
        raise HparamError("run_sweep needs a non-empty list of cells (see grid_cells and load_grid)")
    train_overrides = check_train(train_overrides)
    cells = [replace(c, train={**c.train, **train_overrides}) for c in cells]
    for c in cells:  # cells built by hand are checked as grid_cells checks them
        grid_cells({k: getattr(c, k) for k in _AXES if getattr(c, k) is not None}, {c.method: c.options} if c.options
                   else None, c.train)
    check_fits(cells, data_root)
    root = check_run_dir(run_dir)
    manifest = {"kind": "sweep", "train": train_overrides, "deterministic": deterministic, "pathnet": __version__,
                "cells": [c.key() for c in cells]}
    with bound(root, manifest, overwrite=overwrite, extendable=("cells",)):
        write_json(root / "grid.json", {"cells": [c.key() for c in cells], "train": train_overrides,
                                        "deterministic": deterministic, "versions": versions()})
        todo = [c for c in cells if not _cell_path(root, c).is_file()]
        args = (str(root), device, data_root, {}, deterministic)
        done = len(cells) - len(todo)

        def report(row: dict, seconds: float) -> None:
            nonlocal done
            done += 1
            if bar is not None:
                bar.update(1)
            elif mode == "lines":
                log_line(_cell_line(done, len(cells), row, seconds))

        bar = tqdm(total=len(cells), initial=done, desc="sweep", unit="cell", file=sys.stderr) if mode == "bar" \
            else None
        try:
            if mode == "lines" and done:
                log_line(f"sweep: {done} of {len(cells)} cells already done in {root}")
            if backend == "local":
                for cell in todo:
                    t0 = time.perf_counter()
                    report(_run_and_save(cell, *args), time.perf_counter() - t0)
            elif todo:
                _run_on_ray(todo, args, address, gpus_per_cell, cpus_per_cell, report)
        finally:
            if bar is not None:
                bar.close()
        rows = [json.loads(_cell_path(root, c).read_text()) for c in cells]
        write_table(rows, root)
    return rows


def _run_on_ray(cells: Sequence[Cell], args: tuple, address, gpus, cpus, report) -> None:
    """The cells as Ray tasks; if the driver stops (an error, Ctrl-C, SIGTERM), the pending tasks are
    cancelled so no worker keeps writing."""
    try:
        import ray
    except ImportError:
        raise HparamError("the ray backend needs Ray: pip install -e '.[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
                 logging_level="ERROR")
    remote = ray.remote(num_gpus=gpus, num_cpus=cpus)(_run_and_save)
    started = time.perf_counter()
    pending = [remote.remote(cell, *args) for cell in cells]

    def terminate(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, terminate) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            row = ray.get(done[0])  # re-raises a cell's error here
            report(row, time.perf_counter() - started)
    finally:
        for ref in pending:  # stopped early: nothing left running
            try:
                ray.cancel(ref, force=True)
            except Exception:  # already finished or gone
                pass
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


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
