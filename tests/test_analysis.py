"""Each analysis script in --quick mode writes a non-empty PNG and a CSV with its columns."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ANALYSIS = Path(__file__).resolve().parents[1] / "analysis"
COLUMNS = {
    "accuracy_vs_density": {"method", "density", "n", "test_accuracy_mean", "test_accuracy_std"},
    "paths_vs_density": {"method", "density", "n", "log10_paths_mean", "log10_paths_std"},
    "effective_density": {"method", "density", "effective_density_mean", "effective_fraction_mean",
                          "effective_fraction_std"},
    "grad_norm_at_init": {"method", "density", "grad_norm_mean", "grad_norm_std"},
    "width_profiles": {"method", "layer", "name", "units", "density_mean", "effective_width_mean",
                       "effective_width_std", "log10_paths_mean"},
    "vit_widths": {"method", "layer", "name", "units", "density_mean", "effective_width_mean",
                   "effective_width_std", "log10_paths_mean"},
    "imp_similarity": {"method", "density", "layer", "chance_jaccard_mean", "chance_jaccard_std"},
    "instability": {"rewind", "rewind_step", "density", "barrier_mean", "barrier_std", "train_barrier_mean"},
    "benchmarks": {"model", "density_pct", "kept", "pathnet_phew_s", "pathnet_analyze_s", "reference_phew_s",
                   "speedup"},
}


def test_every_figure_script_is_covered():
    assert {p.stem.removeprefix("fig_") for p in ANALYSIS.glob("fig_*.py")} == set(COLUMNS)


@pytest.mark.parametrize("name", sorted(COLUMNS))
def test_quick_mode_writes_png_and_csv(name, tmp_path):
    proc = subprocess.run([sys.executable, str(ANALYSIS / f"fig_{name}.py"), "--quick", "--out", str(tmp_path),
                           "--runs", str(tmp_path / "runs")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    png = tmp_path / f"{name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    with open(tmp_path / f"{name}.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and COLUMNS[name] <= set(rows[0])


def test_compaction_benchmark_quick_mode_writes_png_and_csv(tmp_path):
    proc = subprocess.run([sys.executable, str(ANALYSIS / "bench_compact.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "compaction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "compaction.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and {"model", "method", "density", "param_ratio", "flop_ratio", "speedup_b1", "speedup_b8",
                     "max_abs_diff"} <= set(rows[0])
    assert all(float(r["max_abs_diff"]) < 1e-4 for r in rows)  # the compacted nets compute the same function
