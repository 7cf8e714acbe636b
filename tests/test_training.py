"""Masked training, resume after a kill, IMP with rewinding and instability, on offline data."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import pathnet as pn
from pathnet.errors import HparamError, RunError
from pathnet.hparams import Step
from pathnet.training import Callback

from conftest import random_mask

FAST = dict(batch_size=128, progress=False)


@pytest.fixture(scope="module")
def digits():
    return pn.data.get("digits")


def small_conv(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.1),
                         nn.Flatten(), nn.Linear(8 * 8 * 8, 10))


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_pruned_weights_stay_exactly_zero(digits, optimizer):
    model = small_conv()
    mask = random_mask(model, 0.2, 0)
    pn.train(model, mask, digits, steps="30it", optimizer=optimizer, lr=0.05, momentum=0.9, weight_decay=1e-2,
             **FAST)
    for k, w in pn.prunable_weights(model).items():
        assert torch.count_nonzero(w.detach()[~mask[k]]) == 0
        assert torch.count_nonzero(w.detach()[mask[k]]) == int(mask[k].sum())  # the kept ones did train


def test_same_seed_same_weights_and_history(digits):
    runs = []
    for _ in range(2):
        model = small_conv()
        runs.append(pn.train(model, random_mask(model, 0.5, 1), digits, epochs=2, seed=5, **FAST))
    assert all(torch.equal(runs[0].state_dict[k], runs[1].state_dict[k]) for k in runs[0].state_dict)
    assert runs[0].history == [{**h, "seconds": runs[0].history[i]["seconds"]} for i, h in enumerate(runs[1].history)]
    other = pn.train(small_conv(), random_mask(small_conv(), 0.5, 1), digits, epochs=2, seed=6, **FAST)
    assert not torch.equal(other.state_dict["5.weight"], runs[0].state_dict["5.weight"])


KILLED_RUN = textwrap.dedent("""
    import os, sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, "tests")
    import pathnet as pn
    from test_training import small_conv, random_mask, FAST

    class Die(pn.training.Callback):
        def on_step_end(self, state):
            if state.step == 27:
                os._exit(3)  # killed mid-epoch, after the checkpoint of step 24

    model = small_conv()
    pn.train(model, random_mask(model, 0.3, 2), "digits", epochs=4, seed=1, run_dir=sys.argv[1],
             callbacks=[Die()], checkpoint_every="8it", **FAST)
""")


def test_resume_after_kill_equals_an_uninterrupted_run(tmp_path, digits):
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(killed)], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 3, proc.stderr
    assert torch.load(killed / "checkpoint.pt", weights_only=False)["step"] == 24
    model = small_conv()
    mask = random_mask(model, 0.3, 2)
    resumed = pn.train(model, mask, digits, epochs=4, seed=1, run_dir=killed, checkpoint_every="8it", **FAST)
    model = small_conv()
    straight = pn.train(model, mask, digits, epochs=4, seed=1, checkpoint_every="8it", **FAST)
    assert resumed.steps == straight.steps == 48
    assert all(torch.equal(resumed.state_dict[k], straight.state_dict[k]) for k in straight.state_dict)
    assert (killed / "metrics.csv").read_text().count("\n") == 5 and (killed / "result.json").is_file()
    with pytest.raises(RunError, match="other hyperparameters"):
        pn.train(small_conv(), mask, digits, epochs=4, seed=1, run_dir=killed, lr=0.3, **FAST)


def test_steps_and_schedules():
    assert Step.parse("2ep", 10).iteration == 20 and Step.parse("1ep5it", 10).iteration == 15
    assert Step.parse("500it", 10).iteration == 500
    with pytest.raises(HparamError, match="'2 epochs'"):
        Step.parse("2 epochs", 10)
    with pytest.raises(HparamError, match="unknown training hyperparameters"):
        pn.train(small_conv(), None, "digits", steps="1it", learning_rate=0.1)


def test_lenet300_learns_mnist5k_at_10_percent():
    """A real learning check: measured 0.917 test accuracy (PHEW, 5 epochs); chance is 0.1."""
    model = pn.models.get("lenet300", seed=0)
    mask = pn.prune(model, "phew", 0.1, input_shape=(1, 28, 28))
    result = pn.train(model, mask, "mnist5k", epochs=5, progress=False)
    assert result.test_accuracy > 0.85
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_imp_densities_and_rewinding(tmp_path, digits):
    model = pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0)
    starts = []

    class Record(Callback):
        def on_train_start(self, state):
            starts.append({k: w.detach().clone() for k, w in pn.prunable_weights(state.model).items()})

    result = pn.imp(model, digits, levels=3, rewind="3it", epochs=2, run_dir=tmp_path / "imp", callbacks=[Record()],
                    **FAST)
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
                   run_dir=tmp_path / "imp", **FAST)
    assert again.accuracy == result.accuracy and all(a == b for a, b in zip(again.masks, result.masks))


def test_imp_rewind_past_the_end_is_an_error(digits):
    with pytest.raises(HparamError, match="not before the end"):
        pn.imp(pn.models.get("lenet300", input_shape=(1, 8, 8)), digits, levels=1, rewind="5ep", epochs=1, **FAST)


def test_instability_identical_runs_have_no_barrier(digits):
    model = pn.models.get("lenet300", input_shape=(1, 8, 8), seed=0)
    mask = random_mask(model, 0.3, 0)
    same = pn.instability(model, mask, digits, seeds=(4, 4), alphas=5, epochs=1, **FAST)
    assert abs(same.barrier) < 1e-6 and len(set(same.test_error)) == 1
    assert same.test_error[0] == pytest.approx(1 - same.endpoints[0].test_accuracy, abs=1e-12)
    diff = pn.instability(model, mask, digits, seeds=(0, 1), alphas=5, epochs=1, **FAST)
    assert diff.test_error[0] == pytest.approx(1 - diff.endpoints[0].test_accuracy, abs=1e-12)
    assert diff.test_error[-1] == pytest.approx(1 - diff.endpoints[1].test_accuracy, abs=1e-12)
    assert diff.barrier == max(diff.test_error) - (diff.test_error[0] + diff.test_error[-1]) / 2 >= 0


def test_instability_recomputes_bn_statistics(digits):
    model = small_conv()
    res = pn.instability(model, None, digits, seeds=(0, 1), alphas=3, steps="10it", **FAST)
    assert len(res.test_error) == 3 and 0 <= res.test_error[1] <= 1 and isinstance(res.stable, bool)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_training_keeps_pruned_weights_zero(digits):
    model = small_conv()
    mask = random_mask(model, 0.2, 0)
    result = pn.train(model, mask, digits, steps="20it", device="cuda", amp=True, **FAST)
    assert result.device.startswith("cuda")
    for k, w in pn.prunable_weights(model).items():
        assert torch.count_nonzero(w.detach().cpu()[~mask[k]]) == 0
