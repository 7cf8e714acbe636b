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

Excluded weights (``exclude=``) are marked kept before the first walk: walks cross them as any
kept weight (choosing by |w| as everywhere), but they are never new, so the budget counts only
the other weights.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import kernels
from ..errors import DensityError, GraphError
from ..flat import FlatNetwork
from ..graph import LayeredDAG, to_dag
from ..mask import Mask
from ..options import Opt, Options
from . import Method, register
from . import budget as weight_budget

#: walks found together per direction (their memory reads overlap); the ticket does not depend on it
LANES = 32


def phew_mask(dag: LayeredDAG, density: float, *, seed: int = 0, bias: str = "magnitude", kernel: str = "weight",
              patience: int = 2_000, progress: bool = False, exclude: tuple[str, ...] = (),
              shortcuts: str = "random") -> Mask:
    """PHEW on a DAG (see the module docstring). `dag.mask`, if any, limits which weights walks may keep;
    the weights `exclude` names are kept whole and outside the budget."""
    Phew.options.validate({"bias": bias, "kernel": kernel, "patience": patience, "progress": progress},
                          where="phew option ")
    net = FlatNetwork(dag)
    state = np.zeros(len(net.absw), dtype=np.uint8)
    n_excluded = 0
    for p in exclude:  # kept before any walk: walks cross them, never count them
        if p in net.param_offset:
            n = int(np.prod(dag.param_shapes[p]))
            state[net.param_offset[p]:net.param_offset[p] + n] = 1
            n_excluded += n
    # weights no path crosses (Swin-v2's position-bias MLP) stay dense, inside the budget
    constant = {k: torch.ones(s, dtype=torch.bool) for k, s in dag.constant_shapes.items()}
    n_constant = sum(m.numel() for k, m in constant.items() if k not in exclude)
    target = weight_budget(net.num_weights - n_excluded + n_constant, density) - n_constant
    if target < 1:
        raise DensityError(f"density {density} keeps fewer weights than the {n_constant:,} that no path crosses "
                           f"({', '.join(constant)}), which PHEW keeps dense; ask for more")
    if target > int((net.allowed & (state == 0)).sum()):
        raise DensityError(f"density {density} asks for {target:,} weights but the DAG's mask allows only "
                           f"{int((net.allowed & (state == 0)).sum()):,}")
    key = np.uint64((int(seed) * 0x9E3779B97F4A7C15 + 1) % 2**64)  # walk i draws from kernels.walk_stream(key, i)
    rng = np.array([key ^ np.uint64(0x5851F42D4C957F2D)], dtype=np.uint64)  # the bridges' draws
    seeds_in = np.arange(dag.layers[0].size, dtype=np.int64)
    out_layer = np.concatenate([np.full(dag.layers[i].size, i) for i in dag.output_layers]).astype(np.int64)
    out_unit = np.concatenate([np.arange(dag.layers[i].size) for i in dag.output_layers]).astype(np.int64)
    counter = np.zeros(1, dtype=np.int64)  # the next walk's number
    stats = np.zeros(2, dtype=np.int64)
    uniform, whole = bias == "uniform", kernel == "whole"
    kept, bridged, dangling, single = 0, 0, 0, 0
    avoid = identity_shortcuts(dag) if shortcuts == "never_identity" else np.zeros(len(dag.blocks), dtype=np.bool_)
    with tqdm(total=target, disable=not progress, delay=1.0, desc="PHEW walks", unit="w") as bar:
        chunk = max(1, target // 100) if progress else target
        # whole-kernel walks may be too big for the last few weights: single-entry walks finish
        for walk_whole in ((True, False) if whole else (False,)):
            before = kept
            while kept < target:
                stop_at = min(target, kept + chunk)
                now = kernels.phew_walks(net.forward, net.backward, net.absw, net.allowed, state, kept, target,
                                         stop_at, seeds_in, out_layer, out_unit, counter, uniform, walk_whole,
                                         patience, key, stats, net.max_path, avoid, LANES)
                bar.update(now - kept)
                stalled, kept = now < stop_at, now
                if stalled:
                    break
            if whole and not walk_whole:
                single = kept - before  # weights that single-entry walks added after whole ones stalled
        if kept < target:  # the last few weights: bridges between the two reachable sets
            fwd = np.zeros(net.lay_off[-1], dtype=np.bool_)
            fwd[: dag.layers[0].size] = True
            bwd = np.zeros(net.lay_off[-1], dtype=np.bool_)
            for i in dag.output_layers:
                bwd[net.lay_off[i]:net.lay_off[i + 1]] = True
            kept_idx = np.flatnonzero(state == 1)
            kernels.reach(net.forward, state, kept_idx, fwd, True)
            kernels.reach(net.backward, state, kept_idx, bwd, False)
            while kept < target:  # a shared weight (token mixing) is a candidate once per edge: draw again
                chosen = np.unique(kernels.bridges(net.forward, state, net.allowed, net.absw, fwd, bwd,
                                                   target - kept, uniform, rng))
                if not len(chosen):
                    break
                state[chosen] = 1
                bridged += len(chosen)
                kept += len(chosen)
                bar.update(len(chosen))
        if kept < target:
            free = np.flatnonzero((state == 0) & net.allowed)
            chosen = free[np.argsort(-net.absw[free], kind="stable")[: target - kept]]
            state[chosen] = 1
            dangling = len(chosen)
            kept += dangling
            warnings.warn(f"PHEW: no free weight could join the input→output paths; the last {dangling} weights "
                          "were added by magnitude and may lie off the paths", RuntimeWarning, stacklevel=3)
    meta = {"method": "phew", "density": float(density), "seed": int(seed), "bias": bias, "kernel": kernel,
            **({"shortcuts": shortcuts} if shortcuts != "random" else {}),
            "kept": int(kept), "walks": int(stats[0]), "set_aside": int(stats[1]), "bridged": bridged,
            "single_entry": single, "dangling": dangling}  # no timing: the same ticket gives the same file
    if constant:
        meta["dense_constant_params"] = list(constant)
        return Mask({**net.to_mask(state, meta), **constant}, meta)
    return net.to_mask(state, meta)


def identity_shortcuts(dag: LayeredDAG) -> np.ndarray:
    """Per block: is it an identity shortcut — weightless edges out of a layer that also feeds a weight
    layer (a residual stream forking into the block path and the skip)?"""
    feeds_weights = np.zeros(len(dag.layers), dtype=np.bool_)
    for b in dag.blocks:
        feeds_weights[b.src] |= b.prunable
    return np.array([not b.prunable and feeds_weights[b.src] for b in dag.blocks], dtype=np.bool_)


@register
class Phew(Method):
    """PHEW ticket of `model` (data-free; needs `input_shape` to trace the model)."""

    name, summary = "phew", "input→output paths of random walks biased to large weights (Patil & Dovrolis 2021)"
    needs_input_shape = True
    options = Options(
        bias=Opt(str, "magnitude", "next unit and weight ∝ |w| (magnitude) or uniformly (the unbiased ablation)",
                 choices=("magnitude", "uniform")),
        kernel=Opt(str, "weight", "per kernel crossed keep one entry (weight) or the whole kernel (whole)",
                   choices=("weight", "whole")),
        patience=Opt(int, 2_000, "walks in a row that add nothing before bridges finish the budget", min=1),
        progress=Opt(bool, False, "a progress bar of kept weights (stderr)"),
        shortcuts=Opt(str, "random", "at a residual fork take the identity shortcut or the block path at random "
                      "(random), or never the identity while a weighted way exists (never_identity: the authors' "
                      "walks)", choices=("random", "never_identity")))

    def find(self, model, density, *, data=None, input_shape=None, seed=0, exclude=(), **options):
        if input_shape is None:
            raise GraphError("phew walks the model's graph and needs input_shape, e.g. input_shape=(3, 32, 32)")
        return phew_mask(to_dag(model, input_shape), density, seed=seed, exclude=exclude, **options)
