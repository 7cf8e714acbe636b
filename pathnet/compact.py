"""`compact`: a ticket without the units no input→output path uses, as a smaller dense network.

Every tensor of the traced model belongs to a *channel space*: ops that keep channels (norms,
activations, pooling, dropout, residual adds, gating products) put their inputs and output in one
space, so a residual stream keeps the union of what any of its layers needs. A Conv/Linear reads
one space and writes a new one; ``cat`` along channels and ``flatten`` make composite spaces. A
space keeps the units that lie on some input→output path (``analyze``'s effective units) in any
of its layers; the model's input and output spaces keep everything, grouped (not depthwise)
convolutions keep their spaces whole, depthwise ones tie input and output.

A dropped unit that still reaches an output carries a constant (it is not reached from the input
but has a bias). Its contribution to each layer that reads it is computed on the masked model and
folded into that layer's bias when it is the same for every example and position (Linear layers,
convolutions without zero padding at the borders it touches); otherwise the unit is kept. So the
compacted model computes the masked model's function to float tolerance.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .errors import ArgumentTypeError, GraphError
from .graph import to_dag
from .graph.ops import _ELEMENTWISE_FUNCTIONS, _ELEMENTWISE_METHODS, _ELEMENTWISE_MODULES, is_handled_module
from .graph.trace import _trace
from .mask import Mask
from .metrics import Report

__all__ = ["compact", "CompactReport"]

_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
          nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_POOL_FUNCTIONS = (F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
                   F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool2d)
_WEIGHTS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class LayerCompaction:
    """One weight layer: units (output channels or features) before and after, and its FLOPs."""

    name: str
    units_before: int
    units_after: int
    inputs_before: int
    inputs_after: int
    flops_before: int
    flops_after: int


@dataclass(frozen=True)
class CompactReport:
    """What compaction removed: parameters and multiply-adds per example before and after."""

    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    units_folded: int  # constant units whose contribution went into the next layers' biases
    units_kept_constant: int  # constant units that could not be folded (zero padding): kept
    layers: tuple[LayerCompaction, ...]

    @property
    def param_ratio(self) -> float:
        return self.params_after / self.params_before

    @property
    def flop_ratio(self) -> float:
        return self.flops_after / self.flops_before

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "layers"}, "param_ratio": self.param_ratio,
                "flop_ratio": self.flop_ratio, "layers": [asdict(r) for r in self.layers]}


# -- channel spaces -------------------------------------------------------------------------------

class _Space:
    """A set of channels shared by several tensors; `keep` is decided once for the whole space."""

    def __init__(self, size: int):
        self.size = size
        self.parent: _Space = self
        self.keep_all = False
        self.live = np.zeros(size, dtype=bool)
        self.reaches = np.zeros(size, dtype=bool)  # reaches an output (so a dropped one carries a constant)

    def root(self) -> "_Space":
        while self.parent is not self:
            self = self.parent
        return self

    def indices(self) -> np.ndarray:
        """The kept channels (at least one: a branch with no path keeps one unit, which changes nothing)."""
        r = self.root()
        if r.keep_all:
            return np.arange(r.size)
        kept = np.flatnonzero(r.live)
        return kept if len(kept) else np.zeros(1, dtype=np.int64)


class _Composite:
    """The channels of a concatenation (parts in order) or of a flatten (each channel × `spatial`)."""

    def __init__(self, parts: Sequence[Any], spatial: int = 1):
        self.parts, self.spatial = list(parts), spatial
        self.size = sum(p.size for p in self.parts) * spatial

    def indices(self) -> np.ndarray:
        out, offset = [], 0
        for p in self.parts:
            out.append(p.indices() + offset)
            offset += p.size
        channels = np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
        return (channels[:, None] * self.spatial + np.arange(self.spatial)[None, :]).reshape(-1)


def _keep_all(space) -> None:
    if isinstance(space, _Composite):
        for p in space.parts:
            _keep_all(p)
    else:
        space.root().keep_all = True


def _tie(a, b):
    if isinstance(a, _Composite) or isinstance(b, _Composite):
        if a is b:
            return
        raise GraphError("compact: an elementwise op joins a concatenated or flattened tensor with another one; "
                         "pathnet cannot keep their channels consistent")
    ra, rb = a.root(), b.root()
    if ra is rb:
        return
    if ra.size != rb.size:
        raise GraphError(f"compact: an elementwise op joins {ra.size} and {rb.size} channels")
    rb.parent = ra
    ra.keep_all |= rb.keep_all
    ra.live |= rb.live
    ra.reaches |= rb.reaches


def _spaces(gm: torch.fx.GraphModule) -> tuple[dict, dict]:
    """The channel space of every traced tensor, and (input space, output space) of every weight module."""
    space: dict[torch.fx.Node, Any] = {}
    weights: dict[str, tuple[Any, Any]] = {}
    keep_elementwise = set(_ELEMENTWISE_FUNCTIONS) - {torch.where}
    for node in gm.graph.nodes:
        ins = [a for a in node.all_input_nodes if a in space]
        shape = node.meta.get("pathnet_shape")
        if node.op == "placeholder":
            space[node] = _Space(shape[1])
            space[node].keep_all = True
            continue
        if node.op == "output":
            for a in ins:
                _keep_all(space[a])  # the outputs keep every unit
            continue
        if not ins:
            continue
        module = gm.get_submodule(node.target) if node.op == "call_module" else None
        target = node.target
        where = f"module {node.target!r} ({type(module).__name__})" if module is not None else f"op {node.name!r}"
        if isinstance(module, _WEIGHTS):
            out = _Space(shape[1])
            if isinstance(module, nn.Linear) and len(shape) != 2:
                raise GraphError(f"compact: {where} is applied to a {len(shape) - 1}-d tensor; compaction handles "
                                 "Linear layers on flat (batch, features) inputs")
            src = space[ins[0]]
            groups = getattr(module, "groups", 1)
            if groups > 1:
                if groups == module.in_channels == module.out_channels:
                    _tie(src, out)  # depthwise: channel c → channel c
                else:
                    src.root().keep_all = out.keep_all = True
            weights[str(node.target)] = (src, out)
            space[node] = out
        elif (isinstance(module, _ELEMENTWISE_MODULES + _POOLS) or target in keep_elementwise
              or target in _POOL_FUNCTIONS or (node.op == "call_method" and target in _ELEMENTWISE_METHODS + (
                  "mean", "sum", "amax", "max")) or target in (torch.mean, torch.sum)
              or getattr(target, "__name__", "") == "stochastic_depth"):
            if node.op == "call_method" and target in ("mean", "sum", "amax", "max") or target in (torch.mean,
                                                                                                    torch.sum):
                dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
                dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
                if not dims or any(d % len(ins[0].meta["pathnet_shape"]) < 2 for d in dims):
                    raise GraphError(f"compact: {where} reduces over channels; compaction keeps channels apart")
            for a in ins[1:]:
                _tie(space[ins[0]], space[a])
            space[node] = space[ins[0]]
        elif target in (torch.cat, torch.concat):
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            if dim % len(shape) != 1 or any(p not in space for p in node.args[0]):
                raise GraphError(f"compact: {where} concatenates along dim {dim}; compaction follows torch.cat "
                                 "along channels only")
            space[node] = _Composite([space[p] for p in node.args[0]])
        elif _is_flatten(node, module, shape, ins[0]):
            inner = ins[0].meta["pathnet_shape"]
            space[node] = _Composite([space[ins[0]]], math.prod(inner[2:]))
        elif target is getattr or (node.op == "call_method" and target in ("size", "dim")):
            continue
        elif isinstance(target, type) and issubclass(target, tuple):  # a named tuple of outputs (GoogLeNet's)
            for a in ins:
                _keep_all(space[a])
        else:
            raise GraphError(f"compact: {where} is not an op compaction can rewrite; it handles MLPs and "
                             "channel-first conv nets (VGG, ResNet, DenseNet, MobileNet, EfficientNet)")
    return space, weights


def _is_flatten(node, module, shape, src) -> bool:
    inner = src.meta.get("pathnet_shape")
    flat = isinstance(module, nn.Flatten) or node.target in (torch.flatten, "flatten", "view", "reshape")
    return flat and inner is not None and len(shape) == 2 and math.prod(inner[1:]) == shape[1] and len(inner) > 2


# -- compaction -----------------------------------------------------------------------------------

def compact(model: nn.Module, mask: Mask, input_shape: Sequence[int], *, examples: int = 2,
            seed: int = 0) -> tuple[nn.Module, Mask, CompactReport]:
    """The ticket (`model` under `mask`) as a smaller dense network with the same function.

    Returns the new model (a torch.fx GraphModule built from a copy of `model`, with every Linear,
    Conv and BatchNorm resized), the mask of what stays sparse inside the kept units (train it
    further with ``pn.train``), and a :class:`CompactReport`. `examples` random inputs (of `seed`)
    decide which constant units fold into biases.
    """
    if not isinstance(mask, Mask):
        raise ArgumentTypeError(f"compact expects a pathnet.Mask, got {type(mask).__name__}")
    full = mask.complete(model)
    dag = to_dag(model, input_shape, mask=full)
    report = Report(dag)
    if report.layer_collapse:
        raise GraphError("compact: the ticket has no input→output path (layer collapse), so no unit would be kept; "
                         "choose a higher density or a method that keeps paths")
    masked = copy.deepcopy(model).eval()
    full.apply(masked)
    gm = _trace(masked, is_handled_module, training=False)  # the function it computes at inference
    _shapes(gm, masked, input_shape)
    space, weights = _spaces(gm)
    nodes = {}  # a DAG layer is named after its module (call_module) or its node
    for n in reversed(gm.graph.nodes):  # the first node of a name wins, as in graph order
        nodes[n.name] = n
        nodes[str(n.target)] = n
    for layer, (fwd, bwd) in zip(dag.layers, report.unit_reach()):
        node = nodes.get(layer.name)
        s = space.get(node) if node is not None else None
        if s is None or isinstance(s, _Composite) or s.size != layer.size:
            continue
        r = s.root()
        r.live |= fwd & bwd
        r.reaches |= bwd
    constants = sum(int(_dropped_constants(s).sum()) for s in _distinct(space))
    folds = _fold_constants(gm, masked, weights, input_shape, examples, seed)
    kept_constant = constants - sum(int(_dropped_constants(s).sum()) for s in _distinct(space))
    compacted, new_mask, out = _rebuild(gm, space, weights, full, folds, constants - kept_constant, kept_constant)
    if hasattr(model, "pathnet_name"):
        compacted.pathnet_name = model.pathnet_name  # the same training recipe
    return compacted, new_mask, out


def _distinct(space: dict) -> list[_Space]:
    """Every space root once."""
    return list({id(s.root()): s.root() for s in space.values() if isinstance(s, _Space)}.values())


def _shapes(gm, model, input_shape) -> None:
    from .graph.trace import _ShapeProp

    params = next(model.parameters())
    with torch.no_grad():
        _ShapeProp(gm).run(torch.zeros((1, *input_shape), dtype=params.dtype, device=params.device))


def _fold_constants(gm, masked, weights, input_shape, examples, seed) -> dict[str, torch.Tensor]:
    """Bias corrections per weight module for the dropped constant channels it reads; channels that
    cannot be folded are kept instead (their space's `live` is set)."""
    inputs: dict[str, torch.Tensor] = {}
    modules = dict(gm.named_modules())
    hooks = [modules[name].register_forward_pre_hook(
        lambda m, args, name=name: inputs.__setitem__(name, args[0].detach().clone())) for name in weights]
    params = next(masked.parameters())
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((examples, *input_shape), generator=g).to(params.device, params.dtype)
    with torch.no_grad():
        gm(x)
    for h in hooks:
        h.remove()
    while True:  # a channel one reader cannot fold is kept, for every reader: fold again until stable
        folds: dict[str, torch.Tensor] = {}
        unfoldable = []
        for name, (src, _) in weights.items():
            constant = _dropped_constants(src)
            if not constant.any():
                continue
            module, x_in = modules[name], inputs[name]
            idx = torch.from_numpy(np.flatnonzero(constant)).to(x_in.device)
            part = torch.zeros_like(x_in).index_copy_(1, idx, x_in.index_select(1, idx))
            with torch.no_grad():
                delta = (F.linear(part, module.weight) if isinstance(module, nn.Linear) else
                         module._conv_forward(part, module.weight, None))
            flat = delta.reshape(delta.shape[0], delta.shape[1], -1)
            ref = flat[:1, :, :1]
            if torch.allclose(flat, ref.expand_as(flat), rtol=1e-5, atol=1e-6):
                folds[name] = ref.reshape(-1)
            else:
                unfoldable.append((src, np.flatnonzero(constant)))
        if not unfoldable:
            return folds
        for src, channels in unfoldable:
            _keep_channels(src, channels)


def _dropped_constants(space) -> np.ndarray:
    """Channels of a space that are dropped but reach an output: they carry a constant."""
    keep = np.zeros(space.size, dtype=bool)
    keep[space.indices()] = True
    return ~keep & _reaches(space)


def _reaches(space) -> np.ndarray:
    if isinstance(space, _Composite):
        out = [_reaches(p) for p in space.parts]
        channels = np.concatenate(out)
        return np.repeat(channels, space.spatial)
    r = space.root()
    return np.ones(r.size, dtype=bool) if r.keep_all else r.reaches.copy()


def _keep_channels(space, flat: np.ndarray) -> None:
    if isinstance(space, _Composite):
        offset = 0
        for p in space.parts:
            mine = flat // space.spatial - offset
            _keep_channels(p, np.unique(mine[(mine >= 0) & (mine < p.size)]))
            offset += p.size
        return
    space.root().live[flat] = True


def _flops(module: nn.Module, out_shape) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return int(module.weight[0].numel() * module.out_channels * math.prod(out_shape[2:]))


def _resized(module: nn.Module, n_in: int, n_out: int, weight: torch.Tensor, bias: torch.Tensor | None):
    """A new Linear/Conv like `module` with `n_in` inputs, `n_out` outputs and the given parameters."""
    if isinstance(module, nn.Linear):
        new = nn.Linear(n_in, n_out, bias=bias is not None)
    else:
        groups = n_in if module.groups > 1 and module.groups == module.in_channels else module.groups
        new = type(module)(n_in, n_out, module.kernel_size, module.stride, module.padding, module.dilation, groups,
                           bias is not None, module.padding_mode)
    new = new.to(weight.device, weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new.train(module.training)


def _resized_norm(module: nn.modules.batchnorm._BatchNorm, idx: torch.Tensor) -> nn.Module:
    """A BatchNorm over the channels `idx` of `module`, with their statistics and affine parameters."""
    new = copy.deepcopy(module)
    idx = idx.to(next(iter(module.buffers()), torch.zeros(0)).device)
    new.num_features = len(idx)
    for attr in ("weight", "bias"):
        p = getattr(module, attr)
        if p is not None:
            setattr(new, attr, nn.Parameter(p.detach().index_select(0, idx).clone()))
    for attr in ("running_mean", "running_var"):
        b = getattr(module, attr)
        if b is not None:
            setattr(new, attr, b.index_select(0, idx).clone())
    return new


def _set(gm: torch.fx.GraphModule, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, leaf, module)


def _rebuild(gm, space, weights, full: Mask, folds, folded: int, kept_constant: int):
    modules = dict(gm.named_modules())
    new_mask, rows = {}, []
    before = sum(p.numel() for p in gm.parameters())
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        name, module = str(node.target), modules[str(node.target)]
        if name in weights:
            src, out = weights[name]
            dev = module.weight.device
            i_in, i_out = (torch.from_numpy(s.indices()).to(dev) for s in (src, out))
            if not len(i_out) or not len(i_in):
                raise GraphError(f"compact: layer {name!r} keeps no unit; the ticket has no path through it")
            whole = getattr(module, "groups", 1) > 1  # grouped: channels within each group stay as they are
            w = module.weight.detach().index_select(0, i_out)
            keep = full[f"{name}.weight"].to(dev).index_select(0, i_out)
            if not whole:
                w, keep = w.index_select(1, i_in), keep.index_select(1, i_in)
            bias = module.bias.detach().index_select(0, i_out) if module.bias is not None else None
            if name in folds:
                extra = folds[name].to(w.dtype).index_select(0, i_out)
                bias = extra if bias is None else bias + extra
            new = _resized(module, len(i_in), len(i_out), w, bias)
            _set(gm, name, new)
            shape = node.meta["pathnet_shape"]
            rows.append(LayerCompaction(name, module.weight.shape[0], len(i_out),
                                        module.weight.shape[1] * getattr(module, "groups", 1), len(i_in),
                                        _flops(module, shape), _flops(new, (shape[0], len(i_out), *shape[2:]))))
            new_mask[f"{name}.weight"] = keep.cpu()
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            _set(gm, name, _resized_norm(module, torch.from_numpy(space[node].indices())))
    compacted = torch.fx.GraphModule(gm, gm.graph, class_name=f"Compact{type(gm).__name__}")
    layers = tuple(rows)
    report = CompactReport(before, sum(p.numel() for p in compacted.parameters()),
                           sum(r.flops_before for r in layers), sum(r.flops_after for r in layers), folded,
                           kept_constant, layers)
    return compacted, Mask(new_mask, {**dict(full.meta), "compacted": True}), report
