"""`to_dag`: read a torch model as a layered DAG of units.

Nodes are *units*: the input's channels (or features), the output neurons of every Linear and
the output channels of every Conv. Units are grouped into layers in topological order. Each
prunable weight becomes one edge *block* between two layers, stored as CSR arrays over units
(row = source unit) with, per edge, the ``multiplicity`` (kept kernel entries) and ``l1``
(sum of |w| over the kept kernel entries). Operations without weights either keep units
(BN, activations, dropout, pooling: they add nothing) or create layers joined by unprunable
edges: ``flatten`` expands a channel into its H·W units, a residual ``add`` (or ``mul``,
``sub``) merges two unit sets through identity edges, ``cat`` stacks them.

The model is traced once with torch.fx and its shapes are read by running it on zeros.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.fx
from torch import nn

from .errors import GraphError, MaskError, UnsupportedLayerError, WeightError
from .mask import PRUNABLE_TYPES, Mask, count, prunable_weights

__all__ = ["Layer", "Block", "SpatialOp", "ConvGeometry", "LayeredDAG", "to_dag", "chain_dag"]


@dataclass(frozen=True)
class Layer:
    """A set of units. ``shape`` is the feature shape the layer's op produces: (C, *spatial) or (F,)."""

    index: int
    name: str
    kind: str  # "input" | "linear" | "conv" | "add" | "mul" | "sub" | "cat" | "flatten"
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
    concatenation edges have ``param=None`` and multiplicity 1 (their ``l1`` is 1 too).
    ``pre_ops`` lists the pooling-like ops between the source layer and this block's op.
    """

    index: int
    src: int
    dst: int
    kind: str  # "linear" | "conv" | "identity" | "expand"
    param: str | None
    indptr: np.ndarray
    indices: np.ndarray
    multiplicity: np.ndarray
    l1: np.ndarray
    n_src: int
    n_dst: int
    kernel_volume: int = 1
    groups: int = 1
    geometry: ConvGeometry | None = None
    pre_ops: tuple[SpatialOp, ...] = ()

    @property
    def prunable(self) -> bool:
        return self.param is not None

    @property
    def num_edges(self) -> int:
        return int(self.indices.shape[0])

    def matrix(self, values: str = "multiplicity"):
        """The block as a scipy.sparse CSR matrix (n_src × n_dst) of `values` ("multiplicity", "l1" or "ones")."""
        import scipy.sparse as sp

        data = np.ones(self.num_edges) if values == "ones" else getattr(self, values)
        return sp.csr_matrix((data, self.indices, self.indptr), shape=(self.n_src, self.n_dst))

    def sources(self) -> np.ndarray:
        """The source unit of every edge (the CSR rows expanded)."""
        return np.repeat(np.arange(self.n_src, dtype=np.int64), np.diff(self.indptr))


class LayeredDAG:
    """Units in layers (topological order) and edge blocks between them.

    ``mask`` is the mask the prunable edges reflect (None: dense). Build with :func:`to_dag`;
    :meth:`with_mask` gives the same topology under another mask.
    """

    def __init__(self, layers: Sequence[Layer], blocks: Sequence[Block], output_layers: Sequence[int],
                 abs_weights: Mapping[str, np.ndarray], weight_shapes: Mapping[str, tuple[int, ...]],
                 mask: Mask | None = None):
        self.layers = tuple(layers)
        self.blocks = tuple(blocks)
        self.input_layer = 0
        self.output_layers = tuple(output_layers)
        self.mask = mask
        self._abs_weights = abs_weights
        self._weight_shapes = weight_shapes
        self.params = tuple(dict.fromkeys(b.param for b in self.blocks if b.prunable))
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
    def num_weights(self) -> int:
        """Number of prunable weight entries (each shared weight counted once)."""
        return sum(math.prod(s) for s in self.param_shapes.values())

    def abs_weights(self, param: str) -> np.ndarray:
        """|w| of a prunable weight as float32, shaped (out, in/groups, kernel volume); read-only."""
        return self._abs_weights[param]

    # -- masks ------------------------------------------------------------------------------
    def check_mask(self, mask: Mask) -> None:
        """Raise MaskError unless every entry of `mask` names a weight of this DAG with its shape."""
        shapes = self.param_shapes
        for k, m in mask.items():
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
            entries.update(mask)
        return Mask(entries, mask.meta if mask is not None else None)

    def with_mask(self, mask: Mask | None) -> LayeredDAG:
        """The same network with the prunable edges recomputed under `mask` (None: dense)."""
        if mask is not None:
            self.check_mask(mask)
        blocks = []
        for b in self.blocks:
            if b.prunable:
                keep = mask[b.param].numpy() if mask is not None and b.param in mask else None
                indptr, indices, mult, l1 = _weight_edges(self._abs_weights[b.param], keep, b.groups, b.n_src)
                b = replace(b, indptr=indptr, indices=indices, multiplicity=mult, l1=l1)
            blocks.append(b)
        return LayeredDAG(self.layers, blocks, self.output_layers, self._abs_weights, self._weight_shapes, mask)

    # -- export -----------------------------------------------------------------------------
    def to_networkx(self):
        """A networkx.DiGraph with nodes ``(layer, unit)`` and the block's values on every edge."""
        import networkx as nx

        g = nx.DiGraph()
        for layer in self.layers:
            g.add_nodes_from(((layer.index, u) for u in range(layer.size)), layer=layer.name, kind=layer.kind)
        for b in self.blocks:
            src = b.sources()
            g.add_edges_from(
                ((b.src, int(s)), (b.dst, int(d)),
                 {"multiplicity": int(m), "l1": float(w), "block": b.index, "param": b.param, "prunable": b.prunable})
                for s, d, m, w in zip(src, b.indices, b.multiplicity, b.l1))
        return g

    def summary(self) -> str:
        """A table of layers: units, incoming edges and kept/total prunable weights."""
        rows = [("#", "layer", "kind", "units", "shape", "in-edges", "weights kept")]
        full = self.full_mask()
        for layer in self.layers:
            blocks = [self.blocks[i] for i in self.in_blocks[layer.index]]
            params = [b.param for b in blocks if b.prunable]
            kept = sum(count(full[p]) for p in params)
            total = sum(full[p].numel() for p in params)
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
    return indptr, np.ascontiguousarray(dst, dtype=np.int64)


def _weight_edges(absw: np.ndarray, keep: np.ndarray | None, groups: int, n_src: int):
    """CSR (indptr, indices, multiplicity, l1) of a weight shaped (out, in/groups, K) under `keep`."""
    out_ch, in_g, k = absw.shape
    if keep is None:
        mult = np.full((out_ch, in_g), k, dtype=np.int64)
        l1 = absw.sum(axis=2, dtype=np.float64)
    elif k == 1:  # 1×1 convs and Linear layers: no kernel to sum over
        keep = keep.reshape(out_ch, in_g)
        mult, l1 = keep, absw.reshape(out_ch, in_g)
    else:
        keep = keep.reshape(out_ch, in_g, k)
        mult = keep.view(np.uint8).sum(axis=2, dtype=np.uint8 if k < 256 else np.int64)
        l1 = (absw * keep).sum(axis=2, dtype=np.float64)
    if groups == 1:
        src, dst = np.nonzero(mult.T)  # row-major over (in, out): already sorted by source
        return (*_csr(src, dst, n_src), mult.T[src, dst].astype(np.int64), l1.T[src, dst].astype(np.float64))
    o, j = np.nonzero(mult)
    src = (o // (out_ch // groups)) * in_g + j
    order = np.lexsort((o, src))
    return (*_csr(src[order], o[order], n_src), mult[o, j][order].astype(np.int64),
            l1[o, j][order].astype(np.float64))


def _unit_map_edges(src: np.ndarray, dst: np.ndarray, n_src: int, mult: int = 1):
    """CSR of weightless edges src[i] → dst[i] (one per source unit order), multiplicity `mult`."""
    order = np.lexsort((dst, src))
    indptr, indices = _csr(src[order], dst[order], n_src)
    return indptr, indices, np.full(len(src), mult, dtype=np.int64), np.full(len(src), float(mult))


# ---------------------------------------------------------------------------------------------
# tracing

_WEIGHTLESS_OK = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)  # per-channel affine only
_MERGES = {
    operator.add: "add", operator.iadd: "add", torch.add: "add", "add": "add", "add_": "add",
    operator.sub: "sub", operator.isub: "sub", torch.sub: "sub", "sub": "sub", "sub_": "sub",
    operator.mul: "mul", operator.imul: "mul", torch.mul: "mul", "mul": "mul", "mul_": "mul",
}
_CATS = {torch.cat, torch.concat, torch.concatenate}
_FUNCTIONAL_LAYERS = {torch.nn.functional.linear, torch.nn.functional.conv1d, torch.nn.functional.conv2d,
                      torch.nn.functional.conv3d, torch.conv2d, torch.conv1d, torch.conv3d}
_SHAPE = "pathnet_shape"  # node.meta key of a tensor's shape (with the batch dim)
_POOL_PARAMS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "output_size", "count_include_pad")


class _ShapeProp(torch.fx.Interpreter):
    """Runs the traced model once, recording every tensor's shape and the node it failed on."""

    failed: torch.fx.Node | None = None

    def run_node(self, n):
        try:
            result = super().run_node(n)
        except Exception:
            self.failed = n
            raise
        if isinstance(result, torch.Tensor):
            n.meta[_SHAPE] = tuple(result.shape)
        return result


class _NamingTracer(torch.fx.Tracer):
    """A tracer that remembers which module it was inside, to name it when tracing fails."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []

    def call_module(self, m, forward, args, kwargs):
        self.stack.append(self.path_of_module(m))
        out = super().call_module(m, forward, args, kwargs)
        self.stack.pop()
        return out


def _trace(model: nn.Module) -> torch.fx.GraphModule:
    tracer = _NamingTracer()
    try:
        graph = tracer.trace(model)
    except Exception as e:
        where = f" inside module {tracer.stack[-1]!r} ({type(model.get_submodule(tracer.stack[-1])).__name__})" \
            if tracer.stack and tracer.stack[-1] else ""
        raise GraphError(
            f"torch.fx could not trace {type(model).__name__}{where}: {type(e).__name__}: {e}. "
            "pathnet reads models with torch.fx symbolic tracing: remove data-dependent control flow from "
            "forward() or wrap the offending function with torch.fx.wrap") from None
    return torch.fx.GraphModule(tracer.root, graph)


def _where(node: torch.fx.Node, gm: torch.fx.GraphModule) -> str:
    """Human description of a node: its op and the module it belongs to."""
    if node.op == "call_module":
        return f"module {node.target!r} ({type(gm.get_submodule(node.target)).__name__})"
    target = getattr(node.target, "__name__", str(node.target))
    stack = node.meta.get("nn_module_stack") or {}
    owner = next(reversed(stack.values()), None) if stack else None
    inside = f" in module {owner[0]!r}" if owner and owner[0] else ""
    return f"{'method' if node.op == 'call_method' else 'function'} {target!r} (node {node.name}){inside}"


def _name(node: torch.fx.Node) -> str:
    """A layer's name: the module path for module calls, the fx node name otherwise."""
    return str(node.target) if node.op == "call_module" else node.name


def _shape(node: Any) -> tuple[int, ...] | None:
    return node.meta.get(_SHAPE) if isinstance(node, torch.fx.Node) else None


def _constant(value: Any) -> Any:
    """A JSON-friendly copy of an op argument (tuples/ints/floats/bools), or its repr."""
    if isinstance(value, (int, float, bool, str)) or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return [_constant(v) for v in value]
    return repr(value)


@dataclass
class _Ref:
    """Where the units of a traced tensor come from."""

    layer: int
    pre_ops: tuple[SpatialOp, ...] = ()


class _Builder:
    def __init__(self, gm: torch.fx.GraphModule, weights: Mapping[str, torch.Tensor]):
        self.gm = gm
        self.weights = weights  # module path + ".weight" → tensor
        self.layers: list[Layer] = []
        self.blocks: list[Block] = []
        self.abs_weights: dict[str, np.ndarray] = {}
        self.weight_shapes: dict[str, tuple[int, ...]] = {}
        self.refs: dict[torch.fx.Node, _Ref] = {}
        self.outputs: list[int] = []

    def add_layer(self, name: str, kind: str, shape: tuple[int, ...]) -> int:
        self.layers.append(Layer(len(self.layers), name, kind, int(shape[0]), tuple(int(s) for s in shape)))
        return len(self.layers) - 1

    def add_block(self, src: _Ref, dst: int, kind: str, edges, **kw) -> None:
        indptr, indices, mult, l1 = edges
        self.blocks.append(Block(len(self.blocks), src.layer, dst, kind, kw.pop("param", None), indptr, indices,
                                 mult, l1, self.layers[src.layer].size, self.layers[dst].size,
                                 pre_ops=src.pre_ops, **kw))

    # -- node handlers ----------------------------------------------------------------------
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.placeholder(node)
            elif node.op == "output":
                self.output(node)
            elif node.op in ("call_module", "call_function", "call_method"):
                self.call(node)

    def placeholder(self, node) -> None:
        if self.layers:
            raise GraphError(f"the model's forward takes a second input {node.name!r}; pathnet follows one input tensor")
        shape = _shape(node)
        self.refs[node] = _Ref(self.add_layer("input", "input", shape[1:]))

    def output(self, node) -> None:
        found = [self.refs[n].layer for n in node.all_input_nodes if n in self.refs]
        if not found:
            raise GraphError("the model's output does not depend on its input through any layer")
        self.outputs = list(dict.fromkeys(found))

    def call(self, node) -> None:
        tracked = [n for n in node.all_input_nodes if n in self.refs]
        if not tracked:
            return  # constants, shapes, parameters
        module = self.gm.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(module, PRUNABLE_TYPES):
            return self.weight_layer(node, module, tracked)
        if module is not None and any(True for _ in module.parameters(recurse=False)) \
                and not isinstance(module, _WEIGHTLESS_OK):
            raise UnsupportedLayerError(
                f"{_where(node, self.gm)} has weights pathnet cannot turn into edges; supported weight layers are "
                "Linear and Conv1d/2d/3d (plus per-channel normalisation). Replace or remove it, or build the "
                "DAG of the supported part of the model")
        if node.target in _FUNCTIONAL_LAYERS:
            raise UnsupportedLayerError(f"{_where(node, self.gm)} applies a weight functionally; pathnet can only "
                                        "name weights owned by nn.Linear / nn.ConvNd modules — use those modules")
        if node.target in _CATS:
            return self.concat(node, tracked)
        if len(tracked) > 1:
            kind = _MERGES.get(node.target)
            if kind is None:
                raise GraphError(f"{_where(node, self.gm)} combines {len(tracked)} traced tensors; pathnet follows "
                                 "elementwise add/sub/mul (residual merges) and torch.cat along channels only")
            return self.merge(node, tracked, kind)
        return self.unary(node, module, tracked[0])

    def weight_layer(self, node, module, tracked) -> None:
        (src_node,) = tracked
        name = f"{node.target}.weight"
        weight = self.weights[name]
        in_shape, out_shape = _shape(src_node), _shape(node)
        src = self.refs[src_node]
        is_conv = not isinstance(module, nn.Linear)
        expected = module.in_channels if is_conv else module.in_features
        if is_conv and len(in_shape) != module.weight.dim():
            raise GraphError(f"{_where(node, self.gm)} receives a tensor of shape {in_shape[1:]}, "
                             f"not {module.weight.dim() - 2} spatial dims as a conv needs")
        if not is_conv and len(in_shape) != 2:
            raise UnsupportedLayerError(
                f"{_where(node, self.gm)} is applied to a {len(in_shape) - 1}-d feature tensor {in_shape[1:]}; "
                "pathnet reads Linear layers on flat (batch, features) inputs — flatten before it")
        if self.layers[src.layer].size != expected:
            raise GraphError(f"{_where(node, self.gm)} expects {expected} input units but its input layer "
                             f"{self.layers[src.layer].name!r} has {self.layers[src.layer].size}")
        w = weight.detach().to("cpu", torch.float32)
        if not torch.isfinite(w).all():
            bad = int((~torch.isfinite(w)).sum())
            raise WeightError(f"weight {name!r} has {bad} NaN/infinite values; pathnet reads |w| as edge weights — "
                              "re-initialise the model or load finite weights")
        groups = module.groups if is_conv else 1
        absw = w.abs().reshape(w.shape[0], w.shape[1], -1).numpy()
        absw.flags.writeable = False
        self.abs_weights.setdefault(name, absw)
        self.weight_shapes.setdefault(name, tuple(w.shape))
        dst = self.add_layer(_name(node), "conv" if is_conv else "linear", out_shape[1:])
        geometry = None
        if is_conv:
            geometry = ConvGeometry(tuple(in_shape[2:]), tuple(out_shape[2:]), tuple(module.kernel_size),
                                    tuple(module.stride), tuple(module.padding) if not isinstance(module.padding, str)
                                    else _same_padding(module), tuple(module.dilation), groups)
        self.add_block(src, dst, "conv" if is_conv else "linear",
                       _weight_edges(absw, None, groups, self.layers[src.layer].size),
                       param=name, kernel_volume=absw.shape[2], groups=groups, geometry=geometry)
        self.refs[node] = _Ref(dst)

    def merge(self, node, tracked, kind) -> None:
        out_shape = _shape(node)
        srcs: dict[int, tuple[_Ref, int]] = {}
        for n in tracked:
            shape = _shape(n)
            if shape is None or len(shape) < 2 or shape[1] != out_shape[1]:
                raise GraphError(f"{_where(node, self.gm)} merges tensors of shapes "
                                 f"{[(_shape(t) or ())[1:] for t in tracked]}; pathnet merges equal channel counts")
            ref = self.refs[n]
            prev = srcs.get(ref.layer)
            srcs[ref.layer] = (ref, (prev[1] if prev else 0) + 1)
        dst = self.add_layer(_name(node), kind, out_shape[1:])
        units = np.arange(out_shape[1], dtype=np.int64)
        for ref, times in srcs.values():
            self.add_block(ref, dst, "identity", _unit_map_edges(units, units, len(units), times))
        self.refs[node] = _Ref(dst)

    def concat(self, node, tracked) -> None:
        out_shape = _shape(node)
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        parts = node.args[0]
        if dim % len(out_shape) != 1 or any(p not in self.refs for p in parts):
            raise GraphError(f"{_where(node, self.gm)} concatenates along dim {dim} or with untraced tensors; "
                             "pathnet follows torch.cat of traced tensors along the channel dim (1) only")
        dst = self.add_layer(_name(node), "cat", out_shape[1:])
        offset = 0
        for p in parts:
            n = _shape(p)[1]
            units = np.arange(n, dtype=np.int64)
            self.add_block(self.refs[p], dst, "identity", _unit_map_edges(units, units + offset, n))
            offset += n
        self.refs[node] = _Ref(dst)

    def unary(self, node, module, src_node) -> None:
        in_shape, out_shape = _shape(src_node), _shape(node)
        if out_shape is None:
            return  # e.g. x.size(): not a tensor of units
        ref = self.refs[src_node]
        spatial_in = math.prod(in_shape[2:]) if len(in_shape) > 2 else 1
        if len(in_shape) > 2 and len(out_shape) == 2 and out_shape[1] == in_shape[1] * spatial_in and spatial_in > 1:
            if src_node.op == "placeholder" and len(src_node.users) == 1:
                # a flattened input (an MLP on images): its units are the features, not the channels
                self.layers[0] = replace(self.layers[0], size=out_shape[1], shape=tuple(out_shape[1:]))
                self.refs[node] = _Ref(0)
                return
            dst = self.add_layer(_name(node), "flatten", out_shape[1:])
            channels = np.arange(in_shape[1], dtype=np.int64)
            self.add_block(ref, dst, "expand",
                           _unit_map_edges(np.repeat(channels, spatial_in),
                                           np.arange(out_shape[1], dtype=np.int64), in_shape[1]))
            self.refs[node] = _Ref(dst)
            return
        if len(out_shape) < 2 or out_shape[1] != in_shape[1]:
            raise GraphError(f"{_where(node, self.gm)} turns shape {in_shape[1:]} into {out_shape[1:]}; pathnet "
                             "follows ops that keep the channel/feature units or flatten (C, H, W) to C·H·W")
        pooled = "Pool" in type(module).__name__ if module is not None else "pool" in str(node.target)
        if pooled or tuple(in_shape[2:]) != tuple(out_shape[2:]):
            params = ({p: _constant(getattr(module, p)) for p in _POOL_PARAMS if hasattr(module, p)}
                      if module is not None else {"args": _constant(node.args[1:]),
                                                  **{k: _constant(v) for k, v in node.kwargs.items()}})
            kind = type(module).__name__ if module is not None else getattr(node.target, "__name__", str(node.target))
            ref = _Ref(ref.layer, ref.pre_ops + (SpatialOp(kind, tuple(in_shape[1:]), tuple(out_shape[1:]), params),))
        self.refs[node] = ref


def _same_padding(module) -> tuple[int, ...]:
    """Leading padding of a conv with padding='same'/'valid' (what the spatial level needs)."""
    if module.padding == "valid":
        return (0,) * len(module.kernel_size)
    return tuple(d * (k - 1) // 2 for d, k in zip(module.dilation, module.kernel_size))


def _check_input_shape(input_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except TypeError:
        raise GraphError(f"input_shape must be a tuple of ints like (3, 32, 32), got {input_shape!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise GraphError(f"input_shape must be positive sizes without the batch dimension, e.g. (3, 32, 32); "
                         f"got {input_shape!r}")
    return shape


def to_dag(model: nn.Module, input_shape: Iterable[int], mask: Mask | None = None) -> LayeredDAG:
    """Read `model` as a :class:`LayeredDAG` for inputs of `input_shape` (without the batch dim).

    `mask` defaults to the mask buffers the model carries (torch.nn.utils.prune, Synaptic-Flow,
    open_lth), or dense when it has none.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"to_dag expects a torch.nn.Module, got {type(model).__name__}")
    shape = _check_input_shape(input_shape)
    gm = _trace(model)
    was_training = model.training
    prop = None
    try:
        model.eval()
        gm.eval()
        params = next(model.parameters(), None)
        example = torch.zeros((1, *shape), dtype=params.dtype if params is not None else torch.float32,
                              device=params.device if params is not None else "cpu")
        prop = _ShapeProp(gm)
        with torch.no_grad():
            prop.run(example)
    except Exception as e:
        root = e.__cause__ or e
        at = f" at {_where(prop.failed, gm)}" if prop is not None and prop.failed is not None else ""
        raise GraphError(f"running {type(model).__name__} on an input of shape {shape} failed{at} "
                         f"({type(root).__name__}: {str(root).splitlines()[0] if str(root) else ''}); pass "
                         "input_shape as one example's shape without the batch dimension, e.g. (3, 32, 32) for "
                         "CIFAR or (784,) for a flat MLP") from None
    finally:
        model.train(was_training)
    builder = _Builder(gm, prunable_weights(model))
    builder.run()
    if not builder.blocks or not any(b.prunable for b in builder.blocks):
        raise GraphError(f"{type(model).__name__} has no Linear/Conv layer between its input and output")
    dag = LayeredDAG(builder.layers, builder.blocks, builder.outputs, builder.abs_weights, builder.weight_shapes)
    if mask is None:
        try:
            mask = Mask.from_model(model)
        except MaskError:
            return dag
    return dag.with_mask(mask)


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
        blocks.append(Block(i, i, i + 1, "linear", name, *_weight_edges(absw, None, 1, shape[1]), shape[1], shape[0]))
    dag = LayeredDAG(layers, blocks, [len(layers) - 1], abs_weights, dict(zip(names, shapes)))
    return dag.with_mask(mask)
