"""Bad inputs are refused in one line before any work, and leave the run directory as it was.

Oracle: the contract in DESIGN.md ("Errors"): the CLI exits with status 2 and prints a single line on
stderr that names the bad value and what is allowed, never a traceback; the API raises a PathnetError
subclass with a one-line message; nothing in the working folder (which holds a run directory) is
written or changed. Also: resume mismatches for train, imp and sweep, the run-dir lock, byte-identical
mask files, divergence, stale temporary files, file modes, method options and ``pathnet methods``.
"""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import pathnet as pn
import pathnet.cli as cli
from pathnet.errors import (DataError, DensityError, GraphError, HparamError, MaskError, OptionError,
                            PathnetError, RegistryError, RunError, WeightError)

LENET = ["--model", "lenet300", "--data", "digits"]
FAST = dict(batch_size=256, progress=False)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A working folder with a mask, unreadable files, a file where folders are expected, grid files and a
    run directory holding a result."""
    d = tmp_path_factory.mktemp("work")
    model = pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0)
    pn.prune(model, "random", 0.3).save(d / "mask.safetensors")
    pn.prune(pn.models.get("lenet300", seed=0), "random", 0.3).save(d / "mask28.safetensors")  # 28×28 inputs
    (d / "text.txt").write_text("not a mask\n")
    (d / "notes.pt").write_text("not a torch file\n")
    torch.save(nn.Linear(2, 2), d / "module.pt")  # needs unpickling a module: refused by weights_only
    (d / "adir").mkdir()
    (d / "R").mkdir()
    (d / "R" / "result.json").write_text("{}")
    grids = {
        "abc": 'density = "abc"', "empty": "density = []", "big": "density = 1.5", "seed": "density = 0.1\nseed = -1",
        "epochs": "density = 0.1\nepochs = 0", "typo_method": 'density = 0.1\nmethod2 = "x"',
    }
    for name, extra in grids.items():
        (d / f"{name}.toml").write_text(f'[grid]\nmodel = "lenet300"\ndataset = "digits"\nmethod = "random"\n{extra}\n')
    base = '[grid]\nmodel = "lenet300"\ndataset = "digits"\nmethod = "random"\ndensity = 0.1\n'
    (d / "optons.toml").write_text(base + "[optons.random]\nx = 1\n")
    (d / "bogus.toml").write_text(base + "[options.random]\nbogus = 1\n")
    (d / "stray.toml").write_text(base + '[options.phew]\nbias = "uniform"\n')
    (d / "phewbias.toml").write_text(base.replace('"random"', '"phew"') + '[options.phew]\nbias = "sideways"\n')
    (d / "lr.toml").write_text(base + "[train]\nlr = -1\n")
    (d / "trainkey.toml").write_text(base + "[train]\nlearning_rate = 0.1\n")
    (d / "nomethod.toml").write_text(base.replace('"random"', '"rnadom"'))
    (d / "vgg.toml").write_text(base.replace('"lenet300"', '"vgg16"'))
    (d / "broken.toml").write_text("[grid\nmodel = ")
    (d / "nogrid.toml").write_text("[train]\nlr = 0.1\n")
    return d


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.rglob("*"))}


def M(name="mask.safetensors"):
    return name


CLI_CASES = [
    # -- method options (declared per method) --
    (["prune", "phew", "0.1", *LENET, "--option", "bias=foo"], ["bias='foo'", "'magnitude', 'uniform'"]),
    (["prune", "phew", "0.1", *LENET, "--option", "bogus=1"], ["'bogus'", "valid: bias, kernel"]),
    (["prune", "snip", "0.1", *LENET, "--option", "samples=0"], ["samples='0'", "≥ 1"]),
    (["prune", "snip", "0.1", *LENET, "--option", "samples=1.5"], ["samples='1.5'", "an integer"]),
    (["prune", "snip", "0.1", *LENET, "--option", "scope=blah"], ["scope='blah'", "'global', 'layerwise'"]),
    (["prune", "random", "0.1", *LENET, "--option", "bogus=1"], ["'bogus'", "takes no options"]),
    (["prune", "erk", "0.1", *LENET, "--option", "seed=3"], ["'seed'", "takes no options"]),
    (["prune", "smart_ratio", "0.1", *LENET, "--option", "linear_density=2"], ["linear_density='2'", "≤ 1"]),
    (["prune", "smart_ratio", "0.1", *LENET, "--option", "depth_scaling=maybe"], ["'maybe'", "true or false"]),
    (["prune", "grasp", "0.1", *LENET, "--option", "temperature=0"], ["temperature='0'", "> 0"]),
    (["prune", "synflow", "0.1", *LENET, "--option", "iterations=0"], ["iterations='0'", "≥ 1"]),
    (["prune", "magnitude_gradient", "0.1", *LENET, "--option", "a=-1"], ["a='-1'", "≥ 0"]),
    (["prune", "magnitude", "0.1", *LENET, "--option", "samples=5"], ["'samples'", "valid: scope"]),
    (["prune", "phew", "0.1", *LENET, "--option", "novalue"], ["'novalue'", "KEY=VALUE"]),
    (["prune", "phew", "0.1", *LENET, "--option", "patience=-5"], ["patience='-5'", "≥ 1"]),
    # -- densities, seeds, names, shapes --
    (["prune", "phew", "0", "--model", "lenet300"], ["got 0.0", "(0, 1]"]),
    (["prune", "phew", "1.5", "--model", "lenet300"], ["1.5", "(0, 1]"]),
    (["prune", "phew", "nan", "--model", "lenet300"], ["nan", "(0, 1]"]),
    (["prune", "phew", "abc", "--model", "lenet300"], ["'abc'", "float"]),
    (["prune", "random", "1e-9", "--model", "lenet300"], ["1e-09", "0 weights", "smallest density"]),
    (["prune", "phew", "0.1", "--model", "lenet300", "--seed", str(2**64)], [str(2**64), "≤"]),
    (["prune", "phew", "0.1", "--model", "lenet300", "--seed", "-1"], ["seed='-1'", "≥ 0"]),
    (["prune", "nope", "0.1", "--model", "lenet300"], ["'nope'", "choose one of"]),
    (["prune", "phew", "0.1", "--model", "nope"], ["'nope'", "choose one of"]),
    (["prune", "snip", "0.1", "--model", "lenet300"], ["needs --data", "digits"]),
    (["prune", "phew", "0.05", "--model", "vgg16", "--data", "digits"], ["vgg16", "(1, 8, 8)", "--input-shape"]),
    (["prune", "phew", "0.1", "--model", "lenet300", "--input-shape", "-3", "32", "32"], ["'-3'", "≥ 1"]),
    (["prune", "phew", "0.1", "--model", "lenet300", "--input-shape", "0"], ["'0'", "≥ 1"]),
    (["prune", "phew", "0.1", "--model", "lenet300", "--out", "text.txt/m.safetensors"], ["'text.txt'", "is a file"]),
    (["prune", "phew", "0.1", "--model", "lenet300", "--out", "adir"], ["'adir'", "is a directory"]),
    (["prune", "random", "0.1", "--model", "lenet300", "--data", "nope"], ["'nope'", "choose one of"]),
    # -- training hyperparameters (every TrainingHparams field) --
    (["train", *LENET, "--device", "foo"], ["'foo'", "cpu, cuda"]),
    (["train", *LENET, "--momentum", "-1"], ["momentum='-1'", "≥ 0"]),
    (["train", *LENET, "--weight-decay", "-1"], ["weight_decay='-1'", "≥ 0"]),
    (["train", *LENET, "--lr", "0"], ["lr='0'", "> 0"]),
    (["train", *LENET, "--lr", "nan"], ["lr='nan'", "finite"]),
    (["train", *LENET, "--lr", "inf"], ["lr='inf'", "finite"]),
    (["train", *LENET, "--epochs", "0"], ["epochs='0'", "≥ 1"]),
    (["train", *LENET, "--epochs", "1.5"], ["epochs='1.5'", "an integer"]),
    (["train", *LENET, "--batch-size", "0"], ["batch_size='0'", "≥ 1"]),
    (["train", *LENET, "--optimizer", "sgdd"], ["optimizer='sgdd'", "'sgd', 'adam', 'adamw'"]),
    (["train", *LENET, "--schedule", "linear"], ["schedule='linear'", "'multistep', 'cosine'"]),
    (["train", *LENET, "--milestones", "abc"], ["'abc'", "'2ep'"]),
    (["train", *LENET, "--warmup", "5x"], ["'5x'", "'2ep'"]),
    (["train", *LENET, "--gamma", "-0.1"], ["gamma='-0.1'", "> 0"]),
    (["train", *LENET, "--duration", "0ep"], ["'0ep'", "at least one step"]),
    (["train", *LENET, "--epochs", "2", "--duration", "5ep"], ["--duration (5ep)", "not both"]),
    (["train", *LENET, "--seed", str(2**64)], [str(2**64), "≤"]),
    # -- files and folders --
    (["train", *LENET, "--run-dir", "text.txt"], ["'text.txt'", "is a file"]),
    (["train", *LENET, "--run-dir", "text.txt/sub"], ["'text.txt'", "is a file"]),
    (["train", *LENET, "--json", "adir"], ["'adir'", "is a directory"]),
    (["train", *LENET, "--csv", "text.txt/rows.csv"], ["'text.txt'", "is a file"]),
    (["train", *LENET, "--mask", "text.txt"], ["text.txt", "safetensors"]),
    (["train", *LENET, "--mask", "notes.pt"], ["notes.pt", "not a readable torch state dict"]),
    (["train", *LENET, "--mask", "module.pt"], ["module.pt", "not a readable torch state dict"]),
    (["train", *LENET, "--mask", "missing.safetensors"], ["missing.safetensors", "no mask file"]),
    (["train", *LENET, "--mask", "mask28.safetensors"], ["'1.weight'", "has shape"]),
    (["train", "--model", "lenet300"], ["needs --data", "mnist5k"]),
    (["train", "--model", "vgg17", "--data", "digits"], ["'vgg17'", "choose one of"]),
    (["train", *LENET, "--input-shape", "3", "32", "32"], ["--input-shape 3 32 32", "(1, 8, 8)"]),
    (["train", "--model", "lenet300", "--data", "cifar10", "--data-root", "nowhere"], ["nowhere", "download=True"]),
    (["analyze", M(), "--model", "lenet300", "--input-shape", "3", "32", "32"], ["'1.weight'", "has shape"]),
    (["analyze", "notes.pt", "--model", "lenet300"], ["notes.pt", "not a readable"]),
    (["compact", M(), *LENET, "--out", "text.txt"], ["'text.txt'", "is a file"]),
    (["compare", M(), M(), "--baseline", "-1"], ["baseline='-1'", "≥ 0"]),
    # -- imp: everything checked before the dense training --
    ([*"imp".split(), *LENET, "--criterion", "foo"], ["criterion='foo'", "'magnitude'"]),
    (["imp", *LENET, "--criterion", "random"], ["criterion='random'", "'magnitude'"]),
    (["imp", *LENET, "--levels", "-1"], ["levels='-1'", "≥ 1"]),
    (["imp", *LENET, "--levels", "1.5"], ["levels='1.5'", "an integer"]),
    (["imp", *LENET, "--rate", "0"], ["rate=0.0", "(0, 1)"]),
    (["imp", *LENET, "--rate", "1.5"], ["rate=1.5", "(0, 1)"]),
    (["imp", *LENET, "--rewind", "5x"], ["'5x'", "'2ep'"]),
    (["imp", *LENET, "--rewind", "100ep", "--epochs", "1"], ["100ep", "not before the end"]),
    (["imp", *LENET, "--option", "bogus=1"], ["'bogus'", "valid: scope"]),
    (["imp", *LENET, "--criterion", "snip", "--option", "samples=0"], ["samples='0'", "≥ 1"]),
    (["imp", *LENET, "--lr", "-1", "--run-dir", "R"], ["lr='-1'", "> 0"]),
    # -- instability: checked before either copy trains --
    (["instability", *LENET, "--alphas", "0"], ["alphas='0'", "≥ 3"]),
    (["instability", *LENET, "--alphas", "1"], ["alphas='1'", "≥ 3"]),
    (["instability", *LENET, "--seeds", "0", "0"], ["seeds=(0, 0)", "different"]),
    (["instability", *LENET, "--seeds", "-1", "2"], ["'-1'", "≥ 0"]),
    (["instability", *LENET, "--rewind-state", "notes.pt"], ["notes.pt", "not a readable torch state"]),
    (["instability", *LENET, "--rewind-state", "missing.pt"], ["missing.pt", "no such file"]),
    (["instability", *LENET, "--start-step", "99ep"], ["99ep", "not before the end"]),
    # -- demo: checked before the first network trains --
    (["demo", "--density", "0", "--out", "R"], ["got 0.0", "(0, 1]"]),
    (["demo", "--density", "1.5", "--out", "R"], ["1.5", "(0, 1]"]),
    (["demo", "--epochs", "0", "--out", "R"], ["epochs='0'", "≥ 1"]),
    (["demo", "--device", "foo", "--out", "R"], ["'foo'", "cpu, cuda"]),
    # -- sweeps: the whole grid checked before the first cell --
    (["sweep", "abc.toml", "--run-dir", "R"], ["'abc'", "(0, 1]"]),
    (["sweep", "empty.toml", "--run-dir", "R"], ["density = []", "at least one value"]),
    (["sweep", "big.toml", "--run-dir", "R"], ["1.5", "(0, 1]"]),
    (["sweep", "seed.toml", "--run-dir", "R"], ["-1", "≥ 0"]),
    (["sweep", "epochs.toml", "--run-dir", "R"], ["got 0", "≥ 1"]),
    (["sweep", "typo_method.toml", "--run-dir", "R"], ["'method2'", "a grid has"]),
    (["sweep", "optons.toml", "--run-dir", "R"], ["'optons'", "[grid], [options], [train]"]),
    (["sweep", "bogus.toml", "--run-dir", "R"], ["'bogus'", "takes no options"]),
    (["sweep", "stray.toml", "--run-dir", "R"], ["[options.phew]", "the grid's methods are random"]),
    (["sweep", "phewbias.toml", "--run-dir", "R"], ["bias='sideways'", "'magnitude', 'uniform'"]),
    (["sweep", "lr.toml", "--run-dir", "R"], ["lr=-1", "> 0"]),
    (["sweep", "trainkey.toml", "--run-dir", "R"], ["'learning_rate'", "known: optimizer, lr"]),
    (["sweep", "nomethod.toml", "--run-dir", "R"], ["'rnadom'", "choose one of"]),
    (["sweep", "vgg.toml", "--run-dir", "R"], ["vgg16", "(1, 8, 8)"]),
    (["sweep", "broken.toml", "--run-dir", "R"], ["broken.toml", "not valid TOML"]),
    (["sweep", "nogrid.toml", "--run-dir", "R"], ["nogrid.toml", "no [grid]"]),
    (["sweep", "abc.toml", "--run-dir", "text.txt"], ["'abc'", "(0, 1]"]),
    (["sweep", "../nowhere.toml"], ["nowhere.toml", "no grid file"]),
    (["sweep", "bogus.toml", "--gpus-per-cell", "x"], ["'x'", "float"]),
    # -- others --
    (["figures", "--only", "typo"], ["'typo'", "choose from"]),
    (["analyze", M(), *LENET, "--level", "foo"], ["'foo'", "'unit', 'spatial'"]),
    (["imp", *LENET, "--score-at", "foo"], ["'foo'", "'end', 'rewind', 'init'"]),
    (["frobnicate"], ["'frobnicate'", "choose from"]),
]


@pytest.mark.parametrize("argv, words", CLI_CASES, ids=[" ".join(a)[:60] for a, _ in CLI_CASES])
def test_cli_refuses_in_one_line_and_writes_nothing(argv, words, work, capsys, monkeypatch):
    monkeypatch.chdir(work)
    before = snapshot(work)
    t0 = time.perf_counter()
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and all(w in lines[0] for w in words), (lines[0], words)
    assert snapshot(work) == before
    assert time.perf_counter() - t0 < 10  # refused before any work (the slowest check loads a dataset)


def test_cli_prints_no_traceback_in_a_real_process(work):
    for argv in (["train", *LENET, "--momentum", "-1"], ["instability", *LENET, "--alphas", "0"]):
        proc = subprocess.run([sys.executable, "-m", "pathnet", *argv], capture_output=True, text=True, cwd=work)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cli_maps_an_unexpected_error_to_one_line_and_status_1(work, capsys, monkeypatch):
    """A bug (not a user mistake) is one line saying so, status 1; --debug shows the traceback."""
    monkeypatch.chdir(work)

    def broken(*a, **k):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(pn.pruning.METHODS["random"], "find", broken)
    assert cli.main(["prune", "random", "0.1", "--model", "lenet300", "--out", "adir/x.safetensors"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ZeroDivisionError: boom" in err[0] and "this is a bug, please report it" in err[0]
    with pytest.raises(ZeroDivisionError):
        cli.main(["prune", "random", "0.1", "--model", "lenet300", "--out", "adir/x.safetensors", "--debug"])


# -- the API -----------------------------------------------------------------------------------

def lenet():
    return pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0)


def nan_model():
    m = lenet()
    with torch.no_grad():
        m[1].weight[0, 0] = float("nan")
    return m


def API_CASES(work):
    d = pn.data.get("digits")
    R = work / "R"
    mask = pn.Mask.load(work / "mask.safetensors")
    from pathnet.hparams import Step, TrainingHparams
    from pathnet.pruning import keep_top, schedule
    from pathnet.pruning.phew import phew_mask
    from pathnet.sweep import grid_cells, run_sweep
    from pathnet.demo import run_demo
    g = {"model": "lenet300", "dataset": "digits", "method": "random"}
    return [
        (lambda: pn.Mask({"a": torch.zeros(0)}), MaskError, ["'a'", "empty"]),
        (lambda: pn.Mask({}), MaskError, ["at least one entry"]),
        (lambda: pn.Mask({"a": torch.tensor([0.5])}), MaskError, ["non-binary", "0 and 1"]),
        (lambda: pn.Mask.load(work / "notes.pt"), MaskError, ["notes.pt", "not a readable"]),
        (lambda: pn.Mask.load(work / "module.pt"), MaskError, ["module.pt", "not a readable"]),
        (lambda: pn.instability(lenet(), mask, d, seeds=(0,), **FAST), HparamError, ["seeds=(0,)", "two different"]),
        (lambda: pn.instability(lenet(), mask, d, seeds=(0, 0), **FAST), HparamError, ["seeds=(0, 0)", "different"]),
        (lambda: pn.instability(lenet(), mask, d, alphas=1, **FAST), HparamError, ["alphas", "≥ 3", "got 1"]),
        (lambda: pn.instability(lenet(), mask, d, alphas=0, **FAST), HparamError, ["alphas", "≥ 3", "got 0"]),
        (lambda: pn.instability(lenet(), "mask", d, **FAST), HparamError, ["mask", "pathnet.Mask", "str"]),
        (lambda: pn.instability(lenet(), mask, d, rewind_state={"x": 1}, **FAST), HparamError, ["rewind_state"]),
        (lambda: pn.instability(lenet(), mask, d, momentum=-1, **FAST), OptionError, ["momentum=-1", "≥ 0"]),
        (lambda: pn.imp(lenet(), d, levels=1.5, run_dir=R, **FAST), HparamError, ["levels", "got 1.5"]),
        (lambda: pn.imp(lenet(), d, levels=-1, run_dir=R, **FAST), HparamError, ["levels", "≥ 1", "-1"]),
        (lambda: pn.imp(lenet(), d, levels=True, run_dir=R, **FAST), HparamError, ["levels", "got True"]),
        (lambda: pn.imp(lenet(), d, rate=1, run_dir=R, **FAST), HparamError, ["rate=1", "(0, 1)"]),
        (lambda: pn.imp(lenet(), d, criterion="foo", run_dir=R, **FAST), OptionError, ["criterion='foo'", "'snip'"]),
        (lambda: pn.imp(lenet(), d, score_at="x", run_dir=R, **FAST), OptionError, ["score_at='x'", "'end'"]),
        (lambda: pn.imp(lenet(), d, rewind="100ep", epochs=1, run_dir=R, **FAST), HparamError, ["100ep", "before"]),
        (lambda: pn.imp(lenet(), d, lr=0, run_dir=R, **FAST), OptionError, ["lr=0", "> 0"]),
        (lambda: pn.imp(lenet(), d, bogus=1, run_dir=R, **FAST), HparamError, ["'bogus'", "takes"]),
        (lambda: pn.imp(lenet(), d, criterion_options={"a": 2}, run_dir=R, **FAST), OptionError, ["'a'", "valid"]),
        (lambda: pn.imp(nan_model(), d, run_dir=R, **FAST), WeightError, ["'1.weight'", "NaN"]),
        (lambda: pn.train(lenet(), None, d, epochs=0, run_dir=R), HparamError, ["epochs", "≥ 1", "got 0"]),
        (lambda: pn.train(lenet(), None, d, epochs=1.5, run_dir=R), HparamError, ["epochs", "got 1.5"]),
        (lambda: pn.train(lenet(), None, d, epochs=True, run_dir=R), HparamError, ["epochs", "got True"]),
        (lambda: pn.train(lenet(), None, d, steps=0, run_dir=R), HparamError, ["steps", "got 0"]),
        (lambda: pn.train(lenet(), None, d, epochs=1, steps="5it", run_dir=R), HparamError, ["not both"]),
        (lambda: pn.train(lenet(), None, d, momentum=-1, run_dir=R), OptionError, ["momentum=-1", "≥ 0"]),
        (lambda: pn.train(lenet(), None, d, lr=float("nan"), run_dir=R), OptionError, ["lr=nan", "finite"]),
        (lambda: pn.train(lenet(), None, d, batch_size=0, run_dir=R), OptionError, ["batch_size=0", "≥ 1"]),
        (lambda: pn.train(lenet(), None, d, milestones=("x",), run_dir=R), OptionError, ["'x'", "'2ep'"]),
        (lambda: pn.train(lenet(), None, d, bogus=1, run_dir=R), HparamError, ["'bogus'", "known: optimizer"]),
        (lambda: pn.train(lenet(), None, d, hparams="x", run_dir=R), HparamError, ["hparams", "TrainingHparams"]),
        (lambda: pn.train(lenet(), None, d, device="foo", run_dir=R), HparamError, ["'foo'", "cpu, cuda"]),
        (lambda: pn.train(lenet(), None, d, device="cuda:99", run_dir=R), HparamError, ["'cuda:99'", "use cpu"]),
        (lambda: pn.train(lenet(), None, d, seed=2**64, run_dir=R), HparamError, ["seed", str(2**64)]),
        (lambda: pn.train(lenet(), None, d, seed=-1, run_dir=R), HparamError, ["seed", "≥ 0", "-1"]),
        (lambda: pn.train(lenet(), None, d, eval_every="x", run_dir=R), HparamError, ["eval_every='x'", "'2ep'"]),
        (lambda: pn.train(lenet(), None, d, start_step="100ep", run_dir=R), HparamError, ["100ep", "before"]),
        (lambda: pn.train(lenet(), None, "nope", run_dir=R), RegistryError, ["'nope'", "choose one of"]),
        (lambda: pn.train(lenet(), None, 123, run_dir=R), DataError, ["int", "dataset name"]),
        (lambda: pn.train(lenet(), "m.safetensors", d, run_dir=R), HparamError, ["mask", "str"]),
        (lambda: pn.train(nan_model(), None, d, run_dir=R), WeightError, ["'1.weight'", "NaN"]),
        (lambda: pn.train(pn.models.get("lenet300"), None, d, run_dir=R), DataError, ["(1, 8, 8)", "input shape"]),
        (lambda: pn.train(lenet(), None, d, run_dir=work / "text.txt"), RunError, ["text.txt", "is a file"]),
        (lambda: pn.train(lenet(), None, d, progress="yes", run_dir=R), HparamError, ["progress", "'yes'"]),
        (lambda: pn.prune(lenet(), "random", True), DensityError, ["True", "(0, 1]"]),
        (lambda: pn.prune(lenet(), "random", "0.1"), DensityError, ["'0.1'", "(0, 1]"]),
        (lambda: pn.prune(lenet(), "random", 1e-9), DensityError, ["1e-09", "0 weights"]),
        (lambda: pn.prune(lenet(), "random", float("nan")), DensityError, ["nan", "(0, 1]"]),
        (lambda: pn.prune(lenet(), "random", 50), DensityError, ["50", "KEPT"]),
        (lambda: pn.prune(lenet(), "phew", 0.1, input_shape=(1, 8, 8), bias="foo"), OptionError, ["'foo'", "'uniform'"]),
        (lambda: pn.prune(lenet(), "random", 0.1, bogus=1), OptionError, ["'bogus'", "no options"]),
        (lambda: pn.prune(lenet(), "erk", 0.1, bogus=1), OptionError, ["'bogus'", "no options"]),
        (lambda: pn.prune(lenet(), "snip", 0.1, data=d, samples=0), OptionError, ["samples=0", "≥ 1"]),
        (lambda: pn.prune(lenet(), "snip", 0.1, data=d, scope="blah"), OptionError, ["'blah'", "'layerwise'"]),
        (lambda: pn.prune(lenet(), "synflow", 0.1, input_shape=(1, 8, 8), iterations=2.5), OptionError, ["2.5"]),
        (lambda: pn.prune(lenet(), "phew", 0.1, input_shape="1,8,8"), GraphError, ["'1,8,8'", "positive integers"]),
        (lambda: pn.prune(lenet(), "phew", 0.1, input_shape=(-1, 8, 8)), GraphError, ["(-1, 8, 8)", "positive"]),
        (lambda: pn.prune(lenet(), "phew", 0.1, input_shape=(1, 8, 8), seed=-1), HparamError, ["seed", "-1"]),
        (lambda: pn.prune(lenet(), "phew", 0.1), GraphError, ["phew", "input_shape"]),
        (lambda: pn.prune(lenet(), "snip", 0.1), DataError, ["snip", "pass data="]),
        (lambda: pn.prune(lenet(), "snip", 0.1, data=pn.data.get("mnist1d")), DataError, ["(1, 40)", "input shape"]),
        (lambda: pn.prune(lenet(), "nope", 0.1), RegistryError, ["'nope'", "choose one of"]),
        (lambda: pn.prune(lenet(), 3, 0.1), RegistryError, ["3", "choose one of"]),
        (lambda: keep_top({"a": torch.rand(4)}, 0.5, scope="x"), OptionError, ["scope='x'", "'global'"]),
        (lambda: schedule(0.1, 0), OptionError, ["iterations", "≥ 1"]),
        (lambda: schedule(0.1, 3, "cubic"), OptionError, ["'cubic'", "'linear'"]),
        (lambda: phew_mask(pn.to_dag(lenet(), (1, 8, 8)), 0.1, bias="x"), OptionError, ["bias='x'", "'uniform'"]),
        (lambda: TrainingHparams(lr=-1), OptionError, ["lr=-1", "> 0"]),
        (lambda: TrainingHparams(optimizer="rmsprop"), OptionError, ["'rmsprop'", "'adamw'"]),
        (lambda: Step.parse("2 epochs", 10), HparamError, ["'2 epochs'", "'2ep'"]),
        (lambda: grid_cells({**g, "density": "abc"}), DensityError, ["'abc'", "(0, 1]"]),
        (lambda: grid_cells({**g, "density": []}), HparamError, ["density = []", "at least one"]),
        (lambda: grid_cells({**g, "density": [0.1, 1.5]}), DensityError, ["1.5", "(0, 1]"]),
        (lambda: grid_cells({**g, "density": 0.1}, {"phew": {}}), HparamError, ["phew", "does not run"]),
        (lambda: grid_cells({**g, "density": 0.1}, {"random": {"bogus": 1}}), OptionError, ["'bogus'"]),
        (lambda: grid_cells({**g, "method": "imp", "density": 0.1}, {"imp": {"rewind": "x"}}), OptionError, ["'x'"]),
        (lambda: run_sweep(grid_cells({**g, "density": 0.1}), R, train_overrides={"lr": 0}), OptionError, ["lr=0"]),
        (lambda: run_sweep(grid_cells({**g, "density": 0.1}), R, backend="x"), HparamError, ["'x'", "'ray'"]),
        (lambda: run_sweep([], R), HparamError, ["non-empty list of cells"]),
        (lambda: run_sweep(grid_cells({**g, "density": 0.1}), work / "text.txt"), RunError, ["is a file"]),
        (lambda: run_demo(R, density=0), DensityError, ["0", "(0, 1]"]),
        (lambda: run_demo(R, epochs=0), HparamError, ["epochs", "≥ 1"]),
    ]


def test_api_refuses_with_a_pathnet_error_in_one_line_and_writes_nothing(work):
    cases = API_CASES(work)
    assert len(cases) >= 80
    failures = []
    for i, (call, cls, words) in enumerate(cases):
        before = snapshot(work)
        try:
            call()
        except PathnetError as e:
            msg = str(e)
            if not isinstance(e, cls) or "\n" in msg or not all(w in msg for w in words):
                failures.append((i, type(e).__name__, msg, words))
        except Exception as e:  # noqa: BLE001 — the point of the test
            failures.append((i, f"not a PathnetError: {type(e).__name__}", str(e), words))
        else:
            failures.append((i, "accepted", "", words))
        if snapshot(work) != before:
            failures.append((i, "wrote to the working folder", "", words))
    assert not failures, "\n".join(map(str, failures))
