"""The op handler table: what each traced op does to the units its tensors hold.

One function per op family, registered for the module types, functions and method names it
covers. A handler receives the builder, the fx node, the node's arguments (traced tensors as
:class:`Units`, everything else as its value) and the op's real output, and returns the output's
Units (a tuple of them for ops returning tuples; None for non-tensors). Register your own layer
the same way::

    from pathnet.graph import register_op, Units

    @register_op(MyGatedLinear)
    def my_gated_linear(b, node, args, kwargs, out):
        src, pre = b.source(args[0], -1, "a Linear")
        dst = b.weight(src, pre, f"{node.target}.weight", "linear", out.shape[-1])
        return Units(b.along(dst, out.shape, -1), name=str(node.target))

An op without a handler is refused with a GraphError naming it: pathnet never assumes that an op
keeps units. Modules with a handler are kept opaque by the tracer.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GraphError, UnsupportedLayerError
from .dag import ConvGeometry, SpatialOp
from .trace import DagBuilder, Units, _name, _Sets

__all__ = ["register_op", "lookup", "HANDLERS"]

Handler = Callable[..., Any]
HANDLERS: dict[Any, Handler] = {}


def register_op(*keys: Any) -> Callable[[Handler], Handler]:
    """Register a handler for module types, functions, or method names (strings, e.g. ``"view"``)."""
    def add(fn: Handler) -> Handler:
        for key in keys:
            HANDLERS[("method", key) if isinstance(key, str) else key] = fn
        return fn
    return add


def _module_handler(module: nn.Module) -> Handler | None:
    for cls in type(module).__mro__:
        if cls in HANDLERS:
            return HANDLERS[cls]
    return None


def is_handled_module(module: nn.Module) -> bool:
    return _module_handler(module) is not None


def lookup(node: torch.fx.Node, b: DagBuilder) -> Handler | None:
    """The handler of a call node (None: unknown). Modules with weights and no handler are refused."""
    if node.op == "call_module":
        module = b.gm.get_submodule(node.target)
        handler = _module_handler(module)
        if handler is None and any(True for _ in module.parameters(recurse=False)):
            return _refuse_weights
        return handler
    if node.op == "call_method":
        return HANDLERS.get(("method", node.target))
    if isinstance(node.target, type) and issubclass(node.target, tuple):
        return container
    try:
        return HANDLERS.get(node.target)
    except TypeError:  # unhashable target
        return None


def input_width(node: torch.fx.Node, gm) -> tuple[bool, int] | None:
    """For a weight op: (whether it reads its input's last axis, like a Linear, the width it reads);
    None for any other op."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, nn.Linear):
            return True, m.in_features
        if isinstance(m, nn.MultiheadAttention):
            return True, m.embed_dim
        if isinstance(m, nn.TransformerEncoderLayer):
            return True, m.self_attn.embed_dim
        if isinstance(m, nn.TransformerEncoder):
            return True, m.layers[0].self_attn.embed_dim
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return False, m.in_channels
    return None


def _refuse_weights(b: DagBuilder, node, args, kwargs, out):
    module = b.module(node)
    hint = ("pathnet reads a model from its input tensor: give it embedded inputs (batch, tokens, features) and "
            "start forward() after the embedding" if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) else
            "recurrent layers are not layered DAGs; pathnet does not read them" if isinstance(module, nn.RNNBase)
            else "supported weight layers are Linear, Conv1d/2d/3d and attention (plus per-unit normalisation); "
                 "replace it, or register a handler with pathnet.graph.register_op")
    raise UnsupportedLayerError(f"{b.where(node)} has weights pathnet cannot turn into edges; {hint}")


def _units(args) -> list[Units]:
    return [a for a in args if isinstance(a, Units)]


def _shape_of(out) -> tuple[int, ...]:
    return tuple(out.shape)


# -- elementwise: activations, normalisation, arithmetic, merges ----------------------------------

_MERGE_KINDS = {operator.add: "add", operator.iadd: "add", torch.add: "add", "add": "add", "add_": "add",
                operator.sub: "sub", operator.isub: "sub", torch.sub: "sub", "sub": "sub", "sub_": "sub",
                operator.mul: "mul", operator.imul: "mul", torch.mul: "mul", "mul": "mul", "mul_": "mul"}

_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Hardsigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Softplus, nn.Softsign, nn.Softshrink,
    nn.Hardshrink, nn.Tanhshrink, nn.LogSigmoid, nn.Threshold, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    # normalisation: statistics are constants, so a norm is a per-unit affine map (softmax's normaliser too)
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.Softmax, nn.LogSoftmax,
    nn.Softmin, nn.Softmax2d, *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))
_ELEMENTWISE_FUNCTIONS = (
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish,
    F.sigmoid, torch.sigmoid, F.hardsigmoid, F.tanh, torch.tanh, F.hardtanh, F.hardswish, F.softplus, F.softsign,
    F.logsigmoid, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, torch.exp, torch.neg,
    operator.neg, operator.pos, torch.abs, torch.sqrt, torch.rsqrt, torch.clamp, torch.clip, torch.square,
    operator.truediv, operator.itruediv, torch.div, torch.true_divide, operator.pow, torch.pow, torch.where,
    torch.maximum, torch.minimum, torch.erf,
    F.layer_norm, F.batch_norm, F.group_norm, F.instance_norm, F.normalize, F.softmax, F.log_softmax,
    torch.softmax, torch.log_softmax, *((F.rms_norm,) if hasattr(F, "rms_norm") else ()), *_MERGE_KINDS)
_ELEMENTWISE_METHODS = (
    "relu", "relu_", "sigmoid", "tanh", "exp", "neg", "abs", "sqrt", "rsqrt", "clamp", "clamp_", "clip", "pow",
    "square", "softmax", "log_softmax", "float", "double", "half", "bfloat16", "long", "int", "to", "type",
    "type_as", "div",
    "div_", "truediv", "masked_fill", "masked_fill_", "gelu", "erf", "detach", "clone", "add", "add_", "sub",
    "sub_", "mul", "mul_")


@register_op(*_ELEMENTWISE_MODULES, *_ELEMENTWISE_FUNCTIONS, *_ELEMENTWISE_METHODS)
def elementwise(b: DagBuilder, node, args, kwargs, out):
    """Each output value depends on the values at its own position: one traced input keeps its units
    (activations, norms, scaling by parameters such as layer scale); several make a merge layer
    (residual adds, gating products) unless they hold the same units."""
    if not isinstance(out, torch.Tensor):
        return None
    units = _units(list(args) + list(kwargs.values()))
    if len(units) == 1:
        u = units[0]
        try:
            return Units(u.labels.expand(out.shape), u.pre_ops, u.name)
        except RuntimeError:
            raise GraphError(f"{b.where(node)} turns shape {u.shape[1:]} into {tuple(out.shape[1:])}; an "
                             "elementwise op must keep the shape") from None
    kind = _MERGE_KINDS.get(node.target) or getattr(node.target, "__name__", str(node.target))
    return b.combine(units, kind, out.shape)


try:  # torchvision's stochastic depth: a per-example scalar (identity in eval mode)
    from torchvision.ops import stochastic_depth as _stochastic_depth

    register_op(_stochastic_depth)(elementwise)
except ImportError:  # pragma: no cover - torchvision is optional
    pass


@register_op("size", "dim", "numel", "nelement", "stride", "is_contiguous", "is_floating_point", "get_device",
             len, torch.numel)
def metadata(b: DagBuilder, node, args, kwargs, out):
    """x.size(), x.dim() …: numbers about a tensor, not values of its units."""
    if isinstance(out, torch.Tensor):
        raise GraphError(f"{b.where(node)} returned a tensor where pathnet expected tensor metadata")
    return None


def container(b: DagBuilder, node, args, kwargs, out):
    """A named tuple of outputs (GoogLeNet's and Inception's logits with their auxiliary heads)."""
    return tuple(args) + tuple(kwargs.values())


# -- ops that only move values: applied to the labels literally ----------------------------------

_INDEX_METHODS = ("view", "reshape", "permute", "transpose", "swapaxes", "flatten", "unflatten", "squeeze",
                  "unsqueeze", "expand", "expand_as", "repeat", "contiguous", "chunk", "split", "unbind", "roll",
                  "flip", "narrow", "select", "movedim", "t", "view_as", "reshape_as", "tile", "unfold")
_INDEX_FUNCTIONS = (torch.reshape, torch.permute, torch.transpose, torch.swapaxes, torch.flatten, torch.unflatten,
                    torch.squeeze, torch.unsqueeze, torch.chunk, torch.split, torch.unbind, torch.roll, torch.flip,
                    torch.narrow, torch.select, torch.movedim, torch.t, torch.tile, torch.stack, operator.getitem,
                    torch.channel_shuffle, torch.pixel_shuffle, torch.pixel_unshuffle, F.pixel_shuffle,
                    F.pixel_unshuffle, F.pad)
_INDEX_MODULES = (nn.Flatten, nn.Unflatten, nn.ChannelShuffle, nn.PixelShuffle, nn.PixelUnshuffle)
_RESHAPES = ("view", "reshape", "flatten", "Flatten", "squeeze", "unsqueeze", "view_as", "reshape_as")


def _literal_args(value):
    """Arguments with Units replaced by their labels (untraced tensors inside lists become label-0 tensors)."""
    if isinstance(value, Units):
        return value.labels
    if isinstance(value, (tuple, list)):
        return type(value)(_literal_args(v) for v in value)
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return torch.zeros(value.shape, dtype=torch.int64)
    return value


@register_op(*_INDEX_METHODS, *_INDEX_FUNCTIONS, *_INDEX_MODULES, getattr)
def index(b: DagBuilder, node, args, kwargs, out):
    """View/permute/slice/roll/chunk/pad/stack: the op is applied to the labels themselves, so the units
    follow wherever the values go (zero padding holds no unit)."""
    if node.target is operator.getitem and isinstance(args[0], (tuple, list)):
        return args[0][args[1]]  # an element of a chunk/split result
    if node.target is getattr and not isinstance(out, torch.Tensor):
        return None  # x.shape, x.dtype …
    if not isinstance(out, (torch.Tensor, tuple, list)):
        return None
    first = next(a for a in list(args) + list(kwargs.values()) if isinstance(a, Units) or
                 (isinstance(a, (tuple, list)) and any(isinstance(x, Units) for x in a)))
    first = first if isinstance(first, Units) else next(x for x in first if isinstance(x, Units))
    largs, lkwargs = _literal_args(args), {k: _literal_args(v) for k, v in kwargs.items()}
    if node.op == "call_module":
        labels = b.module(node)(*largs, **lkwargs)
    elif node.op == "call_method":
        method = {"view": "reshape", "view_as": "reshape_as"}.get(node.target, node.target)
        if method == "contiguous":
            labels = largs[0]
        else:
            labels = getattr(largs[0], method)(*largs[1:], **lkwargs)
    elif node.target is F.pad:
        mode = lkwargs.pop("mode", largs[2] if len(largs) > 2 else "constant")
        if mode != "constant":
            raise GraphError(f"{b.where(node)}: only constant (zero) padding is followed, not {mode!r}")
        labels = F.pad(largs[0], largs[1])  # label 0: padding holds no unit
    else:
        labels = node.target(*largs, **lkwargs)
    module = b.module(node)
    kind = type(module).__name__ if module is not None else (
        node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target)))
    if isinstance(labels, torch.Tensor):
        pre = first.pre_ops
        if tuple(labels.shape) != first.shape:
            pre = pre + (SpatialOp(kind if kind in _RESHAPES else f"index:{kind}", first.shape[1:],
                                   tuple(labels.shape[1:])),)
        return Units(labels, pre, _name(node))
    return tuple(Units(t, first.pre_ops, _name(node)) for t in labels)


@register_op(torch.cat, torch.concat, torch.concatenate)
def cat(b: DagBuilder, node, args, kwargs, out):
    """Concatenation along the units' axis stacks whole unit sets into a new "cat" layer; along a position
    axis (a class token before the patches) it is applied to the labels."""
    parts = args[0]
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0) % out.dim()
    vecs = [b.vector(p, dim) if isinstance(p, Units) else None for p in parts]
    if dim > 0 and all(v is not None and len(np.unique(v)) == len(v) and (v > 0).all() for v in vecs):
        dst = b.add_layer(_name(node), "cat", out.shape[dim], [s for d, s in enumerate(out.shape[1:], 1) if d != dim])
        offset = 0
        for p, v in zip(parts, vecs):
            b.link(dst, np.arange(offset, offset + len(v)), v, pre_ops=p.pre_ops)
            offset += len(v)
        return Units(b.along(dst, out.shape, dim), name=_name(node))
    return index(b, node, args, kwargs, out)


# -- positions: pooling, reductions ------------------------------------------------------------

_POOL_PARAMS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "output_size", "count_include_pad")


@register_op(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
             nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
             nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d, nn.Upsample,
             F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
             F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
             F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.interpolate, torch.max_pool2d, torch.avg_pool1d)
def pool(b: DagBuilder, node, args, kwargs, out):
    """Pooling and resampling mix positions within each channel: the units stay, the spatial extent
    changes (recorded for the spatial level)."""
    x = args[0]
    vec = b.vector(x, 1)
    if vec is None:
        raise GraphError(f"{b.where(node)} pools a tensor whose units vary along its spatial axes")
    module = b.module(node)
    out = out[0] if isinstance(out, tuple) else out
    params = ({p: _constant(getattr(module, p)) for p in _POOL_PARAMS if hasattr(module, p)} if module is not None
              else {"args": _constant(list(args[1:])), **{k: _constant(v) for k, v in kwargs.items()}})
    kind = type(module).__name__ if module is not None else getattr(node.target, "__name__", str(node.target))
    labels = torch.from_numpy(vec).view([1, -1] + [1] * (out.dim() - 2)).expand(out.shape)
    return Units(labels, x.pre_ops + (SpatialOp(kind, x.shape[1:], tuple(out.shape[1:]), params),), x.name)


def _constant(value: Any) -> Any:
    """A JSON-friendly copy of an op argument (tuples/ints/floats/bools), or its repr."""
    if isinstance(value, (int, float, bool, str)) or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return [_constant(v) for v in value]
    return repr(value)


@register_op("mean", "sum", "amax", "amin", "max", "min", "logsumexp", "std", "var", "norm", torch.mean, torch.sum,
             torch.amax, torch.amin, torch.max, torch.min, torch.logsumexp, torch.std, torch.var)
def reduce(b: DagBuilder, node, args, kwargs, out):
    """A reduction over positions keeps the units; over units, each output value depends on all the units
    it reduces (a new "reduce" layer)."""
    x = args[0]
    values = out[0] if isinstance(out, tuple) else out
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    if isinstance(dim, torch.Tensor) or (len(args) > 1 and isinstance(args[1], Units)):
        return elementwise(b, node, args, kwargs, out)  # torch.max(a, b): elementwise
    dims = list(range(x.labels.dim())) if dim is None else [d % x.labels.dim() for d in
                                                            ((dim,) if isinstance(dim, int) else dim)]
    keepdim = bool(kwargs.get("keepdim", args[2] if len(args) > 2 else False))
    lab = x.labels
    top = lab.amax(dim=dims, keepdim=True)
    if bool(((lab == top) | (lab == 0)).all()):
        labels = top if keepdim else top.squeeze(dims) if dims else top
        labels = labels.reshape(values.shape)
        pre = x.pre_ops + (SpatialOp(node.target if isinstance(node.target, str) else node.target.__name__,
                                     x.shape[1:], tuple(values.shape[1:])),)
        result = Units(labels, pre, x.name)
    else:
        sets = _Sets.rows(lab, dims)
        labels = b.realize(sets, "reduce").reshape(values.shape)
        result = Units(labels, (), _name(node))
    return (result, None) if isinstance(out, tuple) else result


# -- weights ----------------------------------------------------------------------------------

def _linear(b: DagBuilder, x: Units, param: str, out_features: int, out_shape, name: str) -> Units:
    """A Linear over the last axis: over the units (a layer of `out_features` units), or over a position
    axis (token mixing: each unit is joined to a unit of its own through the whole weight, shared)."""
    vec = b.vector(x, -1)
    lab = x.labels
    if vec is not None:
        src, pre = b.source(x, -1, "a Linear")
        dst = b.weight(src, pre, param, "linear", out_features, tuple(out_shape[1:-1]), name=name)
        labels = b.along(dst, out_shape, -1)
        if lab.dim() > 2:
            constant = (lab == 0).all(dim=-1, keepdim=True)
            if bool(constant.any()):
                labels = labels.masked_fill(constant.expand(out_shape), 0)
        return Units(labels, name=name)
    row = lab.amax(dim=-1, keepdim=True)
    if not bool(((lab == row) | (lab == 0)).all()):
        raise GraphError(f"{b.where()} applies a Linear over an axis of a tensor of shape {x.shape[1:]} whose units "
                         "vary along it and along other axes; pathnet reads Linear layers over units or over "
                         "positions")
    units = np.unique(row.numpy())
    units = units[units > 0]
    src, pre = b.gather(units, x.pre_ops, x.name)
    dst = b.weight(src, pre, param, "linear", len(units), shared=True, name=name)
    table = np.zeros(int(units.max()) + 1, dtype=np.int64)
    table[units] = b.offsets[dst] + 1 + np.arange(len(units))
    return Units(torch.from_numpy(table)[row].expand(out_shape), name=name)


def _module_param(node, attr: str = "weight") -> str:
    return f"{node.target}.{attr}" if node.target else attr


def _record_constant(*attrs: str):
    """on_constants hook: a weight op applied to input-independent tensors (e.g. Swin-v2's relative-position
    MLP) places no edges; its weights are recorded as constant."""
    def hook(b: DagBuilder, node):
        for attr in attrs:
            name = _module_param(node, attr)
            if name in b.weights:
                b.constant_params[name] = None
    return hook


@register_op(nn.Linear)
def linear(b: DagBuilder, node, args, kwargs, out):
    """nn.Linear on (…, features) tensors: a layer of out_features units (see `_linear`)."""
    return _linear(b, args[0], _module_param(node), b.module(node).out_features, _shape_of(out), _name(node))


linear.on_constants = _record_constant("weight")


@register_op(F.linear)
def functional_linear(b: DagBuilder, node, args, kwargs, out):
    """F.linear(x, w) where w is a prunable weight (an nn.Linear's, read through get_attr)."""
    weight = node.kwargs.get("weight", node.args[1] if len(node.args) > 1 else None)
    param = b.param_name(weight)
    return _linear(b, args[0], param, out.shape[-1], _shape_of(out), _name(node))


def _functional_constants(b: DagBuilder, node):
    weight = node.kwargs.get("weight", node.args[1] if len(node.args) > 1 else None)
    if isinstance(weight, torch.fx.Node) and weight.op == "get_attr" and str(weight.target) in b.weights:
        b.constant_params[str(weight.target)] = None


functional_linear.on_constants = _functional_constants


@register_op(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def conv(b: DagBuilder, node, args, kwargs, out):
    """A convolution: a layer of out_channels units; kernels are edges (positions share them)."""
    m, x = b.module(node), args[0]
    if x.labels.dim() != m.weight.dim():
        raise GraphError(f"{b.where(node)} receives a tensor of shape {x.shape[1:]}, not {m.weight.dim() - 2} "
                         "spatial dims as a conv needs")
    src, pre = b.source(x, 1, "a convolution")
    padding = tuple(m.padding) if not isinstance(m.padding, str) else _same_padding(m)
    geometry = ConvGeometry(tuple(x.shape[2:]), tuple(out.shape[2:]), tuple(m.kernel_size), tuple(m.stride),
                            padding, tuple(m.dilation), m.groups)
    dst = b.weight(src, pre, _module_param(node), "conv", m.out_channels, tuple(out.shape[2:]), groups=m.groups,
                   geometry=geometry)
    return Units(b.along(dst, out.shape, 1), name=_name(node))


conv.on_constants = _record_constant("weight")


def _same_padding(module) -> tuple[int, ...]:
    """Leading padding of a conv with padding='same'/'valid' (what the spatial level needs)."""
    if module.padding == "valid":
        return (0,) * len(module.kernel_size)
    return tuple(d * (k - 1) // 2 for d, k in zip(module.dilation, module.kernel_size))


# -- attention ----------------------------------------------------------------------------------

def _matmul_labels(b: DagBuilder, a: torch.Tensor, c: torch.Tensor, kind: str, name: str) -> torch.Tensor:
    """a @ c on labels: value (…, i, j) depends on row i of a and column j of c."""
    return b.realize(_Sets.rows(a, [-1]).union(_Sets.rows(c, [-2])), kind, name)


def _attention_labels(b: DagBuilder, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, name: str) -> torch.Tensor:
    """softmax(q kᵀ) v on labels (…, heads, positions, head_dim): per head a score unit joined to every Q
    and K unit of the head, then every output unit joined to its V unit and its head's score unit."""
    scores = _matmul_labels(b, q, k.transpose(-2, -1), "attention", f"{name}.scores")
    return _matmul_labels(b, scores, v, "attention", f"{name}.heads")


def attention(b: DagBuilder, q: Units, k: Units, v: Units, params: tuple[tuple[str, int], ...], proj: str,
              heads: int, embed: int, out_shape, name: str) -> Units:
    """Projections Q, K, V (each a weight and its first row), multi-head attention, output projection."""
    layers = []
    for x, (param, rows), part in zip((q, k, v), params, "qkv"):
        src, pre = b.source(x, -1, "an attention projection")
        layers.append(b.weight(src, pre, param, "linear", embed, rows=rows, name=f"{name}.{part}"))
    hd = embed // heads
    q_l, k_l, v_l = (b.along(li, (1, embed), -1).reshape(1, heads, 1, hd) for li in layers)
    heads_out = _attention_labels(b, q_l, k_l, v_l, name).reshape(-1).numpy()
    att, pre = b.gather(heads_out, (), f"{name}.heads")
    dst = b.weight(att, pre, proj, "linear", embed, name=f"{name}.out_proj")
    return Units(b.along(dst, out_shape, -1), name=f"{name}.out_proj")


def _mha(b: DagBuilder, m: nn.MultiheadAttention, path: str, q: Units, k: Units, v: Units, out_shape) -> Units:
    prefix = f"{path}." if path else ""
    e = m.embed_dim
    params = (((f"{prefix}in_proj_weight", 0), (f"{prefix}in_proj_weight", e), (f"{prefix}in_proj_weight", 2 * e))
              if m._qkv_same_embed_dim else
              tuple((f"{prefix}{p}_proj_weight", 0) for p in "qkv"))
    return attention(b, q, k, v, params, f"{prefix}out_proj.weight", m.num_heads, e, out_shape, path)


@register_op(nn.MultiheadAttention)
def multihead_attention(b: DagBuilder, node, args, kwargs, out):
    """nn.MultiheadAttention: in_proj_weight holds the Q, K and V blocks; out_proj is a Linear."""
    m = b.module(node)
    q = args[0]
    k = args[1] if len(args) > 1 else kwargs["key"]
    v = args[2] if len(args) > 2 else kwargs["value"]
    k, v = (k if isinstance(k, Units) else q), (v if isinstance(v, Units) else q)
    return _mha(b, m, str(node.target), q, k, v, tuple(out[0].shape)), None


multihead_attention.on_constants = _record_constant("in_proj_weight", "q_proj_weight", "k_proj_weight",
                                                    "v_proj_weight", "out_proj.weight")


def _encoder_layer(b: DagBuilder, m: nn.TransformerEncoderLayer, path: str, x: Units) -> Units:
    """x + SA(x) and x + FF(x), norms before (norm_first) or after: norms and activations keep units."""
    def sa(u):
        return _mha(b, m.self_attn, f"{path}.self_attn", u, u, u, u.shape)

    def ff(u):
        hidden = u.shape[:-1] + (m.linear1.out_features,)
        h = _linear(b, u, f"{path}.linear1.weight", m.linear1.out_features, hidden, f"{path}.linear1")
        return _linear(b, h, f"{path}.linear2.weight", m.linear2.out_features, u.shape, f"{path}.linear2")

    for part in (sa, ff):
        x = b.combine([x, part(x)], "add")
    return x


@register_op(nn.TransformerEncoderLayer)
def transformer_encoder_layer(b: DagBuilder, node, args, kwargs, out):
    return _encoder_layer(b, b.module(node), str(node.target), args[0])


@register_op(nn.TransformerEncoder)
def transformer_encoder(b: DagBuilder, node, args, kwargs, out):
    m, x = b.module(node), args[0]
    for i, layer in enumerate(m.layers):
        x = _encoder_layer(b, layer, f"{node.target}.layers.{i}", x)
    return x


@register_op(F.scaled_dot_product_attention)
def scaled_dot_product_attention(b: DagBuilder, node, args, kwargs, out):
    """F.scaled_dot_product_attention(q, k, v) on (…, heads, positions, head_dim) tensors."""
    q, k, v = (args[i] if len(args) > i else kwargs[n] for i, n in enumerate(("query", "key", "value")))
    if not all(isinstance(t, Units) for t in (q, k, v)):
        raise GraphError(f"{b.where(node)}: attention over a constant query, key or value is not followed")
    labels = _attention_labels(b, q.labels, k.labels, v.labels, _name(node))
    return Units(labels.expand(out.shape), name=_name(node))


@register_op(operator.matmul, torch.matmul, torch.bmm, "matmul", "bmm", "__matmul__")
def matmul(b: DagBuilder, node, args, kwargs, out):
    """a @ c: value (…, i, j) depends on row i of a and column j of c (a new "matmul" layer where that
    joins several units). Multiplying by a parameter that no Linear owns is refused."""
    _refuse_parameters(b, node)
    a, c = (x.labels if isinstance(x, Units) else torch.zeros(x.shape, dtype=torch.int64) for x in args[:2])
    if a.dim() < 2 or c.dim() < 2:
        raise GraphError(f"{b.where(node)}: matrix products of 1-d tensors are not followed")
    return Units(_matmul_labels(b, a, c, "matmul", _name(node)).expand(out.shape), name=_name(node))


@register_op(torch.einsum)
def einsum(b: DagBuilder, node, args, kwargs, out):
    """einsum: each output value depends on the operands' values at its free indices, across the summed
    ones (MaxViT's attention)."""
    _refuse_parameters(b, node)
    spec, operands = args[0].replace(" ", ""), list(args[1:])
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    if "..." in spec or "->" not in spec:
        raise GraphError(f"{b.where(node)}: einsum with '...' or without '->' is not followed; write the output "
                         "subscripts explicitly")
    ins, target = spec.split("->")
    sets = None
    for sub, x in zip(ins.split(","), operands):
        if not isinstance(x, Units):
            continue
        if len(set(sub)) != len(sub):
            raise GraphError(f"{b.where(node)}: einsum with a repeated index ({sub}) is not followed")
        summed = [i for i, ch in enumerate(sub) if ch not in target]
        s = _Sets.rows(x.labels, summed)
        ids = s.ids.squeeze(summed) if summed else s.ids
        free = [ch for ch in sub if ch in target]
        ids = ids.permute([free.index(ch) for ch in target if ch in free])
        shape = [ids.shape[[ch for ch in target if ch in free].index(ch)] if ch in free else 1 for ch in target]
        s = _Sets(ids.reshape(shape), s.table)
        sets = s if sets is None else sets.union(s)
    return Units(b.realize(sets, "einsum", _name(node)).expand(out.shape), name=_name(node))


def _refuse_parameters(b: DagBuilder, node) -> None:
    """Refuse a product with a parameter (or a view of one, e.g. ``w.t()``) that no Linear owns as its weight."""
    params = dict(b.gm.named_parameters())
    for n in node.all_input_nodes:
        while n.op in ("call_function", "call_method") and n.args and isinstance(n.args[0], torch.fx.Node):
            n = n.args[0]
        if n.op == "get_attr" and str(n.target) in params:
            raise UnsupportedLayerError(
                f"{b.where(node)} multiplies by parameter {n.target!r}; pathnet can only name weights owned by "
                "nn.Linear / nn.ConvNd modules (and attention in-projections) — use those modules")


try:  # torchvision's Swin attention is one fx-wrapped function taking the weights as arguments
    from torchvision.models import swin_transformer as _swin

    @register_op(_swin.shifted_window_attention)
    def shifted_window_attention(b: DagBuilder, node, args, kwargs, out):
        """Swin's window attention: qkv (one Linear weight, three row blocks), heads, proj. Windows and
        shifts only choose which positions meet; at the unit level it is multi-head attention."""
        x = args[0]
        c = x.shape[-1]
        qkv, proj = b.param_name(node.args[1]), b.param_name(node.args[2])
        heads = int(args[5] if len(args) > 5 else kwargs["num_heads"])
        name = qkv.rpartition(".qkv")[0] or _name(node)
        return attention(b, x, x, x, ((qkv, 0), (qkv, c), (qkv, 2 * c)), proj, heads, c, tuple(out.shape), name)

    def _swin_constants(b: DagBuilder, node):
        for arg in node.args[1:3]:
            if isinstance(arg, torch.fx.Node) and arg.op == "get_attr" and str(arg.target) in b.weights:
                b.constant_params[str(arg.target)] = None

    shifted_window_attention.on_constants = _swin_constants
    register_op(_swin._patch_merging_pad)(index)
except ImportError:  # pragma: no cover - torchvision is optional
    pass
