"""analysis/claims.py: the statistics against scipy and hand-built cases, the pairing of runs, the
extra-seed rule, the quick pipeline end to end, and the README's table against the committed CSV."""

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "analysis"))
import claims  # noqa: E402


def test_paired_matches_scipys_paired_t_test():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.8, 0.05, 9), rng.normal(0.78, 0.05, 9)
    t = claims.paired(a, b)
    ref = stats.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    d = a - b
    assert t["n"] == 9
    assert t["effect"] == pytest.approx(d.mean())
    assert (t["low"], t["high"]) == pytest.approx((ci.low, ci.high))
    assert t["p"] == pytest.approx(ref.pvalue)
    assert t["d_z"] == pytest.approx(d.mean() / d.std(ddof=1))


def test_paired_degenerate_cases():
    same = claims.paired([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])  # every difference 0.1: a zero-width interval
    assert (same["low"], same["high"], same["p"]) == pytest.approx((0.1, 0.1, 0.0))
    one = claims.paired([0.5], [0.4])  # one pair: no interval at all
    assert one["low"] == -math.inf and one["high"] == math.inf and claims.verdict(one, 0.005) == "inconclusive"


@pytest.mark.parametrize("low, high, kind, expected", [
    (0.001, 0.02, "beats", "holds"),            # above 0
    (-0.01, 0.004, "beats", "does not hold"),   # a gain of the margin (0.005) is ruled out
    (-0.03, -0.01, "beats", "does not hold"),   # the other side wins
    (-0.01, 0.02, "beats", "inconclusive"),
    (-0.004, 0.01, "within", "holds"),          # no worse than the margin
    (-0.03, -0.006, "within", "does not hold"),
    (-0.03, 0.01, "within", "inconclusive"),
])
def test_verdict_rules(low, high, kind, expected):
    assert claims.verdict({"low": low, "high": high}, 0.005, kind) == expected


def _row(model, method, density, seed, acc):
    return {"model": model, "method": method, "density": density, "seed": seed, "test_accuracy": acc}


def test_finder_pairs_match_model_density_and_seed():
    rows = [_row("m", "phew", 0.1, 0, 0.9), _row("m", "snip", 0.1, 0, 0.8),
            _row("m", "phew", 0.1, 1, 0.7), _row("m", "snip", 0.1, 1, 0.75),
            _row("m", "phew", 0.05, 0, 0.6),  # no SNIP partner: dropped
            _row("m", "snip", 0.02, 0, 0.1)]  # density outside the test: dropped
    test = claims._finder_pairs(claims.Test(1, "t", "accuracy", 0.005, True, "finders", "f.png"), rows, "phew", "snip",
                                (0.1, 0.05), lambda r: r["test_accuracy"])
    assert test.a == [0.9, 0.7] and test.b == [0.8, 0.75]
    assert test.row("x")["effect"] == pytest.approx(0.025)
    assert test.cells == {("m", "phew", 0.1), ("m", "snip", 0.1), ("m", "phew", 0.05), ("m", "snip", 0.05)}


def test_extra_seeds_go_to_the_cells_of_inconclusive_deciding_tests_only():
    plan = claims.Plan(setting="quick", **claims.PLANS["quick"])
    plan = claims.Plan(**{**vars(plan), "extra_seeds": (7,)})
    mk = lambda deciding, experiment, cells: claims.Test(1, "t", "accuracy", 0.005, deciding, experiment,  # noqa
                                                          "f.png", cells=cells)
    tests = [mk(True, "finders", {("m", "phew", 0.1)}), mk(True, "finders", {("m", "snip", 0.1)}),
             mk(False, "finders", {("m", "grasp", 0.1)}), mk(True, "rewinding", set())]
    rows = [{"verdict": v} for v in ("inconclusive", "holds", "inconclusive", "inconclusive")]
    assert claims.extra_work(plan, tests, rows) == {"finders": {("m", "phew", 0.1, 7)}, "rewinding": {7}}
    assert claims.extra_work(claims.Plan(**{**vars(plan), "extra_seeds": ()}), tests, rows) == {}


def test_magnitude_gradient_at_init_is_snip_bit_for_bit():
    """Why claim 4's at-init test reads SNIP's runs: with a = b = 1 the two scores are one product."""
    import pathnet as pn

    ds = pn.data.get("digits")
    for seed in (0, 1):
        model = pn.models.get("conv2", num_classes=10, input_shape=ds.input_shape, seed=seed)
        a = pn.prune(model, "snip", 0.05, data=ds, seed=seed)
        b = pn.prune(model, "magnitude_gradient", 0.05, data=ds, seed=seed)
        assert list(a) == list(b) and all(bool((a[k] == b[k]).all()) for k in a)


def test_claim_verdict_combines_the_deciding_tests():
    rows = lambda *vs: [{"verdict": v, "deciding": True} for v in vs] + [{"verdict": "does not hold",  # noqa: E731
                                                                          "deciding": False}]
    assert claims.claim_verdict(rows("holds", "holds")) == "holds"
    assert claims.claim_verdict(rows("holds", "inconclusive")) == "inconclusive"
    assert claims.claim_verdict(rows("inconclusive", "does not hold")) == "does not hold"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("claims")
    proc = subprocess.run([sys.executable, "-m", "pathnet", "figures", "--claims", "--quick", "--out", str(out),
                           "--runs", str(out / "runs")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_quick_mode_runs_every_experiment_end_to_end(quick):
    out, stdout = quick
    for name, columns in {"claims_accuracy": {"model", "method", "density", "n", "test_accuracy_mean",
                                              "test_accuracy_std", "alive_fraction_mean"},
                          "claims_grad_norm": {"model", "method", "step", "grad_norm_mean", "grad_norm_std"},
                          "claims_rewinding": {"rewind", "rewind_step", "test_accuracy_mean", "barrier_mean",
                                               "dense_accuracy_mean"},
                          "claims_similarity": {"method", "density", "chance_jaccard_mean"},
                          "claims_criteria": {"method", "level", "density", "test_accuracy_mean"}}.items():
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        rows = _csv(out / f"{name}.csv")
        assert rows and columns <= set(rows[0]), name
    acc = _csv(out / "claims_accuracy.csv")  # 1 model × (5 finders × 2 densities + dense), 2 seeds each
    assert len(acc) == 11 and all(r["n"] == "2" for r in acc)
    steps = {r["step"] for r in _csv(out / "claims_grad_norm.csv")}
    assert steps == {str(s) for s in range(1, claims.PLANS["quick"]["grad_steps"] + 1)}
    tests = _csv(out / "claims.csv")
    assert {r["claim"] for r in tests} == {"1", "2", "3", "4", "5"}
    assert {r["verdict"] for r in tests} <= {"holds", "does not hold", "inconclusive"}
    n = {r["test"]: int(r["n"]) for r in tests}
    assert n["PHEW beats snip (test accuracy)"] == 4  # 2 headline densities × 2 seeds
    assert n["GraSP beats SNIP at extreme sparsity"] == 2
    assert n["rewinding to 5it beats rewinding to 0it"] == 2
    assert n["PHEW overlaps IMP masks beyond chance"] == 4  # 2 IMP levels × 2 seeds
    assert n["in IMP: |θ|·|∂L/∂θ| beats |θ| at every level"] == 4  # 2 levels × 2 seeds
    for r in tests:
        assert float(r["low"]) <= float(r["effect"]) <= float(r["high"])
    assert "| claim |" in (out / "claims.md").read_text()
    assert all(f"claim {c}:" in stdout for c in range(1, 6))


def test_rerun_reads_back_what_was_done(quick):
    out, _ = quick
    before = (out / "claims.csv").read_text()
    proc = subprocess.run([sys.executable, str(ROOT / "analysis" / "claims.py"), "--quick", "--out", str(out),
                           "--runs", str(out / "runs")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sweep cell" not in proc.stdout + proc.stderr  # every cell was already done
    assert (out / "claims.csv").read_text() == before


def test_bad_arguments_get_one_line():
    proc = subprocess.run([sys.executable, "-m", "pathnet", "figures", "--claims", "--only", "instability"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0 and "--claims" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, str(ROOT / "analysis" / "claims.py"), "--data", "cifar10"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--data-root" in proc.stderr and "Traceback" not in proc.stderr


def test_readme_table_is_the_committed_csv():
    """Every number of the README's claims table comes from figures/claims.csv."""
    rows = claims.read_rows(ROOT / "figures" / "claims.csv")
    table = claims.markdown(claims.Plan(setting="mnist1d", **claims.PLANS["mnist1d"]), rows)
    readme = (ROOT / "README.md").read_text()
    assert table in readme
