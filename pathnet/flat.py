"""`FlatNetwork`: a LayeredDAG as the flat arrays the Numba kernels read.

Units are numbered layer by layer; every prunable weight entry has one flat index (parameters
in DAG order, each in its own row-major order); each direction is a :class:`kernels.Walkable`
whose edges carry the row-wise cumulative L1 weight, the multiplicity and the kernel's first
weight index.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from . import kernels
from .graph import LayeredDAG
from .mask import Mask


class FlatNetwork:
    """A LayeredDAG as flat arrays for the walk kernels: both directions plus the weight entries."""

    def __init__(self, dag: LayeredDAG, walks: bool = True):
        """`walks=False` leaves out what only walks need (weights, cumulative L1, kernel indices)."""
        self.dag = dag
        self.walks = walks
        sizes = [int(np.prod(dag.param_shapes[p])) for p in dag.params]
        self.param_offset = dict(zip(dag.params, np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)))
        self.num_weights = int(sum(sizes))
        if walks:
            full = dag.full_mask()
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
        return self.param_offset[block.param] + block.kernel_base(src, dst)

    def _walkable(self, forward: bool) -> kernels.Walkable:
        dag = self.dag
        indptrs, targets, cums, bases, mults = [], [], [], [], []
        blk_rows, edge_off, far = [], [], []
        rows = edges = 0
        for b in dag.blocks:
            src = b.sources() if self.walks else None
            base = self._kernel_base(b, src, b.indices) if self.walks else None
            if forward:
                indptr, target, l1, mult = b.indptr, b.indices, b.l1, b.multiplicity
            else:  # transpose: rows over destination units
                ids = sp.csr_matrix((np.arange(1, b.num_edges + 1), b.indices, b.indptr), shape=(b.n_src, b.n_dst))
                csc = ids.tocsc()
                csc.sort_indices()
                order = csc.data - 1
                indptr, target = csc.indptr.astype(np.int64), csc.indices.astype(np.int64)
                l1, mult = b.l1[order], b.multiplicity[order]
                base = base[order] if self.walks else None
            blk_rows.append(rows)
            edge_off.append(edges)
            far.append(b.dst if forward else b.src)
            indptrs.append(indptr)
            targets.append(target)
            mults.append(mult)
            if self.walks:
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
            cat(indptrs, np.int64), cat(targets, np.int64), cat(cums, np.float64), cat(bases, np.int64),
            cat(mults, np.int64))

    def to_mask(self, state: np.ndarray, meta: dict) -> Mask:
        return Mask({p: state[o:o + int(np.prod(s))].reshape(s) == 1
                     for (p, o), s in zip(self.param_offset.items(), self.dag.param_shapes.values())}, meta)


def _row_cumsum(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting at every CSR row."""
    cs = np.cumsum(values, dtype=np.float64)
    before = np.concatenate([[0.0], cs])[indptr[:-1]]
    return cs - np.repeat(before, np.diff(indptr))
