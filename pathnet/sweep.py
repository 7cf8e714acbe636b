"""Sweeps: a grid of cells (model × dataset × method × density × seed) run locally or on Ray,
into one results table.

Only the process that runs the sweep writes the run directory: a cell (locally or on any Ray node)
runs in a temporary folder of its machine and returns its row and mask, which the driver writes
atomically as ``cells/<key>.json``, ``masks/<key>.safetensors`` and ``metrics/<key>.csv``. A finished
cell is skipped when the sweep runs again, so a killed sweep finishes only what is missing; an
unfinished one resumes from the last checkpoint its training relayed (``cells/<key>/``, or
``--cell-storage``). The table (``results.csv``, ``results.json``) is rebuilt from the cell files in
grid order.

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

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

from tqdm.auto import tqdm

from . import __version__, data as datasets, models
from .errors import ClusterError, DataError, HparamError, PathnetError, RunError, check_density, check_int, check_seed
from .experiment import ROW_COLUMNS, Cell, run_cell
from .hparams import Step, TrainingHparams
from .io import atomic_write, write_csv, write_json, write_text
from .pruning import METHODS
from .run import bound, check_run_dir
from .training.loop import Callback, Checkpoint, TrainState, log_line, progress_mode, resolve_device, versions

__all__ = ["grid_cells", "load_grid", "run_sweep", "read_table", "CellStore", "Relay", "Job", "run_cell_task",
           "ClusterError", "SweepInterrupted"]

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



class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped a sweep: running cells were cancelled, finished cells kept (and unfinished
    ones resume from their last checkpoint when the same sweep runs again)."""

    def __init__(self, done: int, total: int, run_dir: Path):
        super().__init__(f"sweep interrupted: {done} of {total} cells done in {run_dir}")
        self.done, self.total, self.run_dir = done, total, run_dir


#: seconds a Ray cluster given by address has to answer before the sweep stops with a ClusterError
CONNECT_TIMEOUT = 30.0
#: how many times Ray runs a cell again after its worker or node died
MAX_RETRIES = 3
_STEP_TEXT = re.compile(r"\s*(\d+\s*ep)?\s*(\d+\s*it)?\s*")


# -- a cell's training directory, kept while the cell runs --------------------------------------------

def _hidden(rel: Path) -> bool:
    """Lock files, temporary files of atomic writes and the store's own counters are not relayed."""
    return any(part.startswith(".") for part in rel.parts)


class CellStore:
    """The training directories of unfinished cells, one folder per cell key under `root`: what a cell
    relays at each checkpoint and what a retried or rerun cell starts from. Every file is written
    atomically; a finished cell's folder is removed (its row, mask and metrics are the result)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def begin(self, key: str) -> int:
        """Count a start of cell `key`; return how many starts came before (its retries)."""
        counter = self.root / key / ".starts"
        try:
            before = int(counter.read_text())
        except (OSError, ValueError):
            before = 0
        write_text(counter, str(before + 1))
        return before

    def fetch(self, key: str) -> dict[str, bytes]:
        """The files of cell `key`'s training directory (relative path → bytes); {} if it has none."""
        folder = self.root / key
        if not folder.is_dir():
            return {}
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
                if p.is_file() and not _hidden(p.relative_to(folder))}

    def put(self, key: str, files: dict[str, bytes]) -> None:
        """Files of cell `key`'s training directory, each written atomically (checkpoints last)."""
        folder = self.root / key
        for rel in sorted(files, key=lambda r: r.endswith(".pt")):
            path = PurePosixPath(rel)
            if path.is_absolute() or ".." in path.parts or _hidden(Path(rel)):
                raise RunError(f"refusing to store {rel!r} for cell {key}: not a path inside its training directory")
            atomic_write(folder / rel, lambda tmp, data=files[rel]: Path(tmp).write_bytes(data))

    def clear(self, key: str) -> None:
        shutil.rmtree(self.root / key, ignore_errors=True)


class _StoreActor:
    """A CellStore in the driver's run directory, served to the workers (a Ray actor on the driver's node)."""

    def __init__(self, root: str):
        self.store = CellStore(root)

    def begin(self, key: str) -> int:
        return self.store.begin(key)

    def fetch(self, key: str) -> dict[str, bytes]:
        return self.store.fetch(key)

    def put(self, key: str, files: dict[str, bytes]) -> None:
        self.store.put(key, files)


class _RemoteStore:
    """What a worker holds of the driver's CellStore: the same calls, through the actor."""

    def __init__(self, actor):
        self.actor = actor

    def begin(self, key: str) -> int:
        import ray

        return ray.get(self.actor.begin.remote(key))

    def fetch(self, key: str) -> dict[str, bytes]:
        import ray

        return ray.get(self.actor.fetch.remote(key))

    def put(self, key: str, files: dict[str, bytes]) -> None:
        import ray

        ray.get(self.actor.put.remote(key, files))


class Relay(Callback):
    """Sends each new checkpoint of a cell's (node-local) training directory to a store, and fills the
    directory from the store before training starts, so a retried or rerun cell resumes where it stopped.

    It moves itself after train()'s Checkpoint callback, so it sees each checkpoint as soon as it is saved."""

    def __init__(self, folder: Path, key: str, store):
        self.folder, self.key, self.store = Path(folder), key, store
        self.sent: dict[str, tuple] = {}
        self.saver: Checkpoint | None = None
        self.seen: int | None = None
        self.resumed_from: int | None = None

    def restore(self, files: dict[str, bytes]) -> None:
        """Write `files` (a store's fetch) into the training directory."""
        for rel, data in files.items():
            path = self.folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self.sent = self._signatures()

    def _signatures(self) -> dict[str, tuple]:
        if not self.folder.is_dir():
            return {}
        out = {}
        for p in self.folder.rglob("*"):
            rel = p.relative_to(self.folder)
            if not _hidden(rel) and p.is_file():
                st = p.stat()
                out[rel.as_posix()] = (st.st_ino, st.st_mtime_ns, st.st_size)
        return out

    def push(self) -> None:
        """Send the files written since the last push."""
        now = self._signatures()
        changed = {rel: (self.folder / rel).read_bytes() for rel, sig in now.items() if self.sent.get(rel) != sig}
        if changed:
            self.store.put(self.key, changed)
        self.sent = now

    def on_train_start(self, state: TrainState) -> None:
        if self.resumed_from is None and state.resumed_from is not None:
            self.resumed_from = state.resumed_from
        state.callbacks = [cb for cb in state.callbacks if cb is not self] + [self]  # after the Checkpoint
        self.saver = next((cb for cb in state.callbacks if isinstance(cb, Checkpoint)), None)
        self.seen = self.saver.saved_at if self.saver is not None else None

    def _after_save(self, state: TrainState) -> None:
        if self.saver is not None and self.saver.saved_at != self.seen:
            self.seen = self.saver.saved_at
            self.push()

    def on_step_end(self, state: TrainState) -> None:
        self._after_save(state)

    def on_epoch_end(self, state: TrainState) -> None:
        self._after_save(state)

    def on_train_end(self, state: TrainState) -> None:
        self.push()


# -- one cell, anywhere ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """What every cell of a sweep is run with; every path absolute (a worker runs in another directory,
    on another machine). `store` keeps the cells' training directories (CellStore or the driver's actor)."""

    device: str
    data_root: str | None
    deterministic: bool
    checkpoint_every: str
    store: Any
    on_ray: bool = False


def _absolute(path: str | os.PathLike | None) -> str | None:
    """`path` made absolute against this process's working directory (None stays None)."""
    return None if path is None else str(Path(os.path.expanduser(str(path))).resolve())


def run_cell_task(cell: Cell, job: Job) -> dict:
    """Run `cell` in a node-local scratch folder (removed after) and return its row and mask bytes; the
    driver writes them. Training starts from the store's checkpoint of the cell, if it has one."""
    import tempfile

    import torch

    t0 = time.perf_counter()
    if str(job.device) in ("auto", "cpu") and not torch.cuda.is_available():
        torch.set_num_threads(1)  # cells run side by side: one thread each (see README)
    key = cell.key()
    retries = job.store.begin(key)
    scratch = Path(tempfile.mkdtemp(prefix=f"pathnet-cell-{key}-"))
    try:
        relay = Relay(scratch / "train", key, job.store)
        relay.restore(job.store.fetch(key))
        row = run_cell(cell, device=job.device, data_root=job.data_root, mask_dir=scratch / "masks",
                       deterministic=job.deterministic, run_dir=scratch / "train", callbacks=(relay,),
                       checkpoint_every=job.checkpoint_every)
        mask = Path(row["mask_path"]).read_bytes()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if job.on_ray:
        import ray

        node_id = ray.get_runtime_context().get_node_id()
    else:
        node_id = "local"
    row.update(mask_path=None, host=socket.gethostname(), node_id=node_id, seconds=round(time.perf_counter() - t0, 3),
               retries=retries, resumed_from=relay.resumed_from)
    return {"row": row, "mask": mask}


def _save(root: Path, cell: Cell, result: dict, store: CellStore) -> dict:
    """The driver's side of a finished cell: mask, metrics and row written atomically (the row last: it
    marks the cell done), then the cell's training directory dropped."""
    key = cell.key()
    mask_path = root / "masks" / f"{key}.safetensors"
    atomic_write(mask_path, lambda tmp: Path(tmp).write_bytes(result["mask"]))
    row = {**result["row"], "mask_path": str(mask_path)}
    write_csv(root / "metrics" / f"{key}.csv", row["history"])
    write_json(_cell_path(root, cell), row)
    store.clear(key)
    return row


def _cell_line(i: int, n: int, row: dict, seconds: float) -> str:
    where = f"  on {row['host']}" if row.get("node_id") not in (None, "local") else ""
    return (f"sweep cell {i}/{n}  {row['model']} {row['dataset']} {row['method']} {row['density']:g} s{row['seed']}  "
            f"test acc {row['test_accuracy']:.4f}  log10 paths {row['log10_paths']:.2f}  {seconds:.1f} s{where}")


def _check_number(name: str, v, low: float = 0) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= low or v != v or v == float("inf"):
        raise HparamError(f"{name}={v!r} is not allowed: give a number ≥ {low:g}")


def run_sweep(cells: Sequence[Cell], run_dir: str | os.PathLike, *, backend: str = "local", address: str | None = None,
              gpus_per_cell: float = 0, cpus_per_cell: float = 1, max_concurrent: int | None = None,
              device: str = "auto", data_root: str | None = None, cell_storage: str | os.PathLike | None = None,
              checkpoint_every: str = "1ep", train_overrides: dict | None = None, progress: bool | None = None,
              deterministic: bool = False, overwrite: bool = False) -> list[dict]:
    """Run the cells not yet finished in `run_dir`; return all rows in grid order (`deterministic`: train
    with deterministic algorithms only, see pathnet.training.loop.deterministic_mode).

    Everything is checked before the first cell runs. The run dir is bound to its arguments
    (``manifest.json``: training overrides, deterministic, pathnet version; cells may be added) and
    locked; `overwrite` clears it first. Each cell's key hashes the whole cell, training overrides
    included. `progress`: a tqdm bar on a terminal, else one line per cell (False: silent).

    Only this process writes `run_dir`: a cell runs in a temporary folder of the machine that runs it and
    returns its row and mask. Its training checkpoints every `checkpoint_every` steps into
    ``cells/<key>/`` of the run dir (relayed through Ray on a cluster), or into ``<cell_storage>/<key>/``
    when given (a folder at the same path on every node and here, e.g. a bucket mount), so a retried or
    rerun cell resumes where it stopped, to the same result. On Ray, a cell asks for `cpus_per_cell` CPUs
    and `gpus_per_cell` GPUs, at most `max_concurrent` cells run at once (None: as many as fit), and
    `address` is a running cluster's HOST:PORT (None: a local Ray). `data_root`, the only path a cell reads,
    must exist on every node. Ctrl-C raises SweepInterrupted (a KeyboardInterrupt) once running cells
    are cancelled; finished cells stay."""
    if backend not in ("local", "ray"):
        raise HparamError(f"backend must be 'local' or 'ray', got {backend!r}")
    _check_number("gpus_per_cell", gpus_per_cell)
    _check_number("cpus_per_cell", cpus_per_cell)
    if max_concurrent is not None:
        max_concurrent = check_int("max_concurrent", max_concurrent, min=1)
    if not isinstance(deterministic, bool) or not isinstance(overwrite, bool):
        raise HparamError(f"deterministic and overwrite must be True or False, got {deterministic!r}, {overwrite!r}")
    if backend == "local":
        resolve_device(device)
    else:
        _check_ray_device(device, gpus_per_cell)
        if address is not None:
            _split_address(address)
    if not isinstance(checkpoint_every, str) or not _STEP_TEXT.fullmatch(checkpoint_every) \
            or Step.parse(checkpoint_every, 1).iteration < 1:
        raise HparamError(f"checkpoint_every={checkpoint_every!r} is not allowed: give a step of at least one "
                          "iteration, in epochs and/or iterations, e.g. '1ep', '500it'")
    mode = progress_mode(progress)
    cells = list(cells)
    if not cells or not all(isinstance(c, Cell) for c in cells):
        raise HparamError("run_sweep needs a non-empty list of cells (see grid_cells and load_grid)")
    train_overrides = check_train(train_overrides)
    cells = [replace(c, train={**c.train, **train_overrides}) for c in cells]
    for c in cells:  # cells built by hand are checked as grid_cells checks them
        grid_cells({k: getattr(c, k) for k in _AXES if getattr(c, k) is not None}, {c.method: c.options} if c.options
                   else None, c.train)
    data_root = _absolute(data_root)  # the only path a cell reads: the same on every node
    if data_root is not None and not Path(data_root).is_dir():
        raise DataError(f"--data-root {data_root!r} is not a folder; give the folder that holds the datasets (it "
                        "must exist at that path on every node that runs cells)")
    check_fits(cells, data_root)
    root = check_run_dir(run_dir).expanduser().resolve()
    storage = None if cell_storage is None else check_run_dir(cell_storage).expanduser().resolve()
    manifest = {"kind": "sweep", "train": train_overrides, "deterministic": deterministic, "pathnet": __version__,
                "cells": [c.key() for c in cells]}
    ray_session = None
    if backend == "ray" and (overwrite or not all(_cell_path(root, c).is_file() for c in cells)):
        ray_session = _RaySession(address, cpus_per_cell, gpus_per_cell)  # the cluster checked before any writing
    with _closing(ray_session), bound(root, manifest, overwrite=overwrite, extendable=("cells",)):
        write_json(root / "grid.json", {"cells": [c.key() for c in cells], "train": train_overrides,
                                        "deterministic": deterministic, "versions": versions()})
        todo = [c for c in cells if not _cell_path(root, c).is_file()]
        store = CellStore(storage if storage is not None else root / "cells")
        job = Job(device, data_root, deterministic, checkpoint_every, store)
        done = len(cells) - len(todo)

        def finish(cell: Cell, result: dict, seconds: float) -> None:
            nonlocal done
            row = _save(root, cell, result, store)
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
                    finish(cell, run_cell_task(cell, job), time.perf_counter() - t0)
            elif todo:
                _run_on_ray(ray_session, todo, job, root, max_concurrent, storage is not None, finish)
        except KeyboardInterrupt:
            raise SweepInterrupted(done, len(cells), root) from None
        finally:
            if bar is not None:
                bar.close()
        rows = [json.loads(_cell_path(root, c).read_text()) for c in cells]
        write_table(rows, root)
    return rows


# -- Ray --------------------------------------------------------------------------------------------

def _check_ray_device(device: str, gpus: float) -> None:
    import torch

    try:
        dev = torch.device("cpu" if str(device) == "auto" else device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise HparamError(f"device {device!r} is not a device pathnet trains on; use cpu, cuda, cuda:N, mps or auto")
    if dev.type == "cuda" and not gpus:
        raise HparamError(f"device {device!r} on Ray needs GPUs for each cell: give --gpus-per-cell (e.g. 1), or "
                          "use --device auto or cpu")


def _split_address(address: Any) -> tuple[str, int] | None:
    """(host, port) of a HOST:PORT address; None for "auto" (the cluster this machine is part of)."""
    if address == "auto":
        return None
    if not isinstance(address, str) or address.startswith("ray://"):
        raise HparamError(f"--address {address!r} is not allowed: give the head node's HOST:PORT as `ray start "
                          "--head` prints it (run the sweep on a node of the cluster), or auto")
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise HparamError(f"--address {address!r} is not HOST:PORT; give the head node's address as `ray start "
                          "--head` prints it, e.g. 10.0.0.5:6379")
    return host, int(port)


def _connect(ray, address: str | None) -> bool:
    """Connect to the cluster at `address` (None: start a local Ray); ClusterError, one line, within about
    CONNECT_TIMEOUT seconds when no cluster answers. True if this call connected."""
    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, ignore_reinit_error=True, log_to_driver=False, logging_level="ERROR")
    hostport = _split_address(address) if address is not None else None
    if address is None:
        ray.init(**kwargs)
        return True
    if hostport is not None:
        try:  # nothing listening fails here, at once, instead of Ray's endless retries
            socket.create_connection(hostport, timeout=min(10.0, CONNECT_TIMEOUT)).close()
        except OSError as e:
            why = e.strerror or type(e).__name__
            raise ClusterError(f"no Ray cluster at --address {address} ({why}); start one on the head node with "
                               f"`ray start --head --port={hostport[1]}` and give its HOST:PORT, or leave --address "
                               "out to run on a local Ray") from None
    outcome: dict[str, BaseException] = {}

    def init() -> None:
        try:
            ray.init(address=address, **kwargs)
        except BaseException as e:  # reported by the caller
            outcome["error"] = e

    thread = threading.Thread(target=init, name=_CONNECT_THREAD, daemon=True)
    with _quiet_fd2() as keep_quiet:  # Ray's C++ client prints a warning a second while it retries
        thread.start()
        thread.join(CONNECT_TIMEOUT)
        if thread.is_alive():
            keep_quiet()  # it goes on retrying: its warnings stay out of the terminal
    if thread.is_alive():
        raise ClusterError(f"the Ray cluster at --address {address} did not answer within {CONNECT_TIMEOUT:g} s: "
                           f"something listens there, but not a Ray {ray.__version__} head that lets this machine "
                           "in; check the address with `ray status` on the head node")
    if "error" in outcome:
        e = outcome["error"]
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ClusterError(f"cannot connect to the Ray cluster at --address {address}: {first[:300]}; check that it "
                           "is the head node's address as `ray start --head` printed it") from None
    return True


_CONNECT_THREAD = "pathnet-ray-connect"


def connection_stranded() -> bool:
    """Whether a Ray connection that did not answer in time is still trying (its thread cannot be stopped)."""
    return any(t.name == _CONNECT_THREAD and t.is_alive() for t in threading.enumerate())


@contextlib.contextmanager
def _quiet_fd2():
    """Within: file descriptor 2 (where C++ libraries write) goes nowhere. The caller may ask to keep it so
    after (a thread still writing): then sys.stderr, if it wrote to descriptor 2, writes to the old stderr."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield lambda: None
        return
    keep = []
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield lambda: keep.append(True)
    finally:
        if not keep:
            os.dup2(saved, 2)
            os.close(saved)
        else:
            try:
                uses_fd2 = sys.stderr.fileno() == 2
            except (OSError, ValueError, AttributeError):
                uses_fd2 = False
            if uses_fd2:
                sys.stderr = os.fdopen(saved, "w", buffering=1, closefd=False)
            else:
                os.dup2(saved, 2)
                os.close(saved)


def _check_resources(ray, address: str | None, cpus: float, gpus: float) -> None:
    """ClusterError, before any cell is submitted, when no node of the cluster can ever run a cell."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        return
    where = f"at {address}" if address else "(local)"
    most_cpu = max((n.get("CPU", 0) for n in nodes), default=0)
    most_gpu = max((n.get("GPU", 0) for n in nodes), default=0)
    raise ClusterError(f"no node of the Ray cluster {where} can run a cell: a cell asks for {cpus:g} CPU(s) and "
                       f"{gpus:g} GPU(s) (--cpus-per-cell, --gpus-per-cell), and its {len(nodes)} node(s) have at "
                       f"most {most_cpu:g} CPU(s) and {most_gpu:g} GPU(s) each; ask for less per cell or add a node "
                       "that has them")


class _RaySession:
    """Connected to Ray (the cluster at `address`, or a local Ray) and checked that a cell fits on some node;
    :meth:`close` disconnects what this session connected to a cluster."""

    def __init__(self, address: str | None, cpus: float, gpus: float):
        try:
            import ray
        except ImportError:
            raise HparamError("the ray backend needs Ray: pip install -e '.[ray]'") from None
        self.ray, self.address, self.cpus, self.gpus = ray, address, cpus, gpus
        self.connected = _connect(ray, address)
        try:
            _check_resources(ray, address, cpus, gpus)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.connected and self.address is not None:
            self.ray.shutdown()
            self.connected = False


@contextlib.contextmanager
def _closing(session: _RaySession | None):
    try:
        yield session
    finally:
        if session is not None:
            session.close()


def _run_on_ray(session: _RaySession, cells: Sequence[Cell], job: Job, root: Path, max_concurrent: int | None,
                own_storage: bool, finish) -> None:
    """The cells as Ray tasks (at most `max_concurrent` at once), their results written here as they
    finish. If the driver stops (an error, Ctrl-C, SIGTERM), the running tasks are cancelled."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray = session.ray
    actor = None
    running: dict = {}
    previous = None
    try:
        if not own_storage:  # checkpoints come back to this machine's run dir, through an actor pinned here
            here = ray.get_runtime_context().get_node_id()
            actor = ray.remote(num_cpus=0, max_restarts=0)(_StoreActor).options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False)).remote(str(root / "cells"))
            job = replace(job, store=_RemoteStore(actor), on_ray=True)
        else:
            job = replace(job, on_ray=True)
        remote = ray.remote(num_gpus=session.gpus, num_cpus=session.cpus, max_retries=MAX_RETRIES)(run_cell_task)

        def terminate(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, terminate)
        queue = list(cells)
        started: dict = {}
        while queue or running:
            while queue and (max_concurrent is None or len(running) < max_concurrent):
                cell = queue.pop(0)
                ref = remote.remote(cell, job)
                running[ref], started[ref] = cell, time.perf_counter()
            ready, _ = ray.wait(list(running), num_returns=1)
            cell = running.pop(ready[0])
            finish(cell, _result(ray, ready[0], cell), time.perf_counter() - started.pop(ready[0]))
    finally:
        for ref in running:  # stopped early: nothing left running
            try:
                ray.cancel(ref)  # the task stops and removes its scratch folder
            except Exception:  # already finished or gone
                pass
        if actor is not None:
            try:
                ray.kill(actor)
            except Exception:  # the cluster is gone
                pass
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _result(ray, ref, cell: Cell) -> dict:
    """A finished task's result; a cell's pathnet error as itself, a cell that kept dying as ClusterError."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, PathnetError):
            raise cause from None
        raise
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.OwnerDiedError,
            ray.exceptions.ObjectLostError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ClusterError(f"cell {cell.key()} failed {MAX_RETRIES + 1} times because its worker or node died "
                           f"({first[:200]}); rerun the sweep to resume it from its last checkpoint") from None


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
