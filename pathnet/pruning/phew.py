"""PHEW (Patil & Dovrolis 2021): a data-free ticket made of input→output paths found by random
walks biased towards large initial weights.

Walks alternate forward (seeded at the input units in turn) and backward (at the output units in
turn). Each hop picks one of the blocks leaving the unit uniformly (the block path or the
shortcut at a residual fork), an edge ∝ the L1 norm of its kernel, then an entry of the kernel
∝ |w|; every weight a walk crosses is kept. The budget round(density · N) is met exactly with no
weight off the input→output paths: a walk that would pass the budget is set aside; once
`patience` walks in a row add nothing (whole-kernel walks first give way to single-entry walks),
the last weights are added as *bridges*
(a free weight from a unit the input reaches to a unit that reaches the output, drawn ∝ |w|),
each of which closes a path by itself. Only if no bridge exists (a ticket saturating its
reachable subnetwork, near density 1) are the largest free weights added, with a warning.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse as sp
from torch import nn
from tqdm.auto import tqdm

from .. import kernels
from ..errors import DensityError, GraphError
from ..graph import LayeredDAG, to_dag
from ..mask import Mask
from . import budget as weight_budget
from . import register


class FlatNetwork:
    """A LayeredDAG as flat arrays for the walk kernels: both directions plus the weight entries."""

    def __init__(self, dag: LayeredDAG):
        self.dag = dag
        full = dag.full_mask()
        sizes = [int(np.prod(dag.param_shapes[p])) for p in dag.params]
        self.param_offset = dict(zip(dag.params, np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)))
        self.num_weights = int(sum(sizes))
        self.absw = np.concatenate([dag.abs_weights(p).reshape(-1) for p in dag.params])  # float32
        self.allowed = np.concatenate([full[p].numpy().reshape(-1) for p in dag.params])
        self.lay_off = np.concatenate([[0], np.cumsum([layer.size for layer in dag.layers])]).astype(np.int64)
        self.forward = self._walkable(forward=True)
        self.backward = self._walkable(forward=False)
        self.max_path = int(sum(b.kernel_volume for b in dag.blocks if b.prunable)) + 1

    def _kernel_base(self, block, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Flat index of the first weight entry behind each edge (src unit → dst unit)."""
        if not block.prunable:
            return np.full(len(src), -1, dtype=np.int64)
        out_ch, in_g, k = self.dag.abs_weights(block.param).shape
        j = src - (dst // (out_ch // block.groups)) * in_g
        return self.param_offset[block.param] + (dst * in_g + j) * k

    def _walkable(self, forward: bool) -> kernels.Walkable:
        dag = self.dag
        indptrs, targets, cums, bases = [], [], [], []
        blk_rows, edge_off, far = [], [], []
        rows = edges = 0
        for b in dag.blocks:
            src = b.sources()
            if forward:
                indptr, target, l1, base = b.indptr, b.indices, b.l1, self._kernel_base(b, src, b.indices)
            else:  # transpose: rows over destination units
                ids = sp.csr_matrix((np.arange(1, b.num_edges + 1), b.indices, b.indptr), shape=(b.n_src, b.n_dst))
                csc = ids.tocsc()
                csc.sort_indices()
                order = csc.data - 1
                indptr, target = csc.indptr.astype(np.int64), csc.indices.astype(np.int64)
                l1, base = b.l1[order], self._kernel_base(b, src, b.indices)[order]
            blk_rows.append(rows)
            edge_off.append(edges)
            far.append(b.dst if forward else b.src)
            indptrs.append(indptr)
            targets.append(target)
            bases.append(base)
            cums.append(_row_cumsum(l1, indptr))
            rows += len(indptr)
            edges += len(target)
        lay_blocks = dag.out_blocks if forward else dag.in_blocks
        lay_ptr = np.concatenate([[0], np.cumsum([len(x) for x in lay_blocks])]).astype(np.int64)
        cat = lambda xs, dt: np.ascontiguousarray(np.concatenate(xs) if xs else np.zeros(0), dtype=dt)  # noqa: E731
        return kernels.Walkable(
            self.lay_off, lay_ptr, np.array([i for x in lay_blocks for i in x], dtype=np.int64),
            np.array(far, dtype=np.int64), np.array(blk_rows, dtype=np.int64), np.array(edge_off, dtype=np.int64),
            np.array([b.kernel_volume for b in dag.blocks], dtype=np.int64),
            np.array([b.prunable for b in dag.blocks], dtype=np.bool_),
            cat(indptrs, np.int64), cat(targets, np.int64), cat(cums, np.float64), cat(bases, np.int64))

    def to_mask(self, state: np.ndarray, meta: dict) -> Mask:
        return Mask({p: state[o:o + int(np.prod(s))].reshape(s) == 1
                     for (p, o), s in zip(self.param_offset.items(), self.dag.param_shapes.values())}, meta)


def _row_cumsum(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting at every CSR row."""
    cs = np.cumsum(values, dtype=np.float64)
    before = np.concatenate([[0.0], cs])[indptr[:-1]]
    return cs - np.repeat(before, np.diff(indptr))


def phew_mask(dag: LayeredDAG, density: float, *, seed: int = 0, bias: str = "magnitude", kernel: str = "weight",
              patience: int = 2_000, progress: bool = False) -> Mask:
    """PHEW on a DAG (see the module docstring). `dag.mask`, if any, limits which weights walks may keep."""
    if bias not in ("magnitude", "uniform"):
        raise ValueError(f"bias must be 'magnitude' or 'uniform', got {bias!r}")
    if kernel not in ("weight", "whole"):
        raise ValueError(f"kernel must be 'weight' (one entry per kernel crossing) or 'whole', got {kernel!r}")
    t0 = time.perf_counter()
    net = FlatNetwork(dag)
    target = weight_budget(net.num_weights, density)
    if target > int(net.allowed.sum()):
        raise DensityError(f"density {density} asks for {target:,} weights but the DAG's mask allows only "
                           f"{int(net.allowed.sum()):,}")
    state = np.zeros(net.num_weights, dtype=np.uint8)
    rng = np.array([(int(seed) * 0x9E3779B97F4A7C15 + 1) % 2**64], dtype=np.uint64)
    seeds_in = np.arange(dag.layers[0].size, dtype=np.int64)
    out_layer = np.concatenate([np.full(dag.layers[i].size, i) for i in dag.output_layers]).astype(np.int64)
    out_unit = np.concatenate([np.arange(dag.layers[i].size) for i in dag.output_layers]).astype(np.int64)
    robin = np.zeros(3, dtype=np.int64)
    stats = np.zeros(2, dtype=np.int64)
    uniform, whole = bias == "uniform", kernel == "whole"
    kept, bridged, dangling = 0, 0, 0
    with tqdm(total=target, disable=not progress, delay=1.0, desc="PHEW walks", unit="w") as bar:
        chunk = max(1, target // 100) if progress else target
        # whole-kernel walks may be too big for the last few weights: single-entry walks finish
        for walk_whole in ((True, False) if whole else (False,)):
            while kept < target:
                stop_at = min(target, kept + chunk)
                now = kernels.phew_walks(net.forward, net.backward, net.absw, net.allowed, state, kept, target,
                                         stop_at, seeds_in, out_layer, out_unit, robin, uniform, walk_whole,
                                         patience, rng, stats, net.max_path)
                bar.update(now - kept)
                stalled, kept = now < stop_at, now
                if stalled:
                    break
        if kept < target:  # the last few weights: bridges between the two reachable sets
            fwd = np.zeros(net.lay_off[-1], dtype=np.bool_)
            fwd[: dag.layers[0].size] = True
            bwd = np.zeros(net.lay_off[-1], dtype=np.bool_)
            for i in dag.output_layers:
                bwd[net.lay_off[i]:net.lay_off[i + 1]] = True
            kernels.reach(net.forward, state, fwd, True)
            kernels.reach(net.backward, state, bwd, False)
            chosen = kernels.bridges(net.forward, state, net.allowed, net.absw, fwd, bwd, target - kept, uniform, rng)
            state[chosen] = 1
            bridged = len(chosen)
            kept += bridged
            bar.update(bridged)
        if kept < target:
            free = np.flatnonzero((state == 0) & net.allowed)
            chosen = free[np.argsort(-net.absw[free], kind="stable")[: target - kept]]
            state[chosen] = 1
            dangling = len(chosen)
            kept += dangling
            warnings.warn(f"PHEW: no free weight could join the input→output paths; the last {dangling} weights "
                          "were added by magnitude and may lie off the paths", RuntimeWarning, stacklevel=3)
    meta = {"method": "phew", "density": float(density), "seed": int(seed), "bias": bias, "kernel": kernel,
            "kept": int(kept), "walks": int(stats[0]), "set_aside": int(stats[1]), "bridged": bridged,
            "dangling": dangling, "seconds": round(time.perf_counter() - t0, 4)}
    return net.to_mask(state, meta)


@register("phew")
def phew(model: nn.Module, density: float, *, data=None, input_shape=None, seed: int = 0, **options) -> Mask:
    """PHEW ticket of `model` (data-free; needs `input_shape` to trace the model)."""
    if input_shape is None:
        raise GraphError("phew walks the model's graph and needs input_shape, e.g. input_shape=(3, 32, 32)")
    return phew_mask(to_dag(model, input_shape), density, seed=seed, **options)
