import json
import os

import numpy as np
import pytest
import torch
import torch.nn.utils.prune as tprune
from torch import nn

import pathnet as pn
from pathnet.errors import MaskError, PathnetError

from conftest import random_mask


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5), nn.ReLU(), nn.Linear(5, 3))


def test_counts_and_densities():
    m = pn.Mask({"a": torch.tensor([[1, 0], [1, 1]]), "b": np.array([0.0, 0.0, 1.0])})
    assert m["a"].dtype == torch.bool and m.num_kept == 4 and m.num_total == 7
    assert m.density == pytest.approx(4 / 7)
    assert m.layer_densities() == {"a": 0.75, "b": pytest.approx(1 / 3)}
    assert list(m) == ["a", "b"] and len(m) == 2


def test_constructor_copies_its_input():
    t = torch.ones(3, dtype=torch.bool)
    m = pn.Mask({"a": t})
    t[0] = False
    assert bool(m["a"].all())


def test_algebra_matches_elementwise_logic():
    net = small_net()
    a, b = random_mask(net, 0.3, 1), random_mask(net, 0.6, 2)
    for k in a:
        assert torch.equal((a & b)[k], a[k].logical_and(b[k]))
        assert torch.equal((a | b)[k], a[k].logical_or(b[k]))
        assert torch.equal((a ^ b)[k], a[k].logical_xor(b[k]))
        assert torch.equal((~a)[k], a[k].logical_not())
    assert a == pn.Mask(dict(a)) and a != b and (a ^ a).num_kept == 0
    assert (~a).num_kept + a.num_kept == a.num_total


@pytest.mark.parametrize("bad, words", [
    (torch.tensor([0.0, 0.5]), "non-binary"),
    (torch.tensor([0.0, float("nan")]), "non-binary"),
    (torch.tensor([2, 0]), "non-binary"),
    ([1, 0], "tensor or numpy"),
])
def test_non_binary_values_are_rejected(bad, words):
    with pytest.raises(MaskError, match=words):
        pn.Mask({"w": bad})


def test_mismatched_masks_name_the_first_difference():
    a = pn.Mask({"x": torch.ones(2, 2), "y": torch.ones(3)})
    with pytest.raises(MaskError, match="'y' only in the first"):
        a & pn.Mask({"x": torch.ones(2, 2)})
    with pytest.raises(MaskError, match=r"shape of 'y': \(3,\) vs \(4,\)"):
        a | pn.Mask({"x": torch.ones(2, 2), "y": torch.ones(4)})


def test_empty_and_unserialisable_meta_are_rejected():
    with pytest.raises(MaskError, match="Mask.ones"):
        pn.Mask({})
    with pytest.raises(MaskError, match="JSON"):
        pn.Mask({"a": torch.ones(1)}, meta={"f": object()})


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth"])
def test_save_load_round_trip_bit_for_bit(tmp_path, suffix):
    m = random_mask(small_net(), 0.37, 5).with_meta(method="test", density=0.37, seed=5)
    path = m.save(tmp_path / "sub" / f"mask{suffix}")
    back = pn.Mask.load(path)
    assert back == m and dict(back.meta) == dict(m.meta)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_load_errors(tmp_path):
    with pytest.raises(MaskError, match="no mask file"):
        pn.Mask.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(MaskError, match="not a readable safetensors"):
        pn.Mask.load(bad)


def test_torch_prune_round_trip():
    net = small_net()
    m = random_mask(net, 0.25, 3)
    for name, module in net.named_modules():
        if f"{name}.weight" in m:
            tprune.custom_from_mask(module, "weight", m[f"{name}.weight"])
    assert pn.Mask.from_model(net) == m
    # and the buffers torch wrote are exactly the mask
    assert torch.equal(net[0].weight_mask.bool(), m["0.weight"])
    # prunable_weights names stay plain and point at the trainable weight_orig
    assert set(pn.prunable_weights(net)) == set(m) and pn.prunable_weights(net)["0.weight"] is net[0].weight_orig


def test_torch_prune_global_unstructured_is_read():
    net = small_net()
    params = [(net[0], "weight"), (net[3], "weight"), (net[5], "weight")]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=0.8)
    mask = pn.Mask.from_model(net)
    expected = sum(int((mod.weight != 0).sum()) for mod, _ in params)
    assert mask.num_kept == expected and mask.density == pytest.approx(0.2, abs=1e-2)


class SynflowLinear(nn.Linear):
    """Synaptic-Flow style: a weight_mask buffer beside an ordinary weight."""

    def __init__(self, *a):
        super().__init__(*a)
        self.register_buffer("weight_mask", torch.ones_like(self.weight))


def test_synflow_and_open_lth_buffers():
    net = nn.Sequential(SynflowLinear(4, 3), nn.ReLU(), SynflowLinear(3, 2))
    net[0].weight_mask[0, :2] = 0
    m = pn.Mask.from_model(net)
    assert list(m) == ["0.weight", "2.weight"] and m.num_kept == 12 + 6 - 2

    class OpenLTH(nn.Module):  # open_lth's PrunedModel: mask_<name with ___> buffers beside self.model
        def __init__(self):
            super().__init__()
            self.model = nn.Sequential(nn.Linear(4, 3))
            self.register_buffer("mask_0___weight", torch.tensor([[1.0, 0, 0, 1]] * 3))

    m = pn.Mask.from_model(OpenLTH())
    assert list(m) == ["0.weight"] and m.num_kept == 6


def test_from_model_without_buffers_says_what_to_do():
    with pytest.raises(MaskError, match="Mask.ones"):
        pn.Mask.from_model(small_net())


def test_ones_and_apply():
    net = small_net()
    ones = pn.Mask.ones(net)
    assert set(ones) == {"0.weight", "3.weight", "5.weight"} and ones.density == 1.0
    m = random_mask(net, 0.5, 7)
    before = {k: w.detach().clone() for k, w in pn.prunable_weights(net).items()}
    m.apply(net)
    for k, w in pn.prunable_weights(net).items():
        assert torch.equal(w, before[k] * m[k])


def test_apply_checks_everything_before_writing():
    net = small_net()
    before = [p.detach().clone() for p in net.parameters()]
    zeros = {k: torch.zeros(w.shape) for k, w in pn.prunable_weights(net).items()}
    with pytest.raises(MaskError, match="'5.weight' has shape"):
        pn.Mask({**zeros, "5.weight": torch.zeros(2, 2)}).apply(net)
    with pytest.raises(MaskError, match="'nope.weight' names no"):
        pn.Mask({**zeros, "nope.weight": torch.zeros(2)}).apply(net)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_errors_are_value_errors():
    assert issubclass(MaskError, ValueError) and issubclass(MaskError, PathnetError)


def test_complete_fills_missing_layers_dense():
    net = small_net()
    part = pn.Mask({"3.weight": torch.zeros(5, 64)})
    full = part.complete(net)
    assert list(full) == ["0.weight", "3.weight", "5.weight"]
    assert full.num_kept == 4 * 2 * 9 + 15 and json.dumps(dict(full.meta)) == "{}"


def test_saved_masks_keep_their_order_and_compare_by_name(tmp_path):
    m = pn.Mask({"features.0.weight": torch.ones(2), "classifier.1.weight": torch.zeros(3)})
    back = pn.Mask.load(m.save(tmp_path / "m.safetensors"))
    assert list(back) == ["features.0.weight", "classifier.1.weight"]  # safetensors alone would sort them
    reordered = pn.Mask({"classifier.1.weight": torch.zeros(3), "features.0.weight": torch.ones(2)})
    assert reordered == m and (reordered & m).num_kept == 2


def test_the_same_mask_gives_the_same_file_byte_for_byte(tmp_path):
    """Invariant: the same `pathnet prune` in two processes, and a mask whose metadata was given in another
    order, write identical bytes (the safetensors library writes its metadata in hash order)."""
    import subprocess
    import sys

    argv = ["prune", "phew", "0.1", "--model", "lenet300", "--data", "digits", "--quiet"]
    subprocess.run([sys.executable, "-m", "pathnet", *argv, "--out", str(tmp_path / "a.safetensors")], check=True,
                   capture_output=True)
    from pathnet.cli import main

    assert main([*argv, "--out", str(tmp_path / "b.safetensors")]) == 0
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    m = pn.Mask({"x": torch.tensor([True, False]), "y": torch.ones(3, dtype=torch.bool)}, {"b": 1, "a": [2, 3]})
    n = pn.Mask(dict(m), {"a": [2, 3], "b": 1})
    m.save(tmp_path / "m.safetensors")
    n.save(tmp_path / "n.safetensors")
    assert (tmp_path / "m.safetensors").read_bytes() == (tmp_path / "n.safetensors").read_bytes()
    from safetensors.torch import load_file

    assert torch.equal(load_file(tmp_path / "m.safetensors")["x"], m["x"])  # still a safetensors file
    back = pn.Mask.load(tmp_path / "m.safetensors")
    assert back == m and list(back) == ["x", "y"]


def test_stale_temporary_files_are_removed_and_files_follow_the_umask(tmp_path):
    from pathnet.io import _HOST, write_text

    dead = subprocess_pid_that_exited()
    stale = tmp_path / f".m.safetensors.{_HOST}-{dead}.abc123.tmp"  # left by a save killed half-way
    live = tmp_path / f".m.safetensors.{_HOST}-{os.getpid()}.xyz789.tmp"  # a save in progress: kept
    stale.write_text("half")
    live.write_text("half")
    old_mask = os.umask(0o027)
    try:
        write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(old_mask)
    assert not stale.exists() and live.exists()
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o640
    write_text(tmp_path / "s.json", "{}")
    assert (tmp_path / "s.json").stat().st_mode & 0o777 == 0o666 & ~old_mask
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == [live.name]


def subprocess_pid_that_exited() -> int:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)
