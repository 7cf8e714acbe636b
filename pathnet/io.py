"""Atomic file writes (results, masks and checkpoints are never seen half-written) and the table writers.

A temporary file is named ``.<name>.<host>-<pid>.<random>.tmp``; a save killed half-way leaves one
behind, and the next write to that folder removes it once its process is gone (or, for temporary
files of other machines or of older pathnet versions, once it is a day old). Files get the mode the
process umask gives (as ``open()`` would), not mkstemp's 0600.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

__all__ = ["atomic_write", "write_text", "write_json", "write_csv", "csv_text", "pid_alive"]

_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
_STALE_AFTER = 24 * 3600  # seconds, for temporary files whose process cannot be checked
_TMP = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[^.]+\.tmp$")


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_stale(folder: Path) -> None:
    """Remove temporary files that killed saves left in `folder`."""
    try:
        candidates = [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    except OSError:
        return
    now = time.time()
    for p in candidates:
        m = _TMP.match(p.name)
        try:
            if m and m["host"] == _HOST:
                stale = not pid_alive(int(m["pid"]))
            else:
                stale = now - p.stat().st_mtime > _STALE_AFTER
            if stale:
                p.unlink()
        except OSError:  # another process removed or replaced it first
            pass


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file in `path`'s folder, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: str | os.PathLike, payload: Any, indent: int | None = 1) -> Path:
    return write_text(path, json.dumps(payload, indent=indent, default=str))


def csv_text(rows: Iterable[Mapping[str, Any]], columns: Iterable[str] | None = None) -> str:
    """Rows as CSV text: the columns given, or every key in order of first appearance; lists as JSON."""
    rows = list(rows)
    keys = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    out = io.StringIO()
    writer = csv.DictWriter(out, keys, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else v)
                         for k, v in r.items()})
    return out.getvalue()


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], columns: Iterable[str] | None = None) -> Path:
    """Rows as a CSV file, atomically."""
    return write_text(path, csv_text(rows, columns))
