"""`to_dag`: read a torch model as a :class:`LayeredDAG` by following which units every tensor holds.

The model is traced with torch.fx (in training mode, so auxiliary heads are outputs too) and run
once on zeros (in eval mode) to read every shape. Beside each traced tensor the builder carries a
tensor of *unit labels* of the same shape (batch 1): 0 where the value does not depend on the
input, k where it is a value of global unit k − 1. Ops that only move values (view, permute,
slicing, roll, chunk, pad, cat along positions …) are applied to the labels literally, so the unit
axis is followed through any layout without being assumed. Ops that combine units (residual adds,
products of activations, attention, reductions over units) make new weightless layers whose units
are joined to what they depend on. Weight ops read the units along the axis they contract.

Every op is looked up in the handler table of ``ops.py``; an op without a handler is refused.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.fx
from torch import nn

from ..errors import ArgumentTypeError, GraphError, MaskError, PathnetError, UnsupportedLayerError, WeightError
from ..mask import Mask, prunable_weights
from .dag import Block, ConvGeometry, Layer, LayeredDAG, SpatialOp, _unit_map_edges, block_edges

__all__ = ["Units", "DagBuilder", "to_dag", "clear_cache"]


@dataclass(frozen=True, eq=False)
class Units:
    """What the builder knows of one traced tensor: the unit behind every value.

    ``labels`` has the tensor's shape (batch 1): 0 = no unit (a constant), k = global unit k − 1.
    ``pre_ops`` are the pooling-like ops since the units' layer (for the spatial level), ``name``
    the node that last laid the units out (it names layers made from them).
    """

    labels: torch.Tensor
    pre_ops: tuple[SpatialOp, ...] = ()
    name: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.labels.shape)


# -- label sets: what each value of a mixing op depends on ---------------------------------------

@dataclass
class _Sets:
    """A tensor of set ids and the table of their members (arrays of labels > 0)."""

    ids: torch.Tensor
    table: list[np.ndarray]

    @staticmethod
    def of(labels: torch.Tensor) -> "_Sets":
        values, inverse = np.unique(labels.numpy(), return_inverse=True)
        table = [np.array([v], dtype=np.int64) if v > 0 else np.zeros(0, dtype=np.int64) for v in values]
        return _Sets(torch.from_numpy(inverse.reshape(labels.shape).astype(np.int64)), table)

    @staticmethod
    def rows(labels: torch.Tensor, dims: Sequence[int]) -> "_Sets":
        """The set of labels along `dims` for every index of the other dims (kept with size 1)."""
        nd = labels.dim()
        dims = sorted(d % nd for d in dims)
        keep = [d for d in range(nd) if d not in dims]
        moved = labels.permute(*keep, *dims)
        flat = moved.reshape(-1, math.prod(labels.shape[d] for d in dims) or 1).numpy()
        uniq, inverse = np.unique(np.sort(flat, axis=1), axis=0, return_inverse=True)
        table = [np.unique(r[r > 0]) for r in uniq]
        shape = [labels.shape[d] if d in keep else 1 for d in range(nd)]
        return _Sets(torch.from_numpy(inverse.reshape(-1).astype(np.int64)).reshape(shape), table)

    def union(self, other: "_Sets") -> "_Sets":
        a, b = torch.broadcast_tensors(self.ids, other.ids)
        codes = (a * len(other.table) + b).numpy()
        pairs, inverse = np.unique(codes, return_inverse=True)
        table = [np.union1d(self.table[p // len(other.table)], other.table[p % len(other.table)]) for p in pairs]
        return _Sets(torch.from_numpy(inverse.reshape(codes.shape).astype(np.int64)), table)


def _compact(*tensors: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, ...]]:
    """The tensors narrowed to index 0 along every axis where all of them are constant by stride
    (expanded), plus the common broadcast shape to expand results back to."""
    shape = torch.broadcast_shapes(*(t.shape for t in tensors))
    tensors = [t.expand(shape) for t in tensors]
    flat = [d for d in range(len(shape)) if shape[d] > 1 and all(t.stride(d) == 0 for t in tensors)]
    for d in flat:
        tensors = [t.narrow(d, 0, 1) for t in tensors]
    return tensors, tuple(shape)


# -- the builder --------------------------------------------------------------------------------

class DagBuilder:
    """Accumulates layers and blocks while the interpreter walks the traced graph.

    Handlers (``ops.py``) call its methods: :meth:`source` (the layer a weight op reads),
    :meth:`weight` (a prunable block into a new layer), :meth:`along` (labels of a layer laid
    along an axis), :meth:`combine` (values that depend on several units at their position) and
    :meth:`realize` (labels for values that depend on sets of units, e.g. ``_Sets.rows``).
    """

    def __init__(self, gm: torch.fx.GraphModule, weights: Mapping[str, torch.Tensor]):
        self.gm = gm
        self.weights = weights
        self.layers: list[Layer] = []
        self.blocks: list[Block] = []
        self.offsets: list[int] = [0]
        self.abs_weights: dict[str, np.ndarray] = {}
        self.weight_shapes: dict[str, tuple[int, ...]] = {}
        # |w| of every prunable weight in one float32 buffer (views per weight): the walks read it as is
        sizes = [w.numel() for w in weights.values()]
        self.flat_offsets = dict(zip(weights, np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64).tolist()))
        self.flat_abs = np.empty(int(sum(sizes)), dtype=np.float32)
        self.constant_params: dict[str, None] = {}
        self.outputs: list[int] = []
        self.node: torch.fx.Node | None = None
        self._gathers: dict[tuple, tuple[int, tuple]] = {}

    # -- naming -----------------------------------------------------------------------------
    def where(self, node: torch.fx.Node | None = None) -> str:
        return _where(node or self.node, self.gm)

    def module(self, node: torch.fx.Node | None = None) -> nn.Module | None:
        node = node or self.node
        return self.gm.get_submodule(node.target) if node.op == "call_module" else None

    def param_name(self, arg: Any) -> str:
        """The prunable weight an fx argument (a get_attr node) names; UnsupportedLayerError otherwise."""
        if isinstance(arg, torch.fx.Node) and arg.op == "get_attr" and str(arg.target) in self.weights:
            return str(arg.target)
        what = f"parameter {arg.target!r}" if isinstance(arg, torch.fx.Node) and arg.op == "get_attr" else "a tensor"
        raise UnsupportedLayerError(
            f"{self.where()} applies {what} as a weight; pathnet can only name weights owned by nn.Linear / "
            "nn.ConvNd modules (and attention in-projections) — use those modules")

    # -- layers -----------------------------------------------------------------------------
    def add_layer(self, name: str, kind: str, size: int, positions: Sequence[int] = ()) -> int:
        self.layers.append(Layer(len(self.layers), name, kind, int(size), (int(size), *map(int, positions))))
        self.offsets.append(self.offsets[-1] + int(size))
        return len(self.layers) - 1

    def along(self, layer: int, shape: Sequence[int], axis: int) -> torch.Tensor:
        """Labels of `layer`'s units laid along `axis` of a tensor of `shape` (an expanded view)."""
        axis %= len(shape)
        ids = torch.arange(self.offsets[layer] + 1, self.offsets[layer + 1] + 1, dtype=torch.int64)
        view = [1] * len(shape)
        view[axis] = len(ids)
        return ids.view(view).expand(*shape)

    def vector(self, units: Units, axis: int) -> np.ndarray | None:
        """The label of every index along `axis` if the labels depend on that axis alone (0s aside)."""
        lab = units.labels
        if lab.dim() == 0:
            return None
        axis %= lab.dim()
        others = [d for d in range(lab.dim()) if d != axis]
        if all(lab.stride(d) == 0 or lab.shape[d] == 1 for d in others):
            return lab[tuple(0 if d != axis else slice(None) for d in range(lab.dim()))].numpy().copy()
        top = lab.amax(dim=others, keepdim=True) if others else lab
        if not bool(((lab == top) | (lab == 0)).all()):
            return None
        return top.reshape(-1).numpy().copy()

    def source(self, units: Units, axis: int, what: str) -> tuple[int, tuple[SpatialOp, ...]]:
        """The layer whose units a weight op reads along `axis` (made by gathering them if they are
        not one whole layer in order), with the pooling ops the op's block must carry."""
        vec = self.vector(units, axis)
        if vec is None:
            raise GraphError(
                f"{self.where()} applies {what} along axis {axis % units.labels.dim()} of a tensor of shape "
                f"{units.shape[1:]} whose units also vary along other axes (a layout pathnet cannot read as "
                "units × positions)")
        return self.gather(vec, units.pre_ops, units.name or _name(self.node))

    def gather(self, vec: np.ndarray, pre_ops: tuple = (), name: str = "") -> tuple[int, tuple[SpatialOp, ...]]:
        """A layer holding the units labelled `vec` in that order: an existing layer if it is one whole
        layer, else a new weightless layer joined to them ("flatten" when units repeat, "cat" when it
        stacks whole layers, "gather" for any other selection or permutation)."""
        vec = np.asarray(vec, dtype=np.int64)
        live = vec[vec > 0]
        if len(live) == 0:
            raise GraphError(f"{self.where()} reads a tensor that does not depend on the model's input")
        first = int(np.searchsorted(self.offsets, live[0] - 1, side="right") - 1)
        if (len(vec) == self.layers[first].size and vec[0] == self.offsets[first] + 1
                and np.array_equal(vec, np.arange(vec[0], vec[0] + len(vec)))):
            return first, pre_ops
        key = (vec.tobytes(), repr(pre_ops))
        if key not in self._gathers:
            repeats = len(np.unique(live)) < len(live)
            layer_of = np.searchsorted(self.offsets, live - 1, side="right") - 1
            segments = list(dict.fromkeys(layer_of.tolist()))
            stacked = np.concatenate([np.arange(self.offsets[li] + 1, self.offsets[li + 1] + 1) for li in segments])
            kind = "flatten" if repeats else ("cat" if len(segments) > 1 and np.array_equal(vec, stacked)
                                              else "gather")
            dst = self.add_layer(name, kind, len(vec))
            self.link(dst, np.flatnonzero(vec > 0), live, "expand" if repeats else "identity", pre_ops)
            self._gathers[key] = (dst, ())
        return self._gathers[key]

    def layer_of(self, labels: np.ndarray) -> np.ndarray:
        """The layer of every unit label (> 0)."""
        return np.searchsorted(self.offsets, np.asarray(labels) - 1, side="right") - 1

    def link(self, dst: int, dst_units: np.ndarray, labels: np.ndarray, kind: str = "identity",
             pre_ops: tuple | Mapping[int, tuple] = ()) -> None:
        """Weightless edges from the units labelled `labels` to `dst_units` of layer `dst`, one block per
        source layer (`pre_ops`: the pooling ops behind them, or a dict of them per source layer)."""
        units = labels - 1
        layer_of = self.layer_of(labels)
        for li in dict.fromkeys(layer_of.tolist()):
            sel = layer_of == li
            src = units[sel] - self.offsets[li]
            edges = _unit_map_edges(src, dst_units[sel], self.layers[li].size)
            pre = pre_ops.get(li, ()) if isinstance(pre_ops, Mapping) else pre_ops
            self._block(li, dst, kind, edges, pre_ops=pre)

    def _block(self, src: int, dst: int, kind: str, edges, **kw) -> Block:
        block = Block(len(self.blocks), src, dst, kind, kw.pop("param", None), self.layers[src].size,
                      self.layers[dst].size, edges, **kw)
        self.blocks.append(block)
        return block

    # -- weights ----------------------------------------------------------------------------
    def weight(self, src: int, pre_ops: tuple, param: str, kind: str, size: int, positions: Sequence[int] = (),
               *, rows: int = 0, groups: int = 1, geometry: ConvGeometry | None = None,
               shared: bool = False, name: str | None = None) -> int:
        """A new layer of `size` units fed from layer `src` through prunable weight `param` (rows
        `rows:rows + size` of it; `shared`: unit i → unit i through the whole matrix)."""
        if param not in self.weights:
            raise UnsupportedLayerError(f"{self.where()} uses weight {param!r}, which is not a prunable weight")
        if param not in self.abs_weights:
            w = self.weights[param].detach().to("cpu", torch.float32)
            off = self.flat_offsets[param]
            absw = self.flat_abs[off:off + w.numel()].reshape(w.shape[0], w.shape[1], -1)
            np.abs(w.reshape(absw.shape).numpy(), out=absw)
            if not math.isfinite(absw.sum(dtype=np.float64)):
                bad = int((~np.isfinite(absw)).sum())
                raise WeightError(f"weight {param!r} has {bad} NaN/infinite values; pathnet reads |w| as edge "
                                  "weights — re-initialise the model or load finite weights")
            absw.flags.writeable = False
            self.abs_weights[param] = absw
            self.weight_shapes[param] = tuple(w.shape)
        absw = self.abs_weights[param]
        n_src = self.layers[src].size
        if shared:
            if size != n_src:
                raise GraphError(f"{self.where()}: a shared block joins each unit to itself")
        elif n_src != absw.shape[1] * groups or rows + size > absw.shape[0]:
            raise GraphError(f"{self.where()} expects {absw.shape[1] * groups} input units but its input layer "
                             f"{self.layers[src].name!r} has {n_src}")
        dst = self.add_layer(name or _name(self.node), kind, size, positions)
        block = Block(len(self.blocks), src, dst, kind, param, n_src, size, absw=absw,
                      kernel_volume=absw.size if shared else absw.shape[2], groups=groups, geometry=geometry,
                      pre_ops=pre_ops, row_offset=rows, shared=shared)
        self.blocks.append(replace(block, edges=block_edges(block, absw, None)))
        return dst

    # -- mixing -----------------------------------------------------------------------------
    def realize(self, sets: _Sets, kind: str, name: str | None = None,
                pre_ops: tuple | Mapping[int, tuple] = ()) -> torch.Tensor:
        """Labels for values depending on `sets`: nothing → 0, one unit → that unit, several → a unit of a
        new layer of `kind` joined to each of them."""
        out = np.zeros(len(sets.table), dtype=np.int64)
        multi = [i for i, members in enumerate(sets.table) if len(members) > 1]
        for i, members in enumerate(sets.table):
            if len(members) == 1:
                out[i] = members[0]
        if multi:
            dst = self.add_layer(name or _name(self.node), kind, len(multi))
            dst_units = np.concatenate([np.full(len(sets.table[i]), j) for j, i in enumerate(multi)])
            labels = np.concatenate([sets.table[i] for i in multi])
            self.link(dst, dst_units.astype(np.int64), labels, pre_ops=pre_ops)
            out[multi] = self.offsets[dst] + 1 + np.arange(len(multi))
        return torch.from_numpy(out)[sets.ids]

    def _pre_ops_by_layer(self, units: Sequence[Units], labels: Sequence[torch.Tensor]) -> dict[int, tuple]:
        pre: dict[int, tuple] = {}
        for u, t in zip(units, labels):
            lab = np.unique(t.numpy())
            for li in self.layer_of(lab[lab > 0]).tolist():
                pre.setdefault(li, u.pre_ops)
        return pre

    def _common_axis(self, labels: Sequence[torch.Tensor]) -> int | None:
        """The axis along which every tensor's labels vary alone (0s aside), if there is one."""
        best, best_n = None, 1
        shape = torch.broadcast_shapes(*(t.shape for t in labels))
        for axis in range(1, len(shape)):
            vecs = [self.vector(Units(t.expand(shape)), axis) for t in labels]
            if all(v is not None for v in vecs):
                n = max(len(np.unique(v)) for v in vecs)
                if n > best_n:
                    best, best_n = axis, n
        return best

    def combine(self, units: Sequence[Units], kind: str, shape: Sequence[int] | None = None) -> Units:
        """Elementwise: each value depends on the units the inputs hold at its position (a residual add,
        a product of activations). Equal labels stay as they are."""
        small, full = _compact(*(u.labels for u in units))
        full = tuple(shape) if shape is not None else full
        if all(torch.equal(small[0], t) for t in small[1:]):
            return Units(small[0].expand(full), units[0].pre_ops, units[0].name)
        pre = self._pre_ops_by_layer(units, small)
        axis = self._common_axis(small)
        if axis is not None:  # units × positions: join unit by unit (a constant position holds no unit)
            vecs = [self.vector(Units(t), axis) for t in small]
            sets = _Sets.of(torch.from_numpy(vecs[0]))
            for v in vecs[1:]:
                sets = sets.union(_Sets.of(torch.from_numpy(v)))
            view = [1] * len(full)
            view[axis] = -1
            both = torch.broadcast_tensors(*small)
            labels = self.realize(sets, kind, pre_ops=pre).view(view).expand(both[0].shape)
            constant = torch.stack([t == 0 for t in both]).all(0)
            if bool(constant.any()):
                labels = labels.masked_fill(constant, 0)
            return Units(labels.expand(full), (), _name(self.node))
        sets = _Sets.of(small[0].contiguous())
        for t in small[1:]:
            sets = sets.union(_Sets.of(t.contiguous()))
        return Units(self.realize(sets, kind, pre_ops=pre).expand(full), (), _name(self.node))


# -- tracing ------------------------------------------------------------------------------------

class _Tracer(torch.fx.Tracer):
    """Keeps modules with a registered handler opaque and remembers which module it was inside."""

    def __init__(self, is_handled: Callable[[nn.Module], bool]):
        super().__init__()
        self.stack: list[str] = []
        self.is_handled = is_handled

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if self.is_handled(m):
            return True
        return super().is_leaf_module(m, qualname) and not any(True for _ in m.children())

    def call_module(self, m, forward, args, kwargs):
        self.stack.append(self.path_of_module(m))
        out = super().call_module(m, forward, args, kwargs)
        self.stack.pop()
        return out


def _trace(model: nn.Module, is_handled, training: bool = True) -> torch.fx.GraphModule:
    """The model's fx graph, traced in training mode (the graph a ticket trains: auxiliary heads
    included) or, with training=False, in eval mode."""
    tracer = _Tracer(is_handled)
    was_training = model.training
    try:
        model.train(training)
        graph = tracer.trace(model)
    except Exception as e:
        where = f" inside module {tracer.stack[-1]!r} ({type(model.get_submodule(tracer.stack[-1])).__name__})" \
            if tracer.stack and tracer.stack[-1] else ""
        raise GraphError(
            f"torch.fx could not trace {type(model).__name__}{where}: {type(e).__name__}: {e}. "
            "pathnet reads models with torch.fx symbolic tracing: remove data-dependent control flow from "
            "forward() or wrap the offending function with torch.fx.wrap") from None
    finally:
        model.train(was_training)
    return torch.fx.GraphModule(tracer.root, graph)


def _where(node: torch.fx.Node | None, gm: torch.fx.GraphModule) -> str:
    """Human description of a node: its op and the module it belongs to."""
    if node is None:
        return "the model"
    if node.op == "call_module":
        return f"module {node.target!r} ({type(gm.get_submodule(node.target)).__name__})"
    target = getattr(node.target, "__name__", str(node.target))
    stack = node.meta.get("nn_module_stack") or {}
    owner = next(reversed(stack.values()), None) if stack else None
    inside = f" in module {owner[0]!r}" if owner and owner[0] else ""
    return f"op {target!r}{inside}"


def _name(node: torch.fx.Node | None) -> str:
    if node is None:
        return ""
    return str(node.target) if node.op == "call_module" else node.name


class _ShapeProp(torch.fx.Interpreter):
    """Records every tensor's shape (to decide how the input is laid out before following units)."""

    failed: torch.fx.Node | None = None

    def run_node(self, n):
        try:
            result = super().run_node(n)
        except Exception:
            self.failed = n
            raise
        if isinstance(result, torch.Tensor):
            n.meta["pathnet_shape"] = tuple(result.shape)
        return result


class _Interpreter(_ShapeProp):
    """Runs the graph on zeros and, beside every value, the handlers on the units they hold."""

    def __init__(self, gm, builder: DagBuilder, lookup, input_axis: int | None):
        super().__init__(gm)
        self.builder = builder
        self.lookup = lookup
        self.units: dict[torch.fx.Node, Any] = {}
        self.input_axis = input_axis

    def run_node(self, n):
        result = super().run_node(n)
        b = self.builder
        b.node = n
        if n.op == "placeholder":
            if b.layers:
                raise GraphError(f"the model's forward takes a second input {n.name!r}; pathnet follows one "
                                 "input tensor")
            self.units[n] = _input_units(b, result, n, self.input_axis)
        elif n.op == "output":
            found = [u for u in _flatten(_map(n.args, self._units_or_none)) if isinstance(u, Units)]
            b.outputs = _output_layers(b, found)
        elif n.op in ("call_module", "call_function", "call_method"):
            tracked = [a for a in n.all_input_nodes if self.units.get(a) is not None]
            handler = self.lookup(n, b)
            if not tracked:
                if getattr(handler, "on_constants", None) is not None:
                    handler.on_constants(b, n)
                return result
            if handler is None:
                raise GraphError(
                    f"{b.where(n)} is not an op pathnet knows how to follow (it cannot prove that it keeps, "
                    "moves or combines units); register a handler with pathnet.graph.register_op")
            args = _map(n.args, self._units_or_value)
            kwargs = _map(n.kwargs, self._units_or_value)
            out = handler(b, n, args, kwargs, result)
            if out is not None:
                self.units[n] = out
        return result

    def _units_or_none(self, node):
        return self.units.get(node)

    def _units_or_value(self, node):
        u = self.units.get(node)
        return u if u is not None else self.env[node]


def _map(value, fn):
    """`value` with every fx Node replaced by fn(node) (through tuples, lists, dicts, slices)."""
    if isinstance(value, torch.fx.Node):
        return fn(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_map(v, fn) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_map(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    if isinstance(value, slice):
        return slice(_map(value.start, fn), _map(value.stop, fn), _map(value.step, fn))
    return value


def _flatten(value) -> list:
    if isinstance(value, (tuple, list)):
        return [x for v in value for x in _flatten(v)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flatten(v)]
    return [value]


def _output_layers(b: DagBuilder, found: list[Units]) -> list[int]:
    """The layers the outputs hold (a gather layer where an output holds part of a layer)."""
    layers: list[int] = []
    for u in found:
        lab = u.labels.reshape(-1).numpy()
        live, first = np.unique(lab[lab > 0], return_index=True)
        live = live[np.argsort(first)]
        of = b.layer_of(live)
        for li in dict.fromkeys(of.tolist()):
            part = live[of == li]
            layers.append(li if len(part) == b.layers[li].size else b.gather(part, (), f"output.{li}")[0])
    if not layers:
        raise GraphError("the model's output does not depend on its input through any layer")
    return list(dict.fromkeys(layers))


def _input_units(b: DagBuilder, example: torch.Tensor, node: torch.fx.Node, axis: int | None) -> Units:
    """The input layer: its channels (axis 1), its features when the model flattens it first, or its
    last axis when the first weight op reading it is a Linear (token inputs (L, C))."""
    shape = tuple(example.shape)
    users = list(node.users)
    flattened = (len(shape) > 2 and len(users) == 1 and len(users[0].meta.get("pathnet_shape", ())) == 2
                 and math.prod(users[0].meta["pathnet_shape"][1:]) == math.prod(shape[1:]))
    if flattened or len(shape) <= 2:
        layer = b.add_layer("input", "input", math.prod(shape[1:]))
        ids = torch.arange(1, math.prod(shape[1:]) + 1, dtype=torch.int64)
        return Units(ids.reshape(shape), name="input")
    axis = 1 if axis is None else axis % len(shape)
    layer = b.add_layer("input", "input", shape[axis], [s for d, s in enumerate(shape[1:], 1) if d != axis])
    return Units(b.along(layer, shape, axis), name="input")


def _check_input_shape(input_shape: Any) -> tuple[int, ...]:
    if isinstance(input_shape, (str, bytes)):
        raise GraphError(f"input_shape must be a tuple of ints like (3, 32, 32), got {input_shape!r}")
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise GraphError(f"input_shape must be a tuple of ints like (3, 32, 32), got {input_shape!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise GraphError(f"input_shape must be positive sizes without the batch dimension, e.g. (3, 32, 32); "
                         f"got {input_shape!r}")
    return shape


def _first_weight_axis(gm: torch.fx.GraphModule, input_width, shape: tuple[int, ...]) -> int | None:
    """-1 when the first weight op of the graph is a Linear-like op reading the input's last axis (token
    inputs (L, C)): the input's units are then that axis."""
    for node in gm.graph.nodes:
        reads = input_width(node, gm)
        if reads is not None:
            last, width = reads
            return -1 if last and len(shape) > 1 and width == shape[-1] else None
    return None


_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _fingerprint(model: nn.Module) -> tuple:
    """What the DAG of `model` depends on: its modules, and every parameter's and buffer's shape, dtype,
    storage and version (in-place updates, optimizer steps and load_state_dict all bump the version)."""
    tensors = (*model.named_parameters(), *model.named_buffers())
    return (tuple(type(m).__name__ for m in model.modules()),
            tuple((n, tuple(t.shape), t.dtype, t.data_ptr(), t._version) for n, t in tensors))


def clear_cache() -> None:
    """Forget every cached DAG (they are also dropped with their model)."""
    _CACHE.clear()


def to_dag(model: nn.Module, input_shape: Iterable[int], mask: Mask | None = None) -> LayeredDAG:
    """Read `model` as a :class:`LayeredDAG` for inputs of `input_shape` (without the batch dim).

    `mask` defaults to the mask buffers the model carries (torch.nn.utils.prune, Synaptic-Flow,
    open_lth), or dense when it has none. The dense DAG is cached per model and input shape, so
    `prune`, `analyze` and `compare` with ``model=`` trace it once; any change to the model's
    weights, buffers or modules traces it again.
    """
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"to_dag expects a torch.nn.Module, got {type(model).__name__}")
    shape = _check_input_shape(input_shape)
    key = _fingerprint(model)
    per_model = _CACHE.setdefault(model, {})
    hit = per_model.get(shape)
    if hit is not None and hit[0] == key:
        dag = hit[1]
    else:
        dag = _build(model, shape)
        per_model[shape] = (key, dag)
    if mask is None:
        try:
            mask = Mask.from_model(model)
        except MaskError:
            return dag
        mask = Mask({k: v for k, v in mask.items() if k in dag.param_shapes}, mask.meta)
    return dag.with_mask(mask)


def _build(model: nn.Module, shape: tuple[int, ...]) -> LayeredDAG:
    """The dense DAG of `model` (no mask): trace, follow the units, check every weight is placed."""
    from . import ops

    gm = _trace(model, ops.is_handled_module)
    weights = prunable_weights(model)
    builder = DagBuilder(gm, weights)
    was_training = model.training
    interp = prop = None
    try:
        model.eval()
        gm.eval()
        params = next(model.parameters(), None)
        example = torch.zeros((1, *shape), dtype=params.dtype if params is not None else torch.float32,
                              device=params.device if params is not None else "cpu")
        stage = "running"
        with torch.no_grad():
            prop = _ShapeProp(gm)
            prop.run(example)
            stage = "following units through"
            interp = _Interpreter(gm, builder, ops.lookup, _first_weight_axis(gm, ops.input_width, shape))
            interp.run(example)
    except PathnetError as e:  # torch.fx appends the failing node to the message: keep one line
        raise type(e)(str(e).split("\n")[0]) from None
    except Exception as e:
        root = e.__cause__ or e
        failed = (interp or prop).failed if (interp or prop) is not None else None
        at = f" at {_where(failed, gm)}" if failed is not None else ""
        if stage == "running":
            raise GraphError(f"running {type(model).__name__} on an input of shape {shape} failed{at} "
                             f"({type(root).__name__}: {str(root).splitlines()[0] if str(root) else ''}); pass "
                             "input_shape as one example's shape without the batch dimension, e.g. (3, 32, 32) "
                             "for CIFAR or (784,) for a flat MLP") from None
        raise GraphError(f"pathnet could not follow the units of {type(model).__name__}{at}: "
                         f"{type(root).__name__}: {str(root).splitlines()[0] if str(root) else ''}") from None
    finally:
        model.train(was_training)
    if not any(b.prunable for b in builder.blocks):
        raise GraphError(f"{type(model).__name__} has no Linear/Conv layer between its input and output")
    placed = {b.param for b in builder.blocks if b.prunable}
    missing = [k for k in weights if k not in placed and k not in builder.constant_params]
    if missing:
        raise GraphError(
            f"{len(missing)} prunable weight(s) of {type(model).__name__} lie on no traced path from the input: "
            f"{', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}; pathnet must place every Linear/Conv "
            "weight (a module called outside forward, or a container it could not see into?)")
    constant = tuple(k for k in weights if k in builder.constant_params and k not in placed)
    builder.weight_shapes.update((k, tuple(weights[k].shape)) for k in constant)
    builder.flat_abs.flags.writeable = False
    return LayeredDAG(builder.layers, builder.blocks, builder.outputs, builder.abs_weights, builder.weight_shapes,
                      constant_params=constant, flat=(builder.flat_abs, builder.flat_offsets))
