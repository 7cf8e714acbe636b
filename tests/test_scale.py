"""Scale: implicit dense blocks, compact stored edges, one trace per model, clear memory errors.

Oracles: golden values computed by the implementation before dense blocks became implicit
(tests/golden/scale_golden.json: log10 path counts, effective masks and the data-free finders'
masks on the registry models), networkx/CSR readings of the same DAG, and invariants.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import pathnet as pn
from pathnet.errors import MemoryLimitError

GOLDEN = json.loads((Path(__file__).parent / "golden" / "scale_golden.json").read_text())


def digest(mask):
    h = hashlib.sha256()
    for k in sorted(mask):
        h.update(k.encode())
        h.update(mask[k].numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("name", ["lenet300", "conv2", "resnet20", "vgg11"])
def test_paths_effective_masks_and_finders_match_the_golden_values(name):
    model = pn.models.get(name, seed=0)
    shape = pn.models.default_input_shape(name)
    dag = pn.to_dag(model, shape)
    for density in (1.0, 0.1, 0.01):
        g = torch.Generator().manual_seed(7)
        mask = pn.Mask({k: torch.rand(w.shape, generator=g) < density for k, w in pn.prunable_weights(model).items()})
        rep = pn.analyze(mask, dag=dag)
        gold = GOLDEN[f"{name}@{density}"]
        assert rep.log10_paths == pytest.approx(gold["log10_paths"], rel=1e-12, abs=1e-12)
        assert digest(rep.effective_mask) == gold["effective"] and rep.num_effective == gold["num_effective"]
        assert [r.effective_width for r in rep.layers] == gold["widths"]
    for method in ("magnitude", "random", "erk", "smart_ratio", "synflow"):
        assert digest(pn.prune(model, method, 0.05, input_shape=shape, seed=0)) == GOLDEN[f"{name}:{method}"]


def test_dense_blocks_store_no_edges_and_read_like_stored_ones():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 7), nn.Linear(7, 3))
    dense = pn.to_dag(model, (3, 6, 6))
    prunable = [b for b in dense.blocks if b.prunable]
    assert all(b.dense and b.edges is None for b in prunable)
    ones = pn.Mask({k: torch.ones(w.shape, dtype=torch.bool) for k, w in pn.prunable_weights(model).items()})
    # a mask that prunes one weight per layer makes every block stored; all but that edge equal
    for b in prunable:
        w = model.get_parameter(b.param).detach()
        indptr, indices, mult, l1 = b.csr()
        assert indices.dtype == np.int32 and mult.dtype == np.int32 and l1.dtype == np.float32
        src = np.repeat(np.arange(b.n_src), np.diff(indptr))
        k = w[0, 0].numel()
        expect = w.abs().reshape(w.shape[0], w.shape[1], -1).sum(2).numpy()
        np.testing.assert_allclose(l1, expect[indices, src], rtol=1e-6)
        assert (mult == k).all() and len(indices) == b.n_src * b.n_dst
    assert pn.analyze(ones, dag=dense).log10_paths == pytest.approx(pn.analyze(ones, model, (3, 6, 6)).log10_paths)


def test_phew_on_dense_blocks_is_exact_and_on_paths():
    model = pn.models.get("vgg11", seed=0)
    mask = pn.prune(model, "phew", 0.02, input_shape=(3, 32, 32), seed=0)
    dag = pn.to_dag(model, (3, 32, 32))
    assert mask.num_kept == round(0.02 * dag.num_weights)
    rep = pn.analyze(mask, dag=dag)
    assert rep.num_effective == rep.num_kept


def test_to_dag_is_cached_per_model_and_renewed_when_weights_shapes_or_input_change():
    model = pn.models.get("resnet20", seed=0)
    a = pn.to_dag(model, (3, 32, 32))
    assert pn.to_dag(model, (3, 32, 32)) is a  # one trace per model
    assert pn.to_dag(model, (3, 28, 28)) is not a  # another input shape
    with torch.no_grad():
        model.get_parameter(a.params[0]).mul_(2.0)  # weights changed in place: |w| would be stale
    b = pn.to_dag(model, (3, 32, 32))
    assert b is not a and np.allclose(b.abs_weights(a.params[0]), 2 * a.abs_weights(a.params[0]))
    model.load_state_dict(pn.models.get("resnet20", seed=1).state_dict())
    c = pn.to_dag(model, (3, 32, 32))
    assert c is not b
    other = pn.models.get("resnet20", seed=0)  # same structure, another object: its own trace
    assert pn.to_dag(other, (3, 32, 32)) is not c


def test_memory_errors_name_the_layer_and_the_need(monkeypatch):
    import pathnet.flat as flat

    model = pn.models.get("lenet300", seed=0)

    def refuse(*a, **k):
        raise MemoryError

    monkeypatch.setattr(flat.kernels, "dense_cums", refuse)
    with pytest.raises(MemoryLimitError, match=r"GB for 266,200 weights.*'1.weight'"):
        pn.prune(model, "phew", 0.1, input_shape=(1, 28, 28))
