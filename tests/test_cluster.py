"""Sweeps on a real 2-node Ray cluster on the loopback interface, and the failures a cluster user meets.

Oracle: the local backend. A sweep on the cluster, started from another working directory with a
relative run dir and a scratch folder per node, must give the local backend's masks (bytes) and
accuracies bit for bit, with cells on both nodes; so must a sweep whose worker node is killed
mid-cell (Ray runs the cell again on the head, which resumes it from its last relayed checkpoint).

The cluster binds 127.0.0.1 only: Ray turns ``--node-ip-address=127.0.0.1`` into the machine's
outward address (and serves on it), so `ray start` runs with that lookup answering 127.0.0.1. Only
the processes this test started (found by an environment marker) are stopped, never other Ray
instances (no `ray stop`, which stops every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from pathnet.sweep import load_grid, run_sweep  # noqa: E402

# `ray start`, with this machine's address for Ray being 127.0.0.1 (so every Ray server binds loopback only)
RAY_START = ("import sys, ray._private.services as s; s.node_ip_address_from_perspective = lambda *a, **k: '127.0.0.1'; "
             "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())")

PATHNET = [sys.executable, "-m", "pathnet"]
GRID = textwrap.dedent("""
    [grid]
    model = "conv2"
    dataset = "digits"
    method = ["random", "magnitude"]
    density = [0.2, 0.1]
    epochs = 5
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _marked(marker: str) -> list[int]:
    """PIDs of this user's processes whose environment holds `marker` (what one `ray start` started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _kill(marker: str) -> None:
    for _ in range(3):
        pids = _marked(marker)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


class LoopbackCluster:
    """A head and a worker node, one CPU each, on 127.0.0.1; each node with its own scratch folder (TMPDIR)."""

    def __init__(self, base: Path):
        self.base, self.port, self.tag = base, _free_port(), uuid.uuid4().hex[:12]
        self.address = f"127.0.0.1:{self.port}"
        # the driver's address for Ray is 127.0.0.1 too; no token authentication on the loopback interface
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                    "RAY_USAGE_STATS_ENABLED": "0", "RAY_health_check_period_ms": "1000",
                    "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "2",
                    "OMP_NUM_THREADS": "1"}
        self.scratch = {n: base / f"scratch-{n}" for n in ("head", "worker")}
        self.started: list[str] = []

    def marker(self, node: str) -> str:
        return f"PATHNET_TEST_RAY_NODE={self.tag}-{node}"

    def _start(self, node: str, args: list[str]) -> None:
        self.scratch[node].mkdir()
        env = {**self.env, "TMPDIR": str(self.scratch[node]), "PATHNET_TEST_RAY_NODE": f"{self.tag}-{node}",
               "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}  # a multi-node cluster (on 127.0.0.1: RAY_START)
        self.started.append(node)
        out = subprocess.run([sys.executable, "-c", RAY_START, "start", f"--temp-dir={self.base / node[0]}",
                              "--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats", *args],
                             env=env, cwd=self.base, capture_output=True, text=True, timeout=90)
        if out.returncode:
            raise RuntimeError(f"ray start ({node}) failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}")

    def start(self) -> None:
        self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=false",
                             f"--dashboard-port={_free_port()}"])
        self._start("worker", [f"--address={self.address}"])

    def kill(self, node: str) -> None:
        _kill(self.marker(node))

    def stop(self) -> None:
        for node in reversed(self.started):
            self.kill(node)


@pytest.fixture(scope="module")
def cluster():
    base = Path(tempfile.mkdtemp(prefix="pn-", dir="/tmp"))  # short: Ray's socket paths live under it
    c = LoopbackCluster(base)
    try:
        c.start()
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
        c.stop()
        pytest.skip(f"a loopback Ray cluster cannot start here: {e}")
    try:
        yield c
    finally:
        c.stop()
        assert not _marked(c.marker("head")) and not _marked(c.marker("worker"))
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory):
    grid = tmp_path_factory.mktemp("grid") / "grid.toml"
    grid.write_text(GRID)
    cells, train = load_grid(grid)
    return run_sweep(cells, tmp_path_factory.mktemp("local") / "run", train_overrides=train, progress=False)


def _same_as_local(rows, local_rows, run_dir: Path) -> None:
    local_dir = Path(local_rows[0]["mask_path"]).parent
    assert [r["cell"] for r in rows] == [r["cell"] for r in local_rows]
    for r, l in zip(rows, local_rows):
        assert r["test_accuracy"] == l["test_accuracy"]
        assert [h["test_accuracy"] for h in r["history"]] == [h["test_accuracy"] for h in l["history"]]
        assert r["log10_paths"] == l["log10_paths"] and r["kept"] == l["kept"]
        name = Path(l["mask_path"]).name
        assert (run_dir / "masks" / name).read_bytes() == (local_dir / name).read_bytes()


def _sweep(cluster, workdir: Path, run_dir: str, *extra: str) -> subprocess.Popen:
    """`pathnet sweep` on the cluster, from `workdir`, as a user would start it (on the head node)."""
    (workdir / "grid.toml").write_text(GRID)
    env = {**cluster.env, "TMPDIR": str(cluster.scratch["head"])}
    return subprocess.Popen([*PATHNET, "sweep", "grid.toml", "--backend", "ray",
                             "--address", cluster.address, "--run-dir", run_dir, "--checkpoint-every", "1ep", *extra],
                            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _relayed(scratch: Path, run_dir: Path) -> list[str]:
    """Keys of the cells running in `scratch` whose checkpoint has reached the driver's run dir."""
    keys = [p.parents[1].name.removeprefix("pathnet-cell-").rsplit("-", 1)[0]
            for p in scratch.glob("pathnet-cell-*/train/checkpoint.pt")]
    return [k for k in keys if (run_dir / "cells" / k / "checkpoint.pt").is_file()]


def test_sweep_on_two_nodes_equals_local_even_when_the_worker_node_dies(cluster, local_rows, tmp_path):
    t0 = time.perf_counter()
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = _sweep(cluster, work, "runs/sweep")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    print(err)
    run_dir = work / "runs" / "sweep"
    rows = json.loads((run_dir / "results.json").read_text())
    _same_as_local(rows, local_rows, run_dir)
    assert len({r["node_id"] for r in rows}) == 2, [r["node_id"] for r in rows]  # both nodes ran cells
    assert all(r["retries"] == 0 and r["host"] and r["seconds"] > 0 for r in rows)
    assert not (cluster.base / "runs").exists()  # nothing written where `ray start` ran
    assert not list(cluster.scratch["worker"].glob("pathnet-cell-*"))  # scratch removed after each cell
    assert "host,node_id,seconds,retries" in (run_dir / "results.csv").read_text().splitlines()[0]
    first = time.perf_counter() - t0

    # the worker node dies mid-cell (after a checkpoint): Ray runs the cell again on the head, from that checkpoint
    proc = _sweep(cluster, work, "runs/killed")
    run_dir = work / "runs" / "killed"
    deadline = time.time() + 120
    while time.time() < deadline and not _relayed(cluster.scratch["worker"], run_dir) and proc.poll() is None:
        time.sleep(0.02)
    assert _relayed(cluster.scratch["worker"], run_dir), "no cell on the worker node relayed a checkpoint"
    cluster.kill("worker")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    rows = json.loads((run_dir / "results.json").read_text())
    _same_as_local(rows, local_rows, run_dir)
    retried = [r for r in rows if r["retries"]]
    assert retried and all(r["resumed_from"] for r in retried), ([(r["retries"], r["resumed_from"]) for r in rows], err)
    assert len(err.strip().splitlines()) <= len(rows) + 2, err  # one line per cell, no raylet state dump
    print(f"cluster sweep {first:.1f} s; with the worker node killed {time.perf_counter() - t0 - first:.1f} s")
    print(err)


def test_a_wrong_address_fails_at_once_with_one_line(tmp_path):
    (tmp_path / "grid.toml").write_text(GRID)
    port = _free_port()  # nothing listens there
    t0 = time.perf_counter()
    out = subprocess.run([*PATHNET, "sweep", "grid.toml", "--backend", "ray", "--address",
                          f"127.0.0.1:{port}"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - t0
    assert out.returncode == 2 and seconds < 40
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"no Ray cluster at --address 127.0.0.1:{port}" in lines[0], out.stderr
    assert "ray start --head" in lines[0]


def test_an_address_that_does_not_answer_as_ray_fails_within_the_timeout(tmp_path):
    """Something listens (a bare socket that never speaks): the bounded connect gives up with one line."""
    (tmp_path / "grid.toml").write_text(GRID)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        address = "127.0.0.1:%d" % server.getsockname()[1]
        code = ("import sys, pathnet.sweep as s; s.CONNECT_TIMEOUT = 4; from pathnet.cli import entry; "
                f"sys.argv[1:] = ['sweep', 'grid.toml', '--backend', 'ray', '--address', {address!r}]; entry()")
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        seconds = time.perf_counter() - t0
    assert out.returncode == 2 and seconds < 40, (seconds, out.stderr)
    assert f"the Ray cluster at --address {address} did not answer within 4 s" in out.stderr.strip().splitlines()[-1]


def test_a_cluster_too_small_for_a_cell_is_refused_before_any_cell_runs(cluster, tmp_path):
    (tmp_path / "grid.toml").write_text(GRID)
    out = subprocess.run([*PATHNET, "sweep", "grid.toml", "--backend", "ray", "--address",
                          cluster.address, "--cpus-per-cell", "4", "--gpus-per-cell", "1", "--device", "cuda"],
                         cwd=tmp_path, env={**cluster.env, "TMPDIR": str(cluster.scratch["head"])},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    line = out.stderr.strip().splitlines()[-1]
    assert "a cell asks for 4 CPU(s) and 1 GPU(s)" in line and "at most 1 CPU(s) and 0 GPU(s)" in line, out.stderr
    assert not (tmp_path / "runs" / "sweep" / "cells").exists() or not list((tmp_path / "runs" / "sweep" / "cells").iterdir())
