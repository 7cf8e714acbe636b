"""`FlatNetwork`: a LayeredDAG as the flat arrays the Numba kernels read.

Units are numbered layer by layer; every prunable weight entry has one flat index (parameters
in DAG order, each in its own row-major order); each direction is a :class:`kernels.Walkable`.
Dense blocks store nothing per edge but, for walks, the row-wise cumulative L1 weight (float32,
both directions, built by one Numba pass): the only per-weight working memory PHEW needs. Stored
(masked, grouped, weightless) blocks keep int32 targets and multiplicities and int64 weight indices.
"""

from __future__ import annotations

import math

import numpy as np

from . import kernels
from .errors import MemoryLimitError
from .graph import LayeredDAG
from .mask import Mask


class FlatNetwork:
    """A LayeredDAG as flat arrays for the walk kernels: both directions plus the weight entries."""

    def __init__(self, dag: LayeredDAG, walks: bool = True):
        """`walks=False` leaves out what only walks need (weights, cumulative L1)."""
        self.dag = dag
        self.walks = walks
        self.num_weights = dag.num_weights
        self.lay_off = np.concatenate([[0], np.cumsum([layer.size for layer in dag.layers])]).astype(np.int64)
        try:
            self.absw, self.param_offset = dag.flat_abs_weights()  # absw: one entry per weight index
            if walks:
                full = dag.full_mask() if dag.mask is not None else None
                self.allowed = np.zeros(len(self.absw), dtype=np.bool_)  # entries of no DAG weight: never
                for p, o in self.param_offset.items():
                    n = math.prod(dag.param_shapes[p])
                    self.allowed[o:o + n] = True if full is None else full[p].numpy().reshape(-1)
            self.forward = self._walkable(forward=True)
            self.backward = self._walkable(forward=False)
        except MemoryError:
            need = (self.num_weights * 6 + dag.num_edges * (8 if walks else 0)) / 2**30
            big = max(dag.blocks, key=lambda b: b.num_edges)
            raise MemoryLimitError(
                f"not enough memory for the flat arrays of this network (~{need:.1f} GB for "
                f"{self.num_weights:,} weights and {dag.num_edges:,} edges; the largest block is "
                f"{big.param or dag.layers[big.dst].name!r} with {big.num_edges:,} edges); free memory or "
                "use a machine with more") from None
        self.max_path = int(sum(b.kernel_volume for b in dag.blocks if b.prunable)) + 1

    def _walkable(self, forward: bool) -> kernels.Walkable:
        dag = self.dag
        n = len(dag.blocks)
        dense = np.array([b.dense for b in dag.blocks], dtype=np.bool_)
        nfar = np.array([b.n_dst if forward else b.n_src for b in dag.blocks], dtype=np.int64)
        counts = np.array([b.num_edges for b in dag.blocks], dtype=np.int64)
        edge_off = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        xcounts = np.array([0 if b.dense else b.num_edges for b in dag.blocks], dtype=np.int64)
        xedge_off = np.concatenate([[0], np.cumsum(xcounts)[:-1]]).astype(np.int64)
        row_counts = np.array([0 if b.dense else (b.n_src if forward else b.n_dst) + 1 for b in dag.blocks])
        blk_rows = np.concatenate([[0], np.cumsum(row_counts)[:-1]]).astype(np.int64)
        base0, near_stride, far_stride = (np.zeros(n, dtype=np.int64) for _ in range(3))
        for b in dag.blocks:
            if b.dense and b.prunable:
                k = b.kernel_volume
                base0[b.index] = self.param_offset[b.param] + b.row_offset * b.n_src * k
                near_stride[b.index], far_stride[b.index] = (k, b.n_src * k) if forward else (b.n_src * k, k)
        indptrs, targets, bases, mults = [], [], [], []
        cum = np.empty(int(counts.sum()) if self.walks else 0, dtype=np.float32)
        for b in dag.blocks:
            if b.dense:
                if self.walks:
                    kernels.dense_cums(b.dense_l1(), cum[edge_off[b.index]:edge_off[b.index] + counts[b.index]],
                                       forward)
                continue
            indptr, target, mult, l1 = b.edges
            src = np.repeat(np.arange(b.n_src, dtype=np.int64), np.diff(indptr))
            base = (self.param_offset[b.param] + b.kernel_base(src, target) if b.prunable
                    else np.full(len(target), -1, dtype=np.int64))
            if not forward:  # transpose: rows over destination units (a stable sort keeps sources in order)
                order = np.argsort(target, kind="stable")
                indptr = np.concatenate([[0], np.cumsum(np.bincount(target, minlength=b.n_dst))]).astype(np.int64)
                target, mult, l1, base = src[order].astype(np.int32), mult[order], l1[order], base[order]
            indptrs.append(indptr)
            targets.append(target)
            mults.append(mult)
            bases.append(base)
            if self.walks:
                cum[edge_off[b.index]:edge_off[b.index] + counts[b.index]] = _row_cumsum(l1, indptr)
        lay_blocks = dag.out_blocks if forward else dag.in_blocks
        lay_ptr = np.concatenate([[0], np.cumsum([len(x) for x in lay_blocks])]).astype(np.int64)
        return kernels.Walkable(
            self.lay_off, lay_ptr, np.array([i for x in lay_blocks for i in x], dtype=np.int64),
            np.array([b.dst if forward else b.src for b in dag.blocks], dtype=np.int64), dense, nfar, blk_rows,
            edge_off, xedge_off, np.array([b.kernel_volume for b in dag.blocks], dtype=np.int64),
            np.array([b.prunable for b in dag.blocks], dtype=np.bool_), base0, near_stride, far_stride,
            _concat(indptrs, np.int64), _concat(targets, np.int32), cum, _concat(bases, np.int64),
            _concat(mults, np.int32))

    def to_mask(self, state: np.ndarray, meta: dict) -> Mask:
        shapes = self.dag.param_shapes
        return Mask({p: state[o:o + math.prod(shapes[p])].reshape(shapes[p]) == 1
                     for p, o in self.param_offset.items()}, meta)


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    """One contiguous array of `parts` (a view when there is one part of the right type)."""
    if len(parts) == 1 and parts[0].dtype == dtype and parts[0].flags.c_contiguous:
        return parts[0]
    return np.ascontiguousarray(np.concatenate(parts) if parts else np.zeros(0), dtype=dtype)


def _row_cumsum(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting at every CSR row."""
    cs = np.cumsum(values, dtype=np.float64)
    before = np.concatenate([[0.0], cs])[indptr[:-1]]
    return (cs - np.repeat(before, np.diff(indptr))).astype(np.float32)
