"""Sweeps: grid parsing, a killed sweep finishing only its missing cells, and a real local Ray run."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pathnet.errors import HparamError, RegistryError
from pathnet.sweep import grid_cells, load_grid, run_sweep

GRID = textwrap.dedent("""
    [grid]
    model = "lenet300"
    dataset = "digits"
    method = ["phew", "random", "magnitude"]
    density = [0.2, 0.05]
    seed = 0
    epochs = 1

    [options.phew]
    bias = "uniform"

    [train]
    batch_size = 128
""")

SCALARS = ("model", "dataset", "method", "density", "seed", "kept", "test_accuracy", "log10_paths",
           "effective_density", "bottleneck_width")


@pytest.fixture
def grid_file(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    return path


def test_grid_parsing(grid_file):
    cells, train = load_grid(grid_file)
    assert len(cells) == 6 and train == {"batch_size": 128}
    assert {c.method for c in cells} == {"phew", "random", "magnitude"}
    assert next(c for c in cells if c.method == "phew").options == {"bias": "uniform"}
    assert len({c.key() for c in cells}) == 6
    with pytest.raises(RegistryError, match="unknown pruning method 'phw'"):
        grid_cells({"model": "lenet300", "dataset": "digits", "method": "phw", "density": 0.1})
    with pytest.raises(HparamError, match="unknown grid axes"):
        grid_cells({"model": "lenet300", "dataset": "digits", "method": "phew", "density": 0.1, "lr": 1})
    with pytest.raises(HparamError, match="needs"):
        grid_cells({"model": "lenet300"})


def table(rows):
    return [tuple(r[k] for k in SCALARS) for r in rows]


def test_killed_sweep_reruns_only_missing_cells(tmp_path, grid_file):
    run_dir = tmp_path / "run"
    code = (f"import torch; torch.set_num_threads(1)\nfrom pathnet.sweep import load_grid, run_sweep\n"
            f"cells, train = load_grid({str(grid_file)!r})\nrun_sweep(cells, {str(run_dir)!r}, train_overrides=train)")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    cells_dir = run_dir / "cells"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(cells_dir.glob("*.json"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in cells_dir.glob("*.json")}
    assert 2 <= len(done_before) < 6
    cells, train = load_grid(grid_file)
    rows = run_sweep(cells, run_dir, train_overrides=train)
    after = {p.name: p.stat().st_mtime_ns for p in cells_dir.glob("*.json")}
    assert len(after) == 6 and all(after[name] == t for name, t in done_before.items())  # finished cells untouched
    fresh = run_sweep(cells, tmp_path / "fresh", train_overrides=train)
    assert table(rows) == table(fresh)
    assert len((run_dir / "results.csv").read_text().splitlines()) == 7
    assert len(list((run_dir / "masks").glob("*.safetensors"))) == 6


def test_ray_backend_matches_local(tmp_path, grid_file):
    ray = pytest.importorskip("ray")
    cells, train = load_grid(grid_file)
    cells = cells[:2]
    try:
        on_ray = run_sweep(cells, tmp_path / "ray", backend="ray", train_overrides=train)
    finally:
        ray.shutdown()
    local = run_sweep(cells, tmp_path / "local", train_overrides=train)
    assert table(on_ray) == table(local)


def test_cell_keys_hash_the_train_table_and_a_changed_train_table_is_refused(tmp_path):
    """The issue's case: a rerun with another [train] table must not skip every cell as done. Oracle:
    the cell's key changes with [train]; the run dir's manifest names the table."""
    from dataclasses import replace

    from pathnet.errors import RunError
    from pathnet.experiment import Cell

    cell = Cell("lenet300", "digits", "random", 0.2, 0, 1)
    assert cell.key() == Cell("lenet300", "digits", "random", 0.2, 0, 1, {}, {}).key()  # old keys stay
    assert replace(cell, train={"lr": 0.1}).key() != cell.key() != replace(cell, train={"lr": 0.2}).key()
    grid = tmp_path / "grid.toml"
    body = '[grid]\nmodel = "lenet300"\ndataset = "digits"\nmethod = "random"\ndensity = 0.2\nepochs = 1\n'
    grid.write_text(body + "[train]\nbatch_size = 256\n")
    cells, train = load_grid(grid)
    assert cells[0].train == {"batch_size": 256}
    run_sweep(cells, tmp_path / "s", train_overrides=train, progress=False)
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "s").rglob("*") if p.is_file()}
    grid.write_text(body + "[train]\nbatch_size = 128\n")
    cells, train = load_grid(grid)
    with pytest.raises(RunError, match="train=.*256.* there, .*128.* here"):
        run_sweep(cells, tmp_path / "s", train_overrides=train, progress=False)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "s").rglob("*") if p.is_file()} == files
    rows = run_sweep(cells, tmp_path / "s", train_overrides=train, progress=False, overwrite=True)
    assert rows[0]["hparams"]["batch_size"] == 128


def test_a_bad_cell_late_in_the_grid_stops_the_sweep_before_the_first_cell(tmp_path):
    from pathnet.errors import DensityError, OptionError

    with pytest.raises(DensityError):
        grid_cells({"model": "lenet300", "dataset": "digits", "method": "random", "density": [0.2, 1.5]})
    with pytest.raises(OptionError, match="unknown phew option 'bogus'; valid: bias, kernel, patience, progress"):
        grid_cells({"model": "lenet300", "dataset": "digits", "method": ["random", "phew"], "density": 0.2},
                   {"phew": {"bogus": 1}})
    assert not (tmp_path / "s").exists()


def test_sweep_progress_is_one_line_per_cell_off_a_terminal(tmp_path, capsys):
    cells = grid_cells({"model": "lenet300", "dataset": "digits", "method": ["random", "magnitude"],
                        "density": 0.2, "epochs": 1})
    run_sweep(cells, tmp_path / "s")
    lines = capsys.readouterr().err.strip().splitlines()
    assert [ln.split("  ")[0] for ln in lines] == ["sweep cell 1/2", "sweep cell 2/2"]
    run_sweep(cells, tmp_path / "s", progress=False)
    assert capsys.readouterr().err == ""


# -- issue 18: a driver that owns the run dir, absolute paths, rows that say where, cells that resume --------

TINY = {"model": "lenet300", "dataset": "digits", "method": ["random", "magnitude"], "density": 0.2, "epochs": 3}


def test_every_path_is_absolute_before_a_cell_sees_it(tmp_path, monkeypatch):
    """The relative --run-dir bug: workers wrote relative to where `ray start` ran. Oracle: the Job a cell
    gets holds only absolute paths, and the driver alone writes the (relative) run dir."""
    import pathnet.sweep as sweep

    seen = []
    real = sweep.run_cell_task
    monkeypatch.setattr(sweep, "run_cell_task", lambda cell, job: seen.append(job) or real(cell, job))
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    rows = run_sweep(grid_cells(TINY), "runs/s", data_root="data", progress=False)
    job = seen[0]
    assert job.data_root == str(tmp_path / "data") and job.store.root == tmp_path / "runs" / "s" / "cells"
    assert all(os.path.isabs(r["mask_path"]) and os.path.isfile(r["mask_path"]) for r in rows)
    assert not list((tmp_path / "runs" / "s" / "cells").glob("*/"))  # finished cells leave no checkpoint behind
    with pytest.raises(__import__("pathnet.errors").errors.DataError, match="must exist at that path on every node"):
        run_sweep(grid_cells(TINY), "runs/s", data_root="nowhere", progress=False)


def test_rows_record_host_node_device_seconds_and_retries(tmp_path):
    import socket

    rows = run_sweep(grid_cells(TINY), tmp_path / "s", progress=False, device="cpu")
    for r in rows:
        assert (r["host"], r["node_id"], r["device"], r["retries"], r["resumed_from"]) == \
            (socket.gethostname(), "local", "cpu", 0, None)
        assert r["seconds"] >= r["train_seconds"] > 0
    header = (tmp_path / "s" / "results.csv").read_text().splitlines()[0].split(",")
    assert header[-4:] == ["host", "node_id", "seconds", "retries"]
    assert len((tmp_path / "s" / "metrics" / f"{grid_cells(TINY)[0].key()}.csv").read_text().splitlines()) == 4


def test_a_cell_stopped_mid_training_resumes_from_its_checkpoint_to_the_same_result(tmp_path, monkeypatch):
    """Oracle: an uninterrupted sweep. The first cell is stopped (Ctrl-C) right after its second checkpoint
    reached the store; the rerun resumes it from that checkpoint (not from step 0) and ends bit-identical."""
    from pathnet.sweep import CellStore, SweepInterrupted

    cells = grid_cells(TINY)
    real_put, puts = CellStore.put, []

    def put_then_stop(self, key, files):
        real_put(self, key, files)
        puts.append(key)
        if len(puts) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(CellStore, "put", put_then_stop)
    with pytest.raises(SweepInterrupted) as stopped:
        run_sweep(cells, tmp_path / "s", progress=False, checkpoint_every="10it")
    monkeypatch.undo()
    assert (stopped.value.done, stopped.value.total) == (0, 2)
    kept = tmp_path / "s" / "cells" / cells[0].key()
    assert (kept / "checkpoint.pt").is_file() and not (tmp_path / "s" / "cells" / f"{cells[0].key()}.json").exists()
    rows = run_sweep(cells, tmp_path / "s", progress=False, checkpoint_every="10it")
    assert rows[0]["resumed_from"] == 20 and rows[0]["retries"] == 1 and rows[1]["resumed_from"] is None
    fresh = run_sweep(cells, tmp_path / "fresh", progress=False)
    for r, f in zip(rows, fresh):
        assert r["test_accuracy"] == f["test_accuracy"] and r["grad_norm"] == f["grad_norm"]
        assert [(h["step"], h["test_accuracy"], h["train_loss"]) for h in r["history"]] == \
            [(h["step"], h["test_accuracy"], h["train_loss"]) for h in f["history"]]
        assert open(r["mask_path"], "rb").read() == open(f["mask_path"], "rb").read()
    assert not kept.exists()


def test_ctrl_c_keeps_finished_cells_and_prints_one_line_with_the_command_that_resumes(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the driver loop (simulated while the second cell starts): exit 130, no traceback, one line."""
    import pathnet.sweep as sweep
    from pathnet.cli import main

    real, calls = sweep.run_cell_task, []

    def second_is_interrupted(cell, job):
        calls.append(cell)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(cell, job)

    monkeypatch.setattr(sweep, "run_cell_task", second_is_interrupted)
    grid = tmp_path / "g.toml"
    grid.write_text('[grid]\nmodel = "lenet300"\ndataset = "digits"\nmethod = ["random", "magnitude"]\n'
                    'density = 0.2\nepochs = 1\n')
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "g.toml", "--run-dir", "r", "--quiet", "--overwrite", "--checkpoint-every", "5it"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted: 1 of 2 cells done in " + str(tmp_path / "r") in err[0], err
    assert err[0].endswith(f"run: pathnet sweep g.toml --run-dir {tmp_path / 'r'} --checkpoint-every 5it --quiet")
    assert len(list((tmp_path / "r" / "cells").glob("*.json"))) == 1
    monkeypatch.setattr(sweep, "run_cell_task", real)
    assert main(["sweep", "g.toml", "--run-dir", str(tmp_path / "r"), "--checkpoint-every", "5it", "--quiet"]) == 0
    assert len(list((tmp_path / "r" / "cells").glob("*.json"))) == 2


def test_cluster_options_are_checked_before_any_work(tmp_path):
    from pathnet.cli import main

    cells = grid_cells(TINY)
    for kwargs, match in (({"max_concurrent": 0}, "max_concurrent"), ({"cpus_per_cell": -1}, "cpus_per_cell"),
                          ({"checkpoint_every": "0it"}, "checkpoint_every"),
                          ({"backend": "ray", "address": "head"}, "not HOST:PORT"),
                          ({"backend": "ray", "device": "cuda"}, "--gpus-per-cell")):
        with pytest.raises(HparamError, match=match):
            run_sweep(cells, tmp_path / "s", **kwargs)
    assert not (tmp_path / "s").exists()
    assert main(["sweep", "g.toml", "--max-concurrent", "0"]) == 2
