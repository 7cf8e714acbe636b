"""`analyze`: the path structure of a ticket — path counts, effective density, widths, cuts.

Everything is computed on the unit graph of :func:`pathnet.to_dag` under the mask (channels as
nodes, kernel multiplicity on edges) unless ``level="spatial"``, where ``log10_paths`` counts the
paths of the fully unrolled graph (every spatial position a node; what an all-ones forward pass
of the masked network with pooling as sums computes), with per-layer rescaling so it never
overflows. Path counts are logs (base 10): they pass float64's range on deep networks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .errors import ArgumentTypeError, GraphError, OptionError
from .flat import FlatNetwork
from .graph import Block, LayeredDAG, chain_dag, to_dag
from .mask import Mask

__all__ = ["analyze", "Report", "LayerRow", "network_for", "log10_paths"]

_LN10 = math.log(10.0)
_RESHAPES = ("view", "reshape", "flatten", "squeeze", "unsqueeze", "view_as", "reshape_as")


@dataclass(frozen=True)
class LayerRow:
    """One layer of units. Widths count units; densities are of the layer's own weight (if any)."""

    index: int
    name: str
    kind: str
    units: int
    param: str | None
    weights: int
    kept: int
    effective_kept: int
    density: float | None
    effective_density: float | None
    width: int  # units with an incoming edge (PHEW's "width")
    effective_width: int  # units on some input→output path
    dead_in: int  # units with no incoming edge
    dead_out: int  # units with no outgoing edge (0 for output layers)
    isolated: int  # units with neither
    on_every_path: bool  # every input→output path crosses this layer (so it is a cut)
    spectral_gap: float | None = None
    ramanujan_delta: float | None = None


def network_for(mask: Mask, model: nn.Module | None = None, input_shape: Sequence[int] | None = None,
                dag: LayeredDAG | None = None) -> LayeredDAG:
    """The masked DAG a metric needs: from `dag`, from `model` + `input_shape`, or, for a plain chain
    of Linear masks, from the masks alone."""
    if dag is not None:
        return dag.with_mask(mask)
    if model is not None:
        if input_shape is None:
            raise GraphError("path and unit measures trace the model: pass input_shape too, e.g. (3, 32, 32)")
        return to_dag(model, input_shape, mask=mask)
    return chain_dag(mask)


class Report:
    """The structure of one ticket. Cheap fields are computed at once; cuts on demand.

    ``bottleneck_width`` is the smallest effective width among the hidden layers that every
    input→output path crosses (in a chain, every hidden layer; in a ResNet, the merges and the
    stem), so ``min_vertex_cut <= bottleneck_width`` always; 0 under layer collapse.
    """

    def __init__(self, dag: LayeredDAG, level: str = "unit", spectral: bool = False):
        self.dag = dag
        self.level = level
        self.mask = dag.full_mask()
        flat = FlatNetwork(dag, walks=False)
        n_units = int(flat.lay_off[-1])
        start = np.full(n_units, -np.inf)
        start[: dag.layers[0].size] = 0.0
        self._log_fwd = kernels.log_path_counts(flat.forward, start, True)  # natural logs
        end = np.full(n_units, -np.inf)
        for i in dag.output_layers:
            end[flat.lay_off[i]:flat.lay_off[i + 1]] = 0.0
        self._log_bwd = kernels.log_path_counts(flat.backward, end, False)
        self._lay_off = flat.lay_off
        outputs = np.concatenate([self._log_fwd[flat.lay_off[i]:flat.lay_off[i + 1]] for i in dag.output_layers])
        self._log_total = _logsumexp(outputs)  # unit level, natural log
        self.log10_paths = float(self._log_total / _LN10 if level == "unit" else _spatial_log10_paths(dag))
        self.num_weights = self.mask.num_total
        self.num_kept = self.mask.num_kept
        self.effective_mask = self._effective_mask()
        self.num_effective = self.effective_mask.num_kept
        self.ineffective_params = self.num_kept - self.num_effective
        self.density = self.num_kept / self.num_weights
        self.effective_density = self.num_effective / self.num_weights
        self.layers = self._rows(spectral)
        cuts = [r for r in self.layers if r.on_every_path and r.index not in dag.output_layers]
        narrowest = min(cuts or self.layers, key=lambda r: r.effective_width)
        self.bottleneck_width = narrowest.effective_width
        self.bottleneck_layer = narrowest.name
        self.layer_collapse = not np.isfinite(self.log10_paths)

    # -- per unit / per weight ----------------------------------------------------------------
    def _on_path(self) -> np.ndarray:
        return np.isfinite(self._log_fwd) & np.isfinite(self._log_bwd)

    def _layer(self, values: np.ndarray, i: int) -> np.ndarray:
        return values[self._lay_off[i]:self._lay_off[i + 1]]

    def unit_reach(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per layer: (reached from the input, reaches an output) for every unit."""
        return [(np.isfinite(self._layer(self._log_fwd, i)), np.isfinite(self._layer(self._log_bwd, i)))
                for i in range(len(self.dag.layers))]

    def unit_path_counts(self) -> list[np.ndarray]:
        """Per layer: log10 of the number of input→output paths through each unit (-inf: none)."""
        both = (self._log_fwd + self._log_bwd) / _LN10
        return [self._layer(both, layer.index) for layer in self.dag.layers]

    def edge_path_counts(self) -> dict[str, torch.Tensor]:
        """Per weight: log10 of the number of input→output paths through it (-inf where pruned or off-path).

        Each kept entry of a kernel is its own parallel edge, so the paths through a layer that
        every path crosses sum (10**x) to the total.
        """
        out = {p: np.full(s, -np.inf) for p, s in self.dag.param_shapes.items()}
        for b in self.dag.blocks:
            if b.prunable:
                part = b.entries(out[b.param])
                through = _per_entry(b, self.mask[b.param].numpy(), self._layer(self._log_fwd, b.src) / _LN10,
                                     self._layer(self._log_bwd, b.dst) / _LN10, np.add, -np.inf)
                np.maximum(part, through, out=part)
        return {p: torch.from_numpy(v) for p, v in out.items()}

    def _effective_mask(self) -> Mask:
        on = self._on_path()
        eff = {p: np.zeros(s, dtype=bool) for p, s in self.dag.param_shapes.items()}
        for b in self.dag.blocks:
            if b.prunable:
                part = b.entries(eff[b.param])
                part |= _per_entry(b, self.mask[b.param].numpy(), self._layer(on, b.src), self._layer(on, b.dst),
                                   np.logical_and, False)
        return Mask(eff, {"source": "effective_mask"})

    def _rows(self, spectral: bool) -> list[LayerRow]:
        dag, on = self.dag, self._on_path()
        through, total = self._log_fwd + self._log_bwd, self._log_total
        rows = []
        for layer in dag.layers[1:]:
            has_in = np.zeros(layer.size, dtype=bool)
            for i in dag.in_blocks[layer.index]:
                has_in |= dag.blocks[i].has_in()
            has_out = np.zeros(layer.size, dtype=bool)
            for i in dag.out_blocks[layer.index]:
                has_out |= dag.blocks[i].has_out()
            if not dag.out_blocks[layer.index]:
                has_out[:] = True  # an output layer: nothing leaves it by design
            block = next((dag.blocks[i] for i in dag.in_blocks[layer.index] if dag.blocks[i].prunable), None)
            param = block.param if block is not None else None
            m = block.entries(self.mask[param].numpy()) if param else None
            weights = m.size if param else 0
            kept = int(np.count_nonzero(m)) if param else 0
            eff = int(np.count_nonzero(block.entries(self.effective_mask[param].numpy()))) if param else 0
            gap = delta = None
            if spectral and param:
                gap, delta = _spectral(block)
            rows.append(LayerRow(layer.index, layer.name, layer.kind, layer.size, param, weights, kept, eff,
                                 kept / weights if param else None, eff / weights if param else None,
                                 int(has_in.sum()), int(self._layer(on, layer.index).sum()), int((~has_in).sum()),
                                 int((~has_out).sum()), int((~has_in & ~has_out).sum()),
                                 bool(np.isfinite(total) and np.isclose(_logsumexp(self._layer(through, layer.index)),
                                                                        total, rtol=0, atol=1e-9)), gap, delta))
        return rows

    # -- cuts ---------------------------------------------------------------------------------
    @cached_property
    def min_vertex_cut(self) -> int | None:
        """Fewest hidden units whose removal leaves no input→output path (None if an input unit
        feeds an output unit directly, so no hidden cut exists)."""
        return _max_flow(self.dag, vertex=True)

    @cached_property
    def min_edge_cut(self) -> int:
        """Fewest kept weights whose removal leaves no input→output path (shortcuts cannot be cut)."""
        return _max_flow(self.dag, vertex=False)

    # -- output -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (non-finite numbers as None); computes the cuts."""
        return _finite({
            "level": self.level, "log10_paths": self.log10_paths, "density": self.density,
            "effective_density": self.effective_density, "num_weights": self.num_weights, "num_kept": self.num_kept,
            "num_effective": self.num_effective, "ineffective_params": self.ineffective_params,
            "bottleneck_width": self.bottleneck_width, "bottleneck_layer": self.bottleneck_layer,
            "layer_collapse": self.layer_collapse, "min_vertex_cut": self.min_vertex_cut,
            "min_edge_cut": self.min_edge_cut, "layers": [asdict(r) for r in self.layers]})

    def to_frame(self):
        """The per-layer rows as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame([asdict(r) for r in self.layers])

    def __str__(self) -> str:
        head = ("layer", "kind", "units", "density", "eff. dens.", "width", "eff. width", "dead in", "dead out")
        fmt = lambda x: "-" if x is None else f"{x:.4f}"  # noqa: E731
        rows = [head] + [(r.name, r.kind, str(r.units), fmt(r.density), fmt(r.effective_density), str(r.width),
                          str(r.effective_width), str(r.dead_in), str(r.dead_out)) for r in self.layers]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                 for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append(f"log10 paths ({self.level}) {self.log10_paths:.3f} · density {self.density:.4f} · effective "
                     f"{self.effective_density:.4f} ({self.ineffective_params:,} weights off every path) · "
                     f"bottleneck {self.bottleneck_width} units at {self.bottleneck_layer}"
                     + (" · LAYER COLLAPSE" if self.layer_collapse else ""))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Report(log10_paths={self.log10_paths:.3f}, density={self.density:.4f}, "
                f"effective_density={self.effective_density:.4f}, bottleneck_width={self.bottleneck_width})")


def log10_paths(dag: LayeredDAG) -> float:
    """log10 of the number of input→output paths of a (masked) DAG at the unit level: the forward
    half of :class:`Report`, for when only the count is needed."""
    flat = FlatNetwork(dag, walks=False)
    start = np.full(int(flat.lay_off[-1]), -np.inf)
    start[: dag.layers[0].size] = 0.0
    logs = kernels.log_path_counts(flat.forward, start, True)
    return _logsumexp(np.concatenate([logs[flat.lay_off[i]:flat.lay_off[i + 1]] for i in dag.output_layers])) / _LN10


def analyze(mask: Mask, model: nn.Module | None = None, input_shape: Sequence[int] | None = None, *,
            level: str = "unit", spectral: bool = False, dag: LayeredDAG | None = None) -> Report:
    """The path structure of `mask` on `model` (or `dag`; a chain of Linear masks needs neither)."""
    if level not in ("unit", "spatial"):
        raise OptionError(f"level must be 'unit' (channels as nodes) or 'spatial' (fully unrolled), got {level!r}")
    if not isinstance(mask, Mask):
        raise ArgumentTypeError(f"analyze expects a pathnet.Mask, got {type(mask).__name__}")
    return Report(network_for(mask, model, input_shape, dag), level, spectral)


# ---------------------------------------------------------------------------------------------

def _logsumexp(x: np.ndarray) -> float:
    m = np.max(x) if x.size else -np.inf
    return float(m) if not np.isfinite(m) else float(m + np.log(np.sum(np.exp(x - m))))


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _per_entry(block: Block, keep: np.ndarray, at_src: np.ndarray, at_dst: np.ndarray, op, fill) -> np.ndarray:
    """op(value at the edge's source, value at its destination) spread over the kept entries of the edge's
    kernel (`fill` elsewhere), shaped like ``block.entries``. A shared block's weight is on every edge: the
    paths through it sum over them (log space), "on a path" is any of them."""
    kept = block.entries(keep)
    if block.dense:
        grid = op(at_dst[:, None], at_src[None, :])
        return np.where(kept, grid[..., None], fill)
    src, dst = block.sources(), block.indices
    per_edge = op(at_src[src], at_dst[dst])
    if block.shared:
        top = bool(per_edge.any()) if per_edge.dtype == bool else _logsumexp(per_edge * _LN10) / _LN10
        return np.where(kept, top, fill)
    grid = np.full(kept.shape[:2], fill, dtype=per_edge.dtype)
    grid[dst, block.columns(src, dst)] = per_edge
    return np.where(kept, grid[..., None], fill)


def _spectral(block: Block) -> tuple[float, float]:
    """Spectral gap σ1 − σ2 of the layer's bipartite unit graph and Hoang et al.'s (ICLR 2023)
    Ramanujan gap Δr = 2√(d_avg − 1) − σ2 (the bipartite adjacency has eigenvalues ±σ of the
    biadjacency matrix; d_avg is the average degree of its units)."""
    import scipy.sparse.linalg as sla

    a = block.matrix("ones")
    if block.num_edges == 0:
        return 0.0, float("nan")
    if min(a.shape) <= 3:
        s = np.linalg.svd(a.toarray(), compute_uv=False)
    else:
        s = np.sort(sla.svds(a.astype(np.float64), k=2, return_singular_vectors=False, random_state=0))[::-1]
    s1, s2 = float(s[0]), float(s[1]) if len(s) > 1 else 0.0
    d_avg = 2.0 * block.num_edges / (block.n_src + block.n_dst)
    return s1 - s2, (2.0 * math.sqrt(d_avg - 1.0) - s2) if d_avg >= 1 else float("nan")


def _max_flow(dag: LayeredDAG, vertex: bool) -> int | None:
    """Min input→output cut on the unit graph by max-flow (scipy.sparse.csgraph)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import maximum_flow

    lay_off = np.concatenate([[0], np.cumsum([layer.size for layer in dag.layers])])
    n = int(lay_off[-1])
    total_weights = sum(int(b.multiplicity.sum()) for b in dag.blocks if b.prunable)
    inf = (n if vertex else total_weights) + 1
    if inf >= 2 ** 31:
        raise OverflowError("network too large for an int32 max-flow")
    # vertex cut: unit u splits into u_in = u and u_out = n + u joined by capacity 1
    head = (lambda u: n + u) if vertex else (lambda u: u)
    rows, cols, caps = [], [], []
    for b in dag.blocks:
        rows.append(head(lay_off[b.src] + b.sources()))
        cols.append(lay_off[b.dst] + b.indices)
        caps.append(np.full(b.num_edges, inf) if vertex or not b.prunable else b.multiplicity)
    nodes = 2 * n if vertex else n
    source, sink = nodes, nodes + 1
    inputs = np.arange(dag.layers[0].size)
    outputs = np.concatenate([np.arange(lay_off[i], lay_off[i + 1]) for i in dag.output_layers])
    rows += [np.full(len(inputs), source), head(outputs)]
    cols += [inputs, np.full(len(outputs), sink)]
    caps += [np.full(len(inputs), inf), np.full(len(outputs), inf)]
    if vertex:  # hidden units cost 1; input and output units cannot be cut
        unit_cap = np.ones(n, dtype=np.int64)
        unit_cap[inputs] = inf
        unit_cap[outputs] = inf
        rows.append(np.arange(n))
        cols.append(n + np.arange(n))
        caps.append(unit_cap)
    graph = sp.csr_matrix((np.concatenate(caps).astype(np.int32), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(nodes + 2, nodes + 2))
    flow = int(maximum_flow(graph, source, sink).flow_value)
    return None if vertex and flow >= inf else flow


# -- the spatial level --------------------------------------------------------------------------

def _unroll(x: torch.Tensor, op) -> torch.Tensor:
    """A weightless op as the unrolled graph sees it: pooling windows are edges (so: sums), reshapes keep
    the positions."""
    p = op.params
    dims = x.dim() - 1
    kind = op.kind.lower()
    if "adaptive" in kind:
        size = p.get("output_size", p.get("args", [None])[0] if p.get("args") else None)
        size = [size] * dims if isinstance(size, int) else list(size)
        spatial = x.shape[1:]
        size = [s if t is None else t for s, t in zip(spatial, size)]
        if any(s % t for s, t in zip(spatial, size)):
            raise GraphError(f"spatial level: adaptive pooling {tuple(spatial)} → {tuple(size)} has uneven windows")
        k = [s // t for s, t in zip(spatial, size)]
        p = {"kernel_size": k, "stride": k, "padding": 0}
    elif "pool" not in kind and kind != "mean":
        if kind in _RESHAPES and math.prod(op.in_shape) == math.prod(op.out_shape):  # flatten of 1×1 maps
            return x.reshape(op.out_shape)
        raise GraphError(f"spatial level: pathnet cannot unroll {op.kind} ({op.in_shape} → {op.out_shape}); "
                         "use level='unit'")
    if kind == "mean":
        return x.sum(dim=tuple(range(1, x.dim())), keepdim=False).reshape(op.out_shape)
    if "args" in p:  # functional pooling: F.max_pool2d(x, kernel_size, stride, padding, ...)
        args = p["args"] + [None] * 3
        p = {"kernel_size": args[0], "stride": p.get("stride", args[1]), "padding": p.get("padding", args[2] or 0),
             "ceil_mode": p.get("ceil_mode", False)}
    if p.get("dilation", 1) not in (1, [1] * dims, (1,) * dims):
        raise GraphError("spatial level: dilated pooling is not supported; use level='unit'")
    k = p["kernel_size"]
    stride = p.get("stride") or k
    ones = torch.ones((1, 1, *([k] * dims if isinstance(k, int) else k)), dtype=x.dtype)
    conv = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
    pad = p.get("padding", 0)
    out = conv(x.unsqueeze(1), ones, stride=stride, padding=pad).squeeze(1)
    if tuple(out.shape) != tuple(op.out_shape):  # ceil_mode: one more window at the end
        if not p.get("ceil_mode"):
            raise GraphError(f"spatial level: could not reproduce {op.kind} {op.in_shape} → {op.out_shape}")
        extra = [o - s for o, s in zip(op.out_shape[1:], out.shape[1:])]
        x = F.pad(x, [v for e in reversed(extra) for v in (0, e * (stride if isinstance(stride, int) else 1))])
        out = conv(x.unsqueeze(1), ones, stride=stride, padding=pad).squeeze(1)[(slice(None),) + tuple(
            slice(0, s) for s in op.out_shape[1:])]
    return out


def _spatial_log10_paths(dag: LayeredDAG) -> float:
    """log10 of the paths of the fully unrolled graph, layer by layer with rescaling."""
    unrollable = ("input", "conv", "linear", "add", "sub", "mul", "cat", "flatten")
    odd = next((layer for layer in dag.layers if layer.kind not in unrollable), None) or next(
        (dag.layers[b.dst] for b in dag.blocks if b.shared or b.row_offset), None)
    if odd is not None:
        raise GraphError(f"spatial level: pathnet cannot unroll layer {odd.name!r} ({odd.kind}); spatial paths are "
                         "defined for convolutional and fully connected nets — use level='unit'")
    mask = dag.full_mask()
    values: list[torch.Tensor | None] = [None] * len(dag.layers)
    scales = [0.0] * len(dag.layers)  # value = tensor · e^scale
    values[0] = torch.ones(dag.layers[0].shape, dtype=torch.float64)
    for layer in dag.layers[1:]:
        parts = []
        for i in dag.in_blocks[layer.index]:
            b = dag.blocks[i]
            x = values[b.src]
            for op in b.pre_ops:
                x = _unroll(x, op)
            w = mask[b.param].to(torch.float64) if b.prunable else None
            if b.kind == "conv":
                g = b.geometry
                conv = (F.conv1d, F.conv2d, F.conv3d)[len(g.kernel_size) - 1]
                x = conv(x.unsqueeze(0), w, stride=g.stride, padding=g.padding, dilation=g.dilation,
                         groups=g.groups).squeeze(0)
            elif b.kind == "linear":
                x = w @ x.reshape(-1)
            elif b.kind == "expand":
                x = x.reshape(-1)
            else:  # identity edges into a merge or concatenation (x + x: multiplicity 2)
                x = x * int(b.multiplicity[0]) if b.num_edges else x
            parts.append((x, scales[b.src]))
        top = max(s for _, s in parts)
        scaled = [x * math.exp(s - top) for x, s in parts]
        x = torch.cat(scaled, dim=0) if layer.kind == "cat" else sum(scaled)
        peak = float(x.max()) if x.numel() else 0.0
        if peak > 0:
            x = x / peak
            top += math.log(peak)
        values[layer.index], scales[layer.index] = x, top
    total = [math.log(float(values[i].sum())) + scales[i] if float(values[i].sum()) > 0 else -math.inf
             for i in dag.output_layers]
    return _logsumexp(np.array(total)) / _LN10
