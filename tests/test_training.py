"""Masked training, resume after a kill, IMP with rewinding and instability, on offline data.

Training, IMP and instability tests run on every device of the `device` fixture (tests/conftest.py).
"""

import copy
import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pathnet as pn
from pathnet.errors import HparamError, RunError
from pathnet.hparams import Step
from pathnet.training import Callback
from pathnet.training.loop import DeviceData, MetricsWriter

from conftest import random_mask

FAST = dict(batch_size=128, progress=False)


@pytest.fixture(scope="module")
def digits():
    return pn.data.get("digits")


def small_conv(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.1),
                         nn.Flatten(), nn.Linear(8 * 8 * 8, 10))


def without_seconds(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def assert_same_weights(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_pruned_weights_stay_exactly_zero(digits, optimizer, device):
    model = small_conv()
    mask = random_mask(model, 0.2, 0)
    pn.train(model, mask, digits, steps="30it", optimizer=optimizer, lr=0.05, momentum=0.9, weight_decay=1e-2,
             device=device, **FAST)
    for k, w in pn.prunable_weights(model).items():
        w = w.detach().cpu()
        assert torch.count_nonzero(w[~mask[k]]) == 0
        assert torch.count_nonzero(w[mask[k]]) == int(mask[k].sum())  # the kept ones did train


def test_channels_last_and_bf16_autocast_keep_pruned_weights_zero(digits, device):
    model = small_conv()
    mask = random_mask(model, 0.2, 0)
    result = pn.train(model, mask, digits, steps="20it", device=device, amp=True, channels_last=True, **FAST)
    assert result.device == str(torch.device(device)) and model[0].weight.is_contiguous(
        memory_format=torch.channels_last)
    for k, w in pn.prunable_weights(model).items():
        assert torch.count_nonzero(w.detach().cpu()[~mask[k]]) == 0
    assert result.test_accuracy > 0.5  # it learned (chance: 0.1)


def test_the_loop_equals_the_plain_torch_loop(digits, device):
    """Oracle: a plain-torch loop (same data order, SGD, gradients times the mask), bit for bit."""
    model = pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0)
    mask = random_mask(model, 0.3, 1)
    plain = copy.deepcopy(model).to(device)
    pn.train(model, mask, digits, steps="15it", seed=3, lr=0.05, momentum=0.9, weight_decay=5e-4,
             schedule="constant", device=device, **FAST)
    mask.apply(plain)
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x_all, y_all = digits.train.tensors
    steps = 0
    for epoch in range(2):
        order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(3 * 1_000_003 + epoch))
        for idx in order.split(128)[: 15 - steps]:
            loss = F.cross_entropy(plain(x_all[idx].to(device)), y_all[idx].to(device))
            optimizer.zero_grad()
            loss.backward()
            for k, w in pn.prunable_weights(plain).items():
                w.grad.mul_(mask[k].to(device))
            optimizer.step()
            steps += 1
    assert steps == 15
    assert_same_weights(model.state_dict(), plain.state_dict())


def test_same_seed_same_weights_and_history(digits, device):
    runs = []
    for _ in range(2):
        model = small_conv()
        runs.append(pn.train(model, random_mask(model, 0.5, 1), digits, epochs=2, seed=5, device=device, **FAST))
    assert_same_weights(runs[0].state_dict, runs[1].state_dict)
    assert without_seconds(runs[0].history) == without_seconds(runs[1].history)
    other = pn.train(small_conv(), random_mask(small_conv(), 0.5, 1), digits, epochs=2, seed=6, device=device,
                     **FAST)
    assert not torch.equal(other.state_dict["5.weight"], runs[0].state_dict["5.weight"])


def _global_determinism():
    return (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
            torch.backends.cudnn.deterministic, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))


def test_deterministic_runs_are_bit_identical_and_recorded(tmp_path, digits, device):
    """Invariant: a bit-identical rerun (weights and history) with deterministic=True; the flag is in
    result.json, a resume must match it, and the global settings come back after training."""
    before = _global_determinism()
    runs = []
    for i in range(2):
        model = small_conv()
        runs.append(pn.train(model, random_mask(model, 0.5, 1), digits, epochs=2, seed=5, device=device,
                             deterministic=True, run_dir=tmp_path / f"run{i}", **FAST))
        assert _global_determinism() == before
    assert_same_weights(runs[0].state_dict, runs[1].state_dict)
    assert without_seconds(runs[0].history) == without_seconds(runs[1].history)
    assert json.loads((tmp_path / "run0" / "result.json").read_text())["deterministic"] is True
    with pytest.raises(RunError, match="other hyperparameters .*deterministic=True there, False here"):
        pn.train(small_conv(), random_mask(small_conv(), 0.5, 1), digits, epochs=2, seed=5, device=device,
                 run_dir=tmp_path / "run0", **FAST)


def test_deterministic_mode_names_an_op_it_cannot_run_and_is_undone(digits):
    class PutEachStep(Callback):  # put_ has no deterministic kernel (torch's documented list)
        def on_step_end(self, state):
            torch.zeros(3).put_(torch.tensor([0]), torch.tensor([1.0]))

    before = _global_determinism()
    with pytest.raises(HparamError, match="deterministic=True, but put_ has no deterministic implementation"):
        pn.train(small_conv(), None, digits, steps="2it", deterministic=True, callbacks=[PutEachStep()], **FAST)
    assert _global_determinism() == before


KILLED_RUN = textwrap.dedent("""
    import os, sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, "tests")
    import pathnet as pn
    from test_training import small_conv, random_mask, FAST

    class Die(pn.training.Callback):
        def on_step_end(self, state):
            if state.step == int(sys.argv[3]):
                os._exit(3)  # killed between two checkpoints

    model = small_conv()
    pn.train(model, random_mask(model, 0.3, 2), "digits", epochs=4, seed=1, run_dir=sys.argv[1],
             callbacks=[Die()], checkpoint_every="8it", device=sys.argv[2], **FAST)
""")


@pytest.mark.parametrize("kill_at, saved_at", [(27, 24), (19, 16)])  # checkpoint at an epoch's end / mid-epoch
def test_resume_after_kill_equals_an_uninterrupted_run(tmp_path, digits, device, kill_at, saved_at):
    """Oracle: the same run, not interrupted (weights and history); the checkpoint loads with
    weights_only=True and holds its RNG states on the CPU."""
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(killed), device, str(kill_at)], capture_output=True,
                          text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 3, proc.stderr
    ckpt = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == saved_at
    assert all(t.device.type == "cpu" and t.dtype == torch.uint8 for t in [ckpt["rng"], *ckpt["cuda_rng"]])
    if torch.device(device).type != "cpu":
        shutil.copytree(killed, tmp_path / "on_cpu")
    model = small_conv()
    mask = random_mask(model, 0.3, 2)
    resumed = pn.train(model, mask, digits, epochs=4, seed=1, run_dir=killed, checkpoint_every="8it", device=device,
                       **FAST)
    model = small_conv()
    straight = pn.train(model, mask, digits, epochs=4, seed=1, checkpoint_every="8it", device=device, **FAST)
    assert resumed.steps == straight.steps == 48
    assert_same_weights(resumed.state_dict, straight.state_dict)
    assert without_seconds(resumed.history) == without_seconds(straight.history)
    assert (killed / "metrics.csv").read_text().count("\n") == 5 and (killed / "result.json").is_file()
    with pytest.raises(RunError, match="other hyperparameters .*lr=0.05 there, 0.3 here"):
        pn.train(small_conv(), mask, digits, epochs=4, seed=1, run_dir=killed, lr=0.3, **FAST)
    if torch.device(device).type != "cpu":  # a run killed on the device continues on the CPU
        on_cpu = pn.train(small_conv(), mask, digits, epochs=4, seed=1, run_dir=tmp_path / "on_cpu",
                          checkpoint_every="8it", device="cpu", **FAST)
        kept = len(ckpt["history"])
        assert on_cpu.steps == 48 and kept and on_cpu.history[:kept] == resumed.history[:kept]


def test_a_checkpoint_that_needs_unpickling_is_refused(tmp_path, digits):
    torch.save({"step": Step(3)}, tmp_path / "checkpoint.pt")  # a pathnet object: weights_only=True refuses it
    with pytest.raises(RunError, match="is not a readable checkpoint"):
        pn.train(small_conv(), None, digits, steps="2it", run_dir=tmp_path, **FAST)


def test_hooks_fire_at_steps_evaluations_and_epoch_ends(digits):
    """Invariant: on_epoch_start/on_epoch_end at the epoch boundaries (12 steps), on_eval at every
    evaluation, each after that step's on_step_end; every on_eval sees its own row."""
    events = []
    hooks = [h for h in vars(Callback) if h.startswith("on_")]
    record = type("Record", (Callback,), {h: lambda self, state, h=h: events.append((h, state.step, len(state.history)))
                                          for h in hooks})
    result = pn.train(small_conv(), None, digits, steps="30it", eval_every="4it", callbacks=[record()], **FAST)
    assert {h for h, _, _ in events} == set(hooks)
    at = lambda hook: [s for h, s, _ in events if h == hook]  # noqa: E731
    assert events[0][0] == "on_train_start" and events[-1][0] == "on_train_end"
    assert at("on_step_end") == list(range(1, 31)) and at("on_epoch_start") == [0, 12, 24]
    assert at("on_epoch_end") == [12, 24] and at("on_eval") == [4, 8, 12, 16, 20, 24, 28, 30]
    assert [row["step"] for row in result.history] == at("on_eval")
    assert [n for h, _, n in events if h == "on_eval"] == list(range(1, 9))
    hooks_at_12 = [h for h, s, _ in events if s == 12 and h != "on_epoch_start"]
    assert hooks_at_12 == ["on_step_end", "on_eval", "on_epoch_end"]


def test_rows_hold_the_training_loss_since_the_previous_row_and_stopping_adds_one(digits):
    """Oracle: the per-step losses and batch sizes a callback reads, averaged by hand."""
    seen = []

    class Losses(Callback):
        def on_step_end(self, state):
            seen.append((float(state.loss), min(128, len(digits.train) - 128 * ((state.step - 1) % 12))))
            state.stop = state.step == 15

    model = small_conv()
    result = pn.train(model, None, digits, steps="30it", eval_every="10it", callbacks=[Losses()], **FAST)
    assert result.steps == 15 and [row["step"] for row in result.history] == [10, 15]
    for row, part in zip(result.history, (seen[:10], seen[10:])):
        assert row["train_loss"] == pytest.approx(sum(loss * n for loss, n in part) / sum(n for _, n in part),
                                                  rel=1e-6)
    assert (result.test_loss, result.test_accuracy) == pn.training.evaluate(model, digits.test) == (
        result.history[-1]["test_loss"], result.history[-1]["test_accuracy"])


def test_metrics_writer_alone_writes_the_history_as_csv_and_json(tmp_path):
    history = [{"step": 5, "test_accuracy": 0.5}, {"step": 10, "test_accuracy": 0.75, "extra": "x"}]
    MetricsWriter(tmp_path).on_eval(SimpleNamespace(history=history))
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"step": "5", "test_accuracy": "0.5", "extra": ""}, {"step": "10", "test_accuracy": "0.75",
                                                                         "extra": "x"}]
    assert json.loads((tmp_path / "metrics.json").read_text()) == history


def test_device_data_copies_a_tensor_dataset_once(digits):
    on_device = DeviceData("cpu")
    assert on_device(digits.train) is on_device(digits.train) and on_device(digits.test) is not on_device(digits.train)
    other = torch.utils.data.Subset(digits.train, range(10))
    assert on_device(other) is other  # not a tensor dataset: its batches are moved one by one


def test_compile_trains_through_torch_compile(digits, monkeypatch):
    """Oracle: the same run without compile, bit for bit. torch.compile runs with its eager backend
    here (Dynamo's capture without Inductor's C++ build, which takes ~20 s on a CPU)."""
    calls, real = [], torch.compile

    def eager_compile(model):
        calls.append(model)
        return real(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    compiled_model, plain_model = small_conv(), small_conv()
    compiled = pn.train(compiled_model, None, digits, steps="14it", compile=True, **FAST)
    plain = pn.train(plain_model, None, digits, steps="14it", **FAST)
    assert calls == [compiled_model]
    assert_same_weights(compiled.state_dict, plain.state_dict)


def test_steps_and_schedules():
    assert Step.parse("2ep", 10).iteration == 20 and Step.parse("1ep5it", 10).iteration == 15
    assert Step.parse("500it", 10).iteration == 500
    with pytest.raises(HparamError, match="'2 epochs'"):
        Step.parse("2 epochs", 10)
    with pytest.raises(HparamError, match="unknown training hyperparameters"):
        pn.train(small_conv(), None, "digits", steps="1it", learning_rate=0.1)


def test_lenet300_learns_mnist5k_at_10_percent(device):
    """A real learning check: measured 0.917 test accuracy (PHEW, 5 epochs); chance is 0.1."""
    model = pn.models.get("lenet300", seed=0)
    mask = pn.prune(model, "phew", 0.1, input_shape=(1, 28, 28))
    result = pn.train(model, mask, "mnist5k", epochs=5, progress=False, device=device)
    assert result.test_accuracy > 0.85
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_imp_densities_and_rewinding(tmp_path, digits, device):
    model = pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0)
    starts = []

    class Record(Callback):
        def on_train_start(self, state):  # compared on the CPU, where the rewind state is kept
            starts.append({k: w.detach().cpu().clone() for k, w in pn.prunable_weights(state.model).items()})

    result = pn.imp(model, digits, levels=3, rewind="3it", epochs=2, run_dir=tmp_path / "imp", callbacks=[Record()],
                    device=device, **FAST)
    n = result.masks[0].num_total
    assert [m.num_kept for m in result.masks] == [round(0.8 ** level * n) for level in range(4)]
    assert all((b & ~a).num_kept == 0 for a, b in zip(result.masks, result.masks[1:]))  # nested
    assert result.rewind_step == 3
    for level in (1, 2, 3):  # each level starts from exactly the step-3 weights on its kept entries
        for k, w in starts[level].items():
            expected = result.rewind_state[k] * result.masks[level][k]
            assert torch.equal(w, expected)
    assert len(result.accuracy) == 4 and all(a > 0.5 for a in result.accuracy)
    # a rerun finds every level done and returns the same
    again = pn.imp(pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0), digits, levels=3, rewind="3it", epochs=2,
                   run_dir=tmp_path / "imp", device=device, **FAST)
    assert again.accuracy == result.accuracy and all(a == b for a, b in zip(again.masks, result.masks))


def test_imp_rewind_past_the_end_is_an_error(digits):
    with pytest.raises(HparamError, match="not before the end"):
        pn.imp(pn.models.get("lenet300", input_shape=(1, 8, 8)), digits, levels=1, rewind="5ep", epochs=1, **FAST)


def test_instability_identical_runs_have_no_barrier(digits, device):
    """Invariant: the line between a network and itself is flat (barrier 0); instability() itself refuses
    two equal seeds (a barrier of 0 by construction, reported as "stable"), so the endpoints are the same
    trained state given twice."""
    from pathnet.training.stability import interpolate

    model = pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0)
    mask = random_mask(model, 0.3, 0)
    with pytest.raises(HparamError, match=r"seeds=\(4, 4\) is not allowed"):
        pn.instability(model, mask, digits, seeds=(4, 4), alphas=5, epochs=1, device=device, **FAST)
    end = pn.train(copy.deepcopy(model), mask, digits, epochs=1, seed=4, device=device, **FAST).state_dict
    for alpha in (0.0, 0.3, 1.0):
        mid = interpolate(end, end, alpha)
        assert all(torch.allclose(mid[k].float(), v.float(), rtol=1e-6, atol=1e-7) for k, v in end.items())
    diff = pn.instability(model, mask, digits, seeds=(0, 1), alphas=5, epochs=1, device=device, **FAST)
    assert diff.test_error[0] == pytest.approx(1 - diff.endpoints[0].test_accuracy, abs=1e-12)
    assert diff.test_error[-1] == pytest.approx(1 - diff.endpoints[1].test_accuracy, abs=1e-12)
    assert diff.barrier == max(diff.test_error) - (diff.test_error[0] + diff.test_error[-1]) / 2 >= 0


def test_instability_recomputes_bn_statistics(digits, device):
    model = small_conv()
    res = pn.instability(model, None, digits, seeds=(0, 1), alphas=3, steps="10it", device=device, **FAST)
    assert len(res.test_error) == 3 and 0 <= res.test_error[1] <= 1 and isinstance(res.stable, bool)


def test_cli_deterministic_flag_reaches_every_training_command(tmp_path, capsys):
    from pathnet.cli import main

    common = ["--model", "lenet300", "--data", "digits", "--epochs", "1", "--deterministic"]
    assert main(["train", *common, "--json", str(tmp_path / "t.json")]) == 0
    assert json.loads((tmp_path / "t.json").read_text())["deterministic"] is True
    assert main(["imp", *common, "--levels", "1", "--run-dir", str(tmp_path / "imp")]) == 0
    assert json.loads((tmp_path / "imp" / "imp.json").read_text())["deterministic"] is True
    assert json.loads((tmp_path / "imp" / "level_01" / "result.json").read_text())["deterministic"] is True
    assert main(["instability", *common, "--alphas", "3", "--json", str(tmp_path / "i.json")]) == 0
    assert json.loads((tmp_path / "i.json").read_text())["deterministic"] is True
    grid = tmp_path / "grid.toml"
    grid.write_text('[grid]\nmodel = "lenet300"\ndataset = "digits"\nmethod = "random"\ndensity = 0.2\nepochs = 1\n')
    assert main(["sweep", str(grid), "--run-dir", str(tmp_path / "s"), "--deterministic"]) == 0
    assert json.loads((tmp_path / "s" / "results.json").read_text())[0]["deterministic"] is True
    assert json.loads((tmp_path / "s" / "grid.json").read_text())["deterministic"] is True
    assert not torch.are_deterministic_algorithms_enabled()


# -- runs bound to their arguments, locks, divergence, progress lines ---------------------------------

def _files(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_train_resume_with_another_mask_is_refused_and_overwrite_starts_over(tmp_path, digits):
    """The issue's case: a finished run under mask A, rerun under mask B, must not return A's result
    under B's label. Oracle: the manifest names the mask hash; after --overwrite the weights outside B
    are exactly zero."""
    model = pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0)
    a, b = random_mask(model, 0.3, 0), random_mask(model, 0.3, 1)
    run = tmp_path / "R"
    pn.train(copy.deepcopy(model), a, digits, epochs=1, run_dir=run, **FAST)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["mask"] == a.sha256() and manifest["kind"] == "train" and manifest["lr"] == 0.05
    before = _files(run)
    with pytest.raises(RunError, match=r"mask='[0-9a-f]{12}…' there, '[0-9a-f]{12}…' here.*--overwrite"):
        pn.train(copy.deepcopy(model), b, digits, epochs=1, run_dir=run, **FAST)
    with pytest.raises(RunError, match="lr=0.05 there, 0.1 here"):
        pn.train(copy.deepcopy(model), a, digits, epochs=1, lr=0.1, run_dir=run, **FAST)
    assert _files(run) == before  # refused: nothing written
    res = pn.train(copy.deepcopy(model), b, digits, epochs=1, run_dir=run, overwrite=True, **FAST)
    assert json.loads((run / "manifest.json").read_text())["mask"] == b.sha256()
    assert all(int((res.state_dict[k][~m] != 0).sum()) == 0 for k, m in b.items())
    # the same arguments resume (here: find the finished run) without complaint
    again = pn.train(copy.deepcopy(model), b, digits, epochs=1, run_dir=run, **FAST)
    assert again.test_accuracy == res.test_accuracy


def test_cli_train_over_another_run_names_the_keys_and_the_way_out(tmp_path, capsys):
    from pathnet.cli import main

    masks = []
    for seed in (0, 1):
        masks.append(str(tmp_path / f"m{seed}.safetensors"))
        assert main(["prune", "random", "0.3", "--model", "lenet300", "--data", "digits", "--seed", str(seed),
                     "--out", masks[-1]]) == 0
    common = ["train", "--model", "lenet300", "--data", "digits", "--epochs", "1", "--run-dir", str(tmp_path / "R")]
    assert main([*common, "--mask", masks[0], "--quiet"]) == 0
    capsys.readouterr()
    assert main([*common, "--mask", masks[1]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mask=" in err[0] and "--overwrite" in err[0]
    assert main([*common, "--mask", masks[1], "--overwrite", "--quiet"]) == 0


def test_imp_resume_refuses_another_rate_and_may_add_levels(tmp_path, digits):
    run = tmp_path / "imp"
    kw = dict(rewind="2it", epochs=1, run_dir=run, **FAST)
    first = pn.imp(pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0), digits, levels=1, rate=0.2, **kw)
    before = _files(run)
    for change, words in ((dict(rate=0.5), "rate=0.2 there, 0.5 here"),
                          (dict(criterion="snip", samples=32), "criterion='magnitude' there, 'snip' here"),
                          (dict(seed=1), "seed=0 there, 1 here")):
        with pytest.raises(RunError, match=words):
            pn.imp(pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0), digits,
                   **{"levels": 1, "rate": 0.2, **kw, **change})
    assert _files(run) == before
    more = pn.imp(pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0), digits, levels=2, rate=0.2, **kw)
    assert more.accuracy[:2] == first.accuracy and len(more.masks) == 3
    assert json.loads((run / "manifest.json").read_text())["levels"] == 2


def test_a_second_writer_is_stopped_by_the_lock_and_a_dead_writers_lock_is_stale(tmp_path, digits):
    """Two processes, one run dir: the second stops with RunError while the first runs; once the first
    is killed, its lock is stale and the run resumes."""
    import signal
    import time

    run = tmp_path / "R"
    code = textwrap.dedent(f"""
        import torch; torch.set_num_threads(1)
        import pathnet as pn
        model = pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0)
        pn.train(model, None, "digits", epochs=10_000, batch_size=256, run_dir={str(run)!r}, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (run / "checkpoint.pt").is_file():
            time.sleep(0.05)
        assert (run / ".lock").is_file()
        model = pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0)
        with pytest.raises(RunError, match=f"in use by process {proc.pid}"):
            pn.train(model, None, digits, epochs=10_000, batch_size=256, run_dir=run, progress=False)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (run / ".lock").read_text().split()[1] == str(proc.pid)  # left behind by the killed writer
    model = pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0)
    seen = []

    class Stop(Callback):
        def on_train_start(self, state):
            seen.append(state.resumed_from)
            state.stop = True

    pn.train(model, None, digits, epochs=10_000, batch_size=256, run_dir=run, progress=False, callbacks=[Stop()])
    assert seen[0] is not None and seen[0] > 0 and not (run / ".lock").exists()


def test_a_nan_loss_stops_training_naming_the_step_and_lr(tmp_path, digits, capsys):
    model = pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0)
    with pytest.raises(pn.errors.DivergenceError, match=r"loss is nan at step \d+ of \d+ \(lr [0-9e.+]+\)"):
        pn.train(model, None, digits, epochs=1, lr=1e6, run_dir=tmp_path / "R", **FAST)
    assert not (tmp_path / "R" / "checkpoint.pt").exists()  # no checkpoint of the broken weights

    class Poison(Callback):  # an injected NaN at step 5: the next loss is NaN
        def on_step_end(self, state):
            if state.step == 5:
                with torch.no_grad():
                    state.model[1].weight[0, 0] = float("nan")

    with pytest.raises(pn.errors.DivergenceError, match=r"step 6 of .*lr 0.05"):
        pn.train(pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0), None, digits, epochs=1,
                 schedule="constant", callbacks=[Poison()], **FAST)
    from pathnet.cli import main

    capsys.readouterr()
    assert main(["train", "--model", "lenet300", "--data", "digits", "--epochs", "1", "--lr", "1e6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training diverged" in err[0] and "Traceback" not in err[0]


def test_progress_lines_off_a_terminal_and_quiet(tmp_path, digits, capsys):
    """Off a TTY (pytest's stderr): one line per epoch, "resumed from step N of M" on resume, one line per
    IMP level; progress=False is silent."""
    model = pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0)
    pn.train(copy.deepcopy(model), None, digits, epochs=2, batch_size=256, run_dir=tmp_path / "R")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2  train loss ") and " test acc " in lines[0]
    assert lines[1].startswith("epoch 2/2") and lines[1].endswith(" s")
    pn.train(copy.deepcopy(model), None, digits, epochs=2, batch_size=256, run_dir=tmp_path / "R")
    assert capsys.readouterr().err.strip().splitlines() == ["resumed from step 12 of 12"]
    pn.train(copy.deepcopy(model), None, digits, epochs=1, batch_size=256, progress=False)
    assert capsys.readouterr().err == ""
    pn.imp(copy.deepcopy(model), digits, levels=2, epochs=1, batch_size=256)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [ln.split("  ")[0] for ln in lines] == ["imp level 0/2", "imp level 1/2", "imp level 2/2"]


def test_cli_csv_writes_the_rows_it_promises(tmp_path, capsys):
    from pathnet.cli import main

    common = ["--model", "lenet300", "--data", "digits", "--epochs", "2", "--batch-size", "256", "--quiet"]
    assert main(["train", *common, "--csv", str(tmp_path / "t.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert [r["epoch"] for r in rows] == ["1.0", "2.0"] and "test_accuracy" in rows[0]
    assert main(["imp", *common, "--levels", "2", "--csv", str(tmp_path / "i.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "i.csv")))
    assert [r["level"] for r in rows] == ["0", "1", "2"] and float(rows[2]["density"]) == pytest.approx(0.64, 1e-3)
    assert main(["instability", *common, "--alphas", "3", "--csv", str(tmp_path / "s.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert [float(r["alpha"]) for r in rows] == [0.0, 0.5, 1.0] and "test_error" in rows[0]
