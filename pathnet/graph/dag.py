"""The layered DAG a model becomes: units (channels, features) in layers, weights as edge blocks.

Nodes are *units*: the input's channels (or features), the output neurons of every Linear and
the output channels of every Conv, plus the units of weightless layers that join others
(merges, concatenations, flatten, gathers, attention). Units are grouped into layers in
topological order. Each prunable weight becomes one or more edge *blocks* between two layers,
stored as CSR arrays over units (row = source unit) with, per edge, the ``multiplicity`` (kept
kernel entries) and ``l1`` (sum of |w| over the kept kernel entries).

How an edge reads its weight entries lives in one place, :meth:`Block.kernel_base`: a block
covers rows ``row_offset:row_offset + n_dst`` of its parameter (an attention ``in_proj_weight``
holds three blocks: Q, K and V), grouped convolutions connect a unit to the input channels of
its group, and a *shared* block (a Linear applied over a position axis, e.g. an MLP-mixer's
token mixing) joins every unit to itself through the whole weight matrix.

:func:`to_dag` (in ``trace.py``) builds the DAG from a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..errors import GraphError, MaskError
from ..mask import Mask

__all__ = ["Layer", "Block", "SpatialOp", "ConvGeometry", "LayeredDAG", "chain_dag"]


@dataclass(frozen=True)
class Layer:
    """A set of units. ``shape`` is the feature shape the layer's op produces: (C, *spatial) or (F,)."""

    index: int
    name: str
    kind: str  # "input" | "linear" | "conv" | "add" | "mul" | "sub" | "cat" | "flatten" | "gather" | "matmul" …
    size: int
    shape: tuple[int, ...]

    @property
    def has_weights(self) -> bool:
        return self.kind in ("linear", "conv")


@dataclass(frozen=True)
class SpatialOp:
    """A weightless op that kept the units but may have changed their spatial extent (pooling)."""

    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConvGeometry:
    """What the spatial (fully unrolled) level needs to know about a convolution."""

    in_spatial: tuple[int, ...]
    out_spatial: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int


@dataclass(frozen=True, eq=False)
class Block:
    """The edges from layer ``src`` to layer ``dst``, CSR over source units.

    ``param`` names the weight (and its mask entry) for prunable blocks; identity, expand and
    gather edges have ``param=None`` and multiplicity 1 (their ``l1`` is 1 too).
    ``pre_ops`` lists the pooling-like ops between the source layer and this block's op.
    A prunable block reads rows ``row_offset:row_offset + n_dst`` of its weight (viewed as
    (out, in/groups, kernel volume)); a ``shared`` block joins unit i to unit i through the
    whole weight (kernel volume = every entry).

    A *dense* block (``edges`` None: an unpruned, ungrouped weight) stores no edges: every
    (source, destination) pair is an edge of multiplicity ``kernel_volume`` and L1 read from
    ``absw``. Its CSR arrays are built only if asked for (``indptr``, ``indices`` …); the
    kernels and metrics read dense blocks without them, so a 100M-weight Linear costs nothing
    per edge. Stored edges use int32 indices and multiplicities and float32 L1.
    """

    index: int
    src: int
    dst: int
    kind: str  # "linear" | "conv" | "identity" | "expand"
    param: str | None
    n_src: int
    n_dst: int
    edges: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None  # indptr, indices, mult, l1
    absw: np.ndarray | None = None  # the parameter's |w| (out, in/groups, K): a dense block's L1
    kernel_volume: int = 1
    groups: int = 1
    geometry: ConvGeometry | None = None
    pre_ops: tuple[SpatialOp, ...] = ()
    row_offset: int = 0
    shared: bool = False

    @property
    def prunable(self) -> bool:
        return self.param is not None

    @property
    def dense(self) -> bool:
        return self.edges is None

    @property
    def num_edges(self) -> int:
        return self.n_src * self.n_dst if self.dense else int(self.edges[1].shape[0])

    def csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(indptr, indices, multiplicity, l1), built for a dense block (memory ∝ its edges)."""
        if not self.dense:
            return self.edges
        indptr = np.arange(0, self.num_edges + 1, self.n_dst, dtype=np.int64)
        indices = np.tile(np.arange(self.n_dst, dtype=np.int32), self.n_src)
        mult = np.full(self.num_edges, self.kernel_volume, dtype=np.int32)
        return indptr, indices, mult, self.dense_l1().T.reshape(-1)

    def dense_l1(self) -> np.ndarray:
        """Σ|w| of every (destination, source) kernel of a dense block, float32 (n_dst, n_src)."""
        w = self.entries(self.absw)
        return w[:, :, 0] if w.shape[2] == 1 else w.sum(axis=2, dtype=np.float32)

    indptr = property(lambda self: self.csr()[0])
    indices = property(lambda self: self.csr()[1])
    multiplicity = property(lambda self: self.csr()[2])
    l1 = property(lambda self: self.csr()[3])

    def matrix(self, values: str = "multiplicity"):
        """The block as a scipy.sparse CSR matrix (n_src × n_dst) of `values` ("multiplicity", "l1" or "ones")."""
        import scipy.sparse as sp

        indptr, indices, mult, l1 = self.csr()
        data = np.ones(len(indices)) if values == "ones" else (mult if values == "multiplicity" else l1)
        return sp.csr_matrix((data, indices, indptr), shape=(self.n_src, self.n_dst))

    def sources(self) -> np.ndarray:
        """The source unit of every edge (the CSR rows expanded)."""
        if self.dense:
            return np.repeat(np.arange(self.n_src, dtype=np.int64), self.n_dst)
        return np.repeat(np.arange(self.n_src, dtype=np.int64), np.diff(self.edges[0]))

    def has_in(self) -> np.ndarray:
        """Destination units with at least one edge in this block."""
        out = np.zeros(self.n_dst, dtype=bool)
        if self.dense:
            out[:] = self.n_src > 0
        else:
            out[self.edges[1]] = True
        return out

    def has_out(self) -> np.ndarray:
        """Source units with at least one edge in this block."""
        if self.dense:
            return np.full(self.n_src, self.n_dst > 0)
        return np.diff(self.edges[0]) > 0

    def columns(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """The weight column (input channel within the group) that edges src → dst read."""
        return src - (dst // (self.n_dst // self.groups)) * (self.n_src // self.groups)

    def kernel_base(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Flat index, within the parameter, of the first of the ``kernel_volume`` entries behind each edge."""
        if self.shared:
            return np.zeros(len(src), dtype=np.int64)
        return ((self.row_offset + dst) * (self.n_src // self.groups) + self.columns(src, dst)) * self.kernel_volume

    def entries(self, values: np.ndarray) -> np.ndarray:
        """This block's part of a parameter-shaped array, viewed as (n_dst, in/groups, kernel volume)
        (shared blocks: (1, 1, every entry))."""
        if self.shared:
            return values.reshape(1, 1, -1)
        rows = values.reshape(-1, self.n_src // self.groups, self.kernel_volume)
        return rows[self.row_offset:self.row_offset + self.n_dst]


class LayeredDAG:
    """Units in layers (topological order) and edge blocks between them.

    ``mask`` is the mask the prunable edges reflect (None: dense). Build with :func:`to_dag`;
    :meth:`with_mask` gives the same topology under another mask.
    """

    def __init__(self, layers: Sequence[Layer], blocks: Sequence[Block], output_layers: Sequence[int],
                 abs_weights: Mapping[str, np.ndarray], weight_shapes: Mapping[str, tuple[int, ...]],
                 mask: Mask | None = None, constant_params: Sequence[str] = (),
                 flat: tuple[np.ndarray, Mapping[str, int]] | None = None):
        self.layers = tuple(layers)
        self.blocks = tuple(blocks)
        self.input_layer = 0
        self.output_layers = tuple(output_layers)
        self.mask = mask
        self._abs_weights = abs_weights
        self._weight_shapes = weight_shapes
        self.params = tuple(dict.fromkeys(b.param for b in self.blocks if b.prunable))
        # prunable weights applied only to input-independent tensors (e.g. Swin-v2's position-bias MLP):
        # no input→output path crosses them
        self.constant_params = tuple(constant_params)
        self._flat = flat
        self.in_blocks = tuple(tuple(b.index for b in self.blocks if b.dst == i) for i in range(len(self.layers)))
        self.out_blocks = tuple(tuple(b.index for b in self.blocks if b.src == i) for i in range(len(self.layers)))

    # -- sizes ------------------------------------------------------------------------------
    @property
    def num_units(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def num_edges(self) -> int:
        return sum(b.num_edges for b in self.blocks)

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every prunable weight as the model holds it."""
        return {p: self._weight_shapes[p] for p in self.params}

    @property
    def constant_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every prunable weight that no path crosses (``constant_params``)."""
        return {p: self._weight_shapes[p] for p in self.constant_params}

    @property
    def num_weights(self) -> int:
        """Number of prunable weight entries (each shared weight counted once)."""
        return sum(math.prod(s) for s in self.param_shapes.values())

    def abs_weights(self, param: str) -> np.ndarray:
        """|w| of a prunable weight as float32, shaped (out, in/groups, kernel volume); read-only."""
        return self._abs_weights[param]

    def flat_abs_weights(self) -> tuple[np.ndarray, dict[str, int]]:
        """|w| of every prunable weight in one float32 array and each weight's offset in it (the buffer
        to_dag filled, shared, or one concatenation in DAG order)."""
        if self._flat is not None:
            buffer, offsets = self._flat
            return buffer, {p: int(offsets[p]) for p in self.params}
        sizes = [math.prod(self._weight_shapes[p]) for p in self.params]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64).tolist()
        return (np.concatenate([self._abs_weights[p].reshape(-1) for p in self.params]).astype(np.float32),
                dict(zip(self.params, offsets)))

    # -- masks ------------------------------------------------------------------------------
    def check_mask(self, mask: Mask) -> None:
        """Raise MaskError unless every entry of `mask` names a weight of this DAG with its shape."""
        shapes = self.param_shapes
        for k, m in mask.items():
            if k in self.constant_params:
                continue  # a weight no path crosses: masks may name it, the graph ignores it
            if k not in shapes:
                raise MaskError(f"mask entry {k!r} is not a prunable weight of this network "
                                f"(it has {len(shapes)}, e.g. {next(iter(shapes))!r}); was it made for another model?")
            if tuple(m.shape) != shapes[k]:
                raise MaskError(f"mask entry {k!r} has shape {tuple(m.shape)}, the weight has {shapes[k]}")

    def full_mask(self, mask: Mask | None = None) -> Mask:
        """`mask` (default: this DAG's) over all prunable weights, missing entries dense."""
        mask = self.mask if mask is None else mask
        entries = {p: torch.ones(s, dtype=torch.bool) for p, s in self.param_shapes.items()}
        if mask is not None:
            self.check_mask(mask)
            entries.update((k, v) for k, v in mask.items() if k in entries)
        return Mask(entries, mask.meta if mask is not None else None)

    def with_mask(self, mask: Mask | None) -> LayeredDAG:
        """The same network with the prunable edges recomputed under `mask` (None: dense)."""
        if mask is not None:
            self.check_mask(mask)
        blocks = []
        for b in self.blocks:
            if b.prunable:
                keep = mask[b.param].numpy() if mask is not None and b.param in mask else None
                b = replace(b, edges=block_edges(b, self._abs_weights[b.param], keep))
            blocks.append(b)
        return LayeredDAG(self.layers, blocks, self.output_layers, self._abs_weights, self._weight_shapes, mask,
                          self.constant_params, self._flat)

    # -- export -----------------------------------------------------------------------------
    def to_networkx(self):
        """A networkx.DiGraph with nodes ``(layer, unit)`` and the block's values on every edge."""
        import networkx as nx

        g = nx.DiGraph()
        for layer in self.layers:
            g.add_nodes_from(((layer.index, u) for u in range(layer.size)), layer=layer.name, kind=layer.kind)
        for b in self.blocks:
            indptr, indices, mult, l1 = b.csr()
            src = np.repeat(np.arange(b.n_src), np.diff(indptr))
            g.add_edges_from(
                ((b.src, int(s)), (b.dst, int(d)),
                 {"multiplicity": int(m), "l1": float(w), "block": b.index, "param": b.param, "prunable": b.prunable})
                for s, d, m, w in zip(src, indices, mult, l1))
        return g

    def summary(self) -> str:
        """A table of layers: units, incoming edges and kept/total prunable weights."""
        rows = [("#", "layer", "kind", "units", "shape", "in-edges", "weights kept")]
        full = self.full_mask()
        for layer in self.layers:
            blocks = [self.blocks[i] for i in self.in_blocks[layer.index]]
            params = [b.param for b in blocks if b.prunable]
            parts = [b.entries(full[b.param].numpy()) for b in blocks if b.prunable]
            kept = sum(int(np.count_nonzero(x)) for x in parts)
            total = sum(x.size for x in parts)
            rows.append((str(layer.index), layer.name, layer.kind, str(layer.size), "×".join(map(str, layer.shape)),
                         str(sum(b.num_edges for b in blocks)), f"{kept:,}/{total:,}" if params else "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append(f"{len(self.layers)} layers, {self.num_units:,} units, {self.num_edges:,} edges, "
                     f"{full.num_kept:,}/{full.num_total:,} prunable weights kept")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"LayeredDAG({len(self.layers)} layers, {len(self.blocks)} blocks, "
                f"{self.num_units:,} units, {self.num_edges:,} edges)")


# ---------------------------------------------------------------------------------------------
# edge construction

def _csr(src: np.ndarray, dst: np.ndarray, n_src: int) -> tuple[np.ndarray, np.ndarray]:
    """indptr and indices of edges (src, dst) already sorted by (src, dst)."""
    indptr = np.zeros(n_src + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n_src), out=indptr[1:])
    return indptr, np.ascontiguousarray(dst, dtype=np.int32)


def block_edges(block: Block, absw: np.ndarray, keep: np.ndarray | None):
    """The stored edges (indptr, indices, multiplicity, l1) of a prunable block under `keep` (its
    parameter's mask entry; None: dense), read from the parameter's |w| `absw`; None where the block
    is dense and ungrouped (its edges stay implicit)."""
    w = block.entries(absw)
    k = None if keep is None else block.entries(keep)
    if k is not None and k.all():
        k = None
    if block.shared:  # unit i → unit i through the whole matrix
        mult = w.size if k is None else int(np.count_nonzero(k))
        l1 = float(w.sum(dtype=np.float64) if k is None else (w * k).sum(dtype=np.float64))
        units = np.arange(block.n_src, dtype=np.int64)
        return _unit_map_edges(units, units, block.n_src, mult, l1)
    if k is None and block.groups == 1:
        return None
    return _weight_edges(w, k, block.groups, block.n_src)


def _weight_edges(absw: np.ndarray, keep: np.ndarray | None, groups: int, n_src: int):
    """CSR (indptr, indices, multiplicity, l1) of a weight shaped (out, in/groups, K) under `keep`."""
    out_ch, in_g, k = absw.shape
    if keep is None:
        mult = np.full((out_ch, in_g), k, dtype=np.int32)
        l1 = absw.sum(axis=2, dtype=np.float32)
    elif k == 1:  # 1×1 convs and Linear layers: no kernel to sum over
        keep = keep.reshape(out_ch, in_g)
        mult, l1 = keep, absw.reshape(out_ch, in_g)
    else:
        keep = keep.reshape(out_ch, in_g, k)
        mult = keep.view(np.uint8).sum(axis=2, dtype=np.uint8 if k < 256 else np.int32)
        l1 = (absw * keep).sum(axis=2, dtype=np.float32)
    if groups == 1:
        src, dst = np.nonzero(mult.T)  # row-major over (in, out): already sorted by source
        return (*_csr(src, dst, n_src), mult.T[src, dst].astype(np.int32), l1.T[src, dst].astype(np.float32))
    o, j = np.nonzero(mult)
    src = (o // (out_ch // groups)) * in_g + j
    order = np.lexsort((o, src))
    return (*_csr(src[order], o[order], n_src), mult[o, j][order].astype(np.int32),
            l1[o, j][order].astype(np.float32))


def _unit_map_edges(src: np.ndarray, dst: np.ndarray, n_src: int, mult: int = 1, l1: float | None = None):
    """CSR of edges src[i] → dst[i], each with multiplicity `mult` and L1 `l1` (default: `mult`)."""
    order = np.lexsort((dst, src))
    indptr, indices = _csr(src[order], dst[order], n_src)
    return (indptr, indices, np.full(len(src), mult, dtype=np.int32),
            np.full(len(src), float(mult if l1 is None else l1), dtype=np.float32))


def chain_dag(mask: Mask) -> LayeredDAG:
    """The DAG of a plain chain of Linear layers, read from the mask's shapes alone (|w| = 1).

    Lets path and unit measures run without a model when the masks are an MLP's.
    """
    shapes = [tuple(m.shape) for m in mask.values()]
    names = list(mask)
    for i, shape in enumerate(shapes):
        if len(shape) != 2 or (i and shape[1] != shapes[i - 1][0]):
            raise GraphError(f"without a model, path and unit measures need a chain of Linear masks, but "
                             f"{names[i]!r} has shape {shape}" + (f" after {shapes[i - 1]}" if i else "")
                             + "; pass model= and input_shape= (or dag=)")
    layers = [Layer(0, "input", "input", shapes[0][1], (shapes[0][1],))]
    blocks, abs_weights = [], {}
    for i, (name, shape) in enumerate(zip(names, shapes)):
        layers.append(Layer(i + 1, name.rpartition(".")[0] or name, "linear", shape[0], (shape[0],)))
        absw = np.ones((shape[0], shape[1], 1), dtype=np.float32)
        absw.flags.writeable = False
        abs_weights[name] = absw
        blocks.append(Block(i, i, i + 1, "linear", name, shape[1], shape[0], absw=absw))
    dag = LayeredDAG(layers, blocks, [len(layers) - 1], abs_weights, dict(zip(names, shapes)))
    return dag.with_mask(mask)
