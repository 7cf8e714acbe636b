"""Every pathnet subcommand end to end in a temporary folder, at tiny sizes, and its bad arguments."""

import json
import subprocess
import sys

import pytest

import pathnet as pn
import pathnet.cli as cli


def run(*argv):
    return cli.main([str(a) for a in argv])


def test_prune_analyze_compare(tmp_path, capsys):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert run("prune", "phew", 0.1, "--model", "lenet300", "--data", "digits", "--out", a) == 0
    assert run("prune", "snip", 0.1, "--model", "lenet300", "--data", "digits", "--out", b,
               "--option", "samples=64") == 0
    mask = pn.Mask.load(a)
    assert mask.meta["method"] == "phew" and mask.num_kept == round(0.1 * mask.num_total)
    assert pn.Mask.load(b).meta["samples"] == 64
    capsys.readouterr()
    assert run("analyze", a, "--model", "lenet300", "--data", "digits", "--json", tmp_path / "r.json",
               "--csv", tmp_path / "r.csv") == 0
    out = capsys.readouterr().out
    assert "log10 paths (unit)" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["effective_density"] == pytest.approx(0.1, abs=1e-4)
    assert (tmp_path / "r.csv").read_text().startswith("index,name,kind")
    assert run("compare", a, b, "--model", "lenet300", "--data", "digits", "--baseline", 2, "--json",
               tmp_path / "c.json") == 0
    cmp = json.loads((tmp_path / "c.json").read_text())
    assert 0 < cmp["jaccard"] < 1 and cmp["baseline"]["jaccard"]["samples"] == 2 and cmp["path_jaccard"] is not None


def test_compact_writes_weights_that_rebuild_the_same_function(tmp_path, capsys):
    import torch
    from safetensors.torch import load_file

    mask = tmp_path / "m.safetensors"
    assert run("prune", "synflow", 0.05, "--model", "lenet300", "--data", "digits", "--out", mask) == 0
    assert run("compact", mask, "--model", "lenet300", "--data", "digits", "--out", tmp_path / "small") == 0
    assert "constant units folded" in capsys.readouterr().out
    report = json.loads((tmp_path / "small" / "compaction.json").read_text())
    assert report["params_after"] < report["params_before"]
    model = pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0)  # what the command built
    small, _, _ = pn.compact(model, pn.Mask.load(mask), (1, 8, 8))
    small.load_state_dict(load_file(tmp_path / "small" / "weights.safetensors"))
    masked = pn.Mask.load(mask).apply(model).eval()
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(small.eval()(x), masked(x), atol=1e-5)
    assert run("compact", mask, "--model", "lenet300", "--data", "digits", "--out", mask) == 2  # a file, not a dir


def test_train_imp_instability(tmp_path, capsys):
    mask = tmp_path / "m.safetensors"
    run("prune", "random", 0.3, "--model", "lenet300", "--data", "digits", "--out", mask)
    assert run("train", "--model", "lenet300", "--data", "digits", "--mask", mask, "--epochs", 1, "--run-dir",
               tmp_path / "t", "--json", tmp_path / "t.json") == 0
    assert "final test accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "t.json").read_text())["hparams"]["duration"] == "1ep"
    assert (tmp_path / "t" / "checkpoint.pt").is_file()
    assert run("imp", "--model", "lenet300", "--data", "digits", "--levels", 2, "--epochs", 1, "--rewind", "2it",
               "--run-dir", tmp_path / "imp") == 0
    assert "level  2  density 0.6400" in capsys.readouterr().out
    assert run("instability", "--model", "lenet300", "--data", "digits", "--mask", mask, "--alphas", 3, "--epochs",
               1, "--rewind-state", tmp_path / "imp" / "rewind.pt", "--start-step", "2it") == 0
    assert "barrier" in capsys.readouterr().out


def test_sweep_command(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text('[grid]\nmodel = "lenet300"\ndataset = "digits"\nmethod = ["random", "magnitude"]\n'
                    'density = 0.2\nepochs = 1\n')
    assert run("sweep", grid, "--run-dir", tmp_path / "s") == 0
    assert (tmp_path / "s" / "results.csv").read_text().count("\n") == 3


def test_figures_command(tmp_path, capsys):
    assert run("figures", "--quick", "--only", "paths_vs_density", "benchmarks", "--out", tmp_path / "f", "--runs",
               tmp_path / "r") == 0
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["benchmarks.csv", "benchmarks.png",
                                                                 "paths_vs_density.csv", "paths_vs_density.png"]


def test_demo_writes_table_and_summary(tmp_path, capsys):
    from pathnet.demo import run_demo, table

    rows = run_demo(tmp_path / "demo", epochs=1, networks=(("lenet300", "digits", 1),), methods=("phew", "random"),
                    progress=False)
    text = table(rows)
    assert "phew" in text and "χ-Jaccard" in text
    assert (tmp_path / "demo" / "demo.png").stat().st_size > 10_000
    assert (tmp_path / "demo" / "demo.csv").read_text().splitlines()[0].startswith("network,method,test_accuracy")


@pytest.mark.parametrize("argv, words", [
    (["demo", "--density", "x"], "invalid float value"),
    (["prune", "phew", "0.1"], "--model"),
    (["prune", "phew", "2", "--model", "lenet300"], "density must be in (0, 1]"),
    (["prune", "nope", "0.1", "--model", "lenet300"], "unknown pruning method 'nope'"),
    (["analyze", "missing.safetensors", "--model", "lenet300"], "no mask file"),
    (["train", "--model", "vgg17"], "unknown model 'vgg17'"),
    (["train", "--model", "lenet300", "--data", "cifar10"], "pass root="),
    (["sweep", "nowhere.toml"], "no grid file"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_give_one_line_and_exit_2(argv, words, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pathnet", *argv], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr


def test_every_subcommand_has_help():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == {"demo", "prune", "analyze", "compare", "compact", "train", "imp", "instability",
                                "sweep", "figures", "methods", "convert"}
    for name, p in sub.choices.items():
        assert p.description and all(a.help for a in p._actions if a.dest != "help"), name


def test_methods_lists_every_method_with_its_options(capsys):
    """Oracle: the registry's own declarations; every method and every option (type, default) is listed."""
    assert run("methods") == 0
    out = capsys.readouterr().out
    for name in pn.METHODS.names():
        method = pn.METHODS[name]
        assert f"{name}: " in out
        for key, opt in method.options.items():
            assert f"{key}: {opt.type.__name__} = {opt.default!r}: {opt.help}" in out, (name, key)
    assert run("prune", "--help") == 0
    assert "bias: str = 'magnitude'" in capsys.readouterr().out


def test_an_unknown_option_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """The method's find() is never called and no dataset is read: the refusal lists the valid options."""
    calls = []
    for name in ("random", "snip"):
        monkeypatch.setattr(pn.METHODS[name], "find", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(pn.data, "get", lambda *a, **k: calls.append(a))
    assert run("prune", "random", 0.1, "--model", "lenet300", "--data", "digits", "--option", "bogus=1") == 2
    assert run("prune", "snip", 0.1, "--model", "lenet300", "--data", "digits", "--option", "sample=1") == 2
    err = capsys.readouterr().err.splitlines()
    assert "'bogus'" in err[0] and "takes no options" in err[0]
    assert "'sample'" in err[1] and "valid: scope, iterations, schedule_kind, samples, per_class" in err[1]
    assert calls == []
    with pytest.raises(pn.errors.OptionError, match="unknown snip option 'sample'; valid: scope"):
        pn.prune(pn.models.get("lenet300"), "snip", 0.1, data="digits", sample=1)
    assert calls == []
