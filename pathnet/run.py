"""Run directories bound to their arguments: a manifest of what determines the result, and a lock.

``manifest.json`` records, when a run starts, everything that determines its result (the kind of
run, model and architecture, data, mask hash, every hyperparameter and option, seed, deterministic
flag, pathnet version). A rerun into the same directory must give the same manifest, or it stops
with a one-line :class:`~pathnet.errors.RunError` naming the keys that differ and the way out
(another run dir, or ``overwrite=True`` / ``--overwrite``, which clears the directory first).
Keys listed as `extendable` (IMP's levels, a sweep's cells) may change: what was done for the old
value stays valid.

``.lock`` holds the writer's host and PID, created with O_CREAT|O_EXCL: a second writer stops with
a RunError; a lock whose process is gone (on this host) is stale and taken over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from .errors import RunError
from .io import _HOST, pid_alive, write_json

__all__ = ["bound", "check_run_dir", "model_identity", "MANIFEST", "LOCK"]

MANIFEST, LOCK = "manifest.json", ".lock"


def model_identity(model) -> dict[str, Any]:
    """The model's registry name (if known) and a hash of its parameter and buffer names, shapes and dtypes."""
    sig = [[k, list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()]
    return {"model": getattr(model, "pathnet_name", None) or type(model).__name__,
            "architecture": hashlib.sha256(json.dumps(sig).encode()).hexdigest()[:16]}


def check_run_dir(run_dir: str | os.PathLike) -> Path:
    """`run_dir` as a Path, or RunError if it (or a folder above it) is a file."""
    path = Path(run_dir)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            raise RunError(f"run dir {str(run_dir)!r} cannot be used: {str(p)!r} is a file; give a directory")
    return path


def _normal(values: Mapping[str, Any]) -> dict[str, Any]:
    """JSON's view of the values (tuples as lists), so a manifest read back compares equal."""
    return json.loads(json.dumps(dict(values), default=str))


def _show(v: Any) -> str:
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):  # a SHA-256
        return repr(v[:12] + "…")
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    lock = path / LOCK
    me = f"{_HOST} {os.getpid()}"
    for attempt in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                host, pid = lock.read_text().split()
                pid = int(pid)
            except (OSError, ValueError):
                host, pid = _HOST, -1  # unreadable or half-written: treat as stale
            if host == _HOST and (pid == os.getpid() or not pid_alive(pid)) and attempt == 0:
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()  # stale: its process is gone
                continue
            raise RunError(f"run dir {str(path)!r} is in use by process {pid} on {host} (lock file {lock}); wait "
                           "for it to finish or use another run dir") from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if lock.read_text() == me:
                lock.unlink()


def _clear(path: Path) -> None:
    """Remove a run directory's results (everything but the lock), only if it is a pathnet run dir."""
    entries = [p for p in path.iterdir() if p.name != LOCK]
    if entries and not (path / MANIFEST).is_file():
        raise RunError(f"refusing to clear {str(path)!r}: it holds files but no {MANIFEST}, so it is not a pathnet "
                       "run dir; give another run dir")
    for p in entries:
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def _bind(path: Path, manifest: Mapping[str, Any], extendable: Iterable[str]) -> None:
    here = _normal(manifest)
    file = path / MANIFEST
    if file.is_file():
        try:
            there = json.loads(file.read_text())
        except (OSError, ValueError):
            raise RunError(f"{file} is unreadable; use another run dir or overwrite=True (--overwrite) to clear "
                           "it") from None
        skip = set(extendable)
        diff = [k for k in dict.fromkeys([*there, *here]) if k not in skip and there.get(k) != here.get(k)]
        if diff:
            shown = "; ".join(f"{k}={_show(there.get(k))} there, {_show(here.get(k))} here" for k in diff[:4])
            more = f"; and {len(diff) - 4} more" if len(diff) > 4 else ""
            raise RunError(f"run dir {str(path)!r} holds a run with other hyperparameters or inputs ({shown}{more}); "
                           "use another run dir, or overwrite=True (--overwrite) to clear it and start over")
        if there == here:
            return
    write_json(file, here)


@contextlib.contextmanager
def bound(run_dir: str | os.PathLike, manifest: Mapping[str, Any], *, overwrite: bool = False,
          extendable: Iterable[str] = ()) -> Iterator[Path]:
    """Within: `run_dir` locked against other writers and bound to `manifest` (RunError if it holds a run
    with another manifest; with `overwrite`, its results are cleared first)."""
    path = check_run_dir(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    with _lock(path):
        if overwrite:
            _clear(path)
        _bind(path, manifest, extendable)
        yield path
