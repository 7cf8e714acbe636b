"""compare() against direct set arithmetic, exact path counts and its defining invariants."""

import math

import numpy as np
import pytest
import torch

import pathnet as pn
from pathnet.errors import MaskError
from pathnet.similarity import random_like

from conftest import random_mask
from test_metrics import exact_chain_paths, mlp


@pytest.fixture(scope="module")
def resnet():
    return pn.models.get("resnet20", seed=0)


def test_identical_masks(resnet):
    a = pn.prune(resnet, "phew", 0.05, input_shape=(3, 32, 32))
    c = pn.compare(a, a, resnet, (3, 32, 32))
    for value in (c.jaccard, c.dice, c.overlap, c.chance_jaccard, c.path_jaccard, c.path_retained_a,
                  c.path_retained_b, *(v for k, v in c.effective.items() if k != "hamming")):
        assert value == pytest.approx(1.0)
    assert c.hamming == 0 and c.effective["hamming"] == 0 and c.density_profile_l1 == 0 and c.degree_wasserstein == 0
    assert all(r.jaccard == 1 and r.unit_jaccard == 1 and r.degree_wasserstein == 0 for r in c.layers)


def test_complement_at_half_density_has_jaccard_zero():
    model = mlp([8, 10, 6])
    g = torch.Generator().manual_seed(0)
    a = pn.Mask({k: (torch.randperm(w.numel(), generator=g) < w.numel() // 2).reshape(w.shape)
                 for k, w in pn.prunable_weights(model).items()})
    c = pn.compare(a, ~a)
    assert (~a).num_kept == a.num_kept and c.jaccard == 0 and c.dice == 0 and c.hamming == 1
    assert c.chance_jaccard == pytest.approx((0 - 1 / 3) / (1 - 1 / 3))  # E[J] = ¼ / ¾ at density ½


def test_set_arithmetic_against_numpy():
    model = mlp([9, 7, 5])
    a, b = random_mask(model, 0.3, 1), random_mask(model, 0.6, 2)
    c = pn.compare(a, b)
    A = np.concatenate([m.numpy().ravel() for m in a.values()])
    B = np.concatenate([m.numpy().ravel() for m in b.values()])
    inter, union = (A & B).sum(), (A | B).sum()
    assert c.jaccard == pytest.approx(inter / union)
    assert c.dice == pytest.approx(2 * inter / (A.sum() + B.sum()))
    assert c.overlap == pytest.approx(inter / min(A.sum(), B.sum()))
    assert c.hamming == pytest.approx((A ^ B).mean())
    layer = c.layers[0]
    la, lb = a["0.weight"].numpy(), b["0.weight"].numpy()
    assert layer.jaccard == pytest.approx((la & lb).sum() / (la | lb).sum())
    assert c.density_profile_l1 == pytest.approx(np.mean([abs(a[k].float().mean() - b[k].float().mean()) for k in a]))


def test_path_measures_equal_exact_counts():
    model = mlp([6, 8, 8, 4], 2)
    a, b = random_mask(model, 0.5, 3), random_mask(model, 0.5, 4)
    c = pn.compare(a, b)  # a chain of Linear masks: topology from the shapes alone
    both, either = exact_chain_paths(a & b), exact_chain_paths(a | b)
    assert c.path_jaccard == pytest.approx(both / either, rel=1e-9)
    assert c.path_retained_a == pytest.approx(both / exact_chain_paths(a), rel=1e-9)
    assert c.path_retained_b == pytest.approx(both / exact_chain_paths(b), rel=1e-9)


def test_independent_random_masks_are_at_chance(resnet):
    for density in (0.05, 0.3):
        a = random_mask(resnet, density, 11)
        b = random_mask(resnet, density, 12)
        c = pn.compare(a, b)
        assert abs(c.chance_jaccard) < 0.02
        assert all(abs(r.chance_jaccard) < 0.1 for r in c.layers if r.weights > 5000)


def test_baseline_reports_random_masks_with_the_same_layer_counts(resnet):
    a = pn.prune(resnet, "phew", 0.05, input_shape=(3, 32, 32), seed=0)
    r = random_like(a, seed=3)
    assert r.layer_densities() == a.layer_densities() and r != a
    c = pn.compare(a, pn.prune(resnet, "phew", 0.05, input_shape=(3, 32, 32), seed=1), resnet, (3, 32, 32), baseline=4)
    base = c.baseline["chance_jaccard"]
    assert base["samples"] == 4 and abs(base["mean"]) < 0.02
    assert c.chance_jaccard > base["mean"] + 3 * base["std"]  # two PHEW tickets agree beyond their densities
    assert "random baseline" in str(c) and math.isfinite(c.to_dict()["jaccard"])


def test_without_topology_only_weight_measures():
    conv = pn.models.get("conv2", seed=0)
    a, b = random_mask(conv, 0.2, 0), random_mask(conv, 0.2, 1)
    c = pn.compare(a, b)
    assert c.path_jaccard is None and c.effective is None and c.layers[0].unit_jaccard is None
    assert pn.compare(a, b, conv, (3, 32, 32)).path_jaccard is not None


def test_masks_of_different_networks_name_the_mismatch(resnet):
    other = pn.models.get("resnet32", seed=0)
    with pytest.raises(MaskError, match="'blocks.3.shortcut.0.weight' only in the first"):
        pn.compare(pn.Mask.ones(resnet), pn.Mask.ones(other))
    wide = pn.models.get("resnet20", width=32)
    with pytest.raises(MaskError, match="shape of 'conv.weight'"):
        pn.compare(pn.Mask.ones(resnet), pn.Mask.ones(wide))
