"""Random tickets: which layers get how many weights, positions drawn at random (seeded).

`random` keeps the same density in every layer; `erk` follows the Erdős–Rényi-Kernel rule
(Evci et al. 2020: density ∝ Σ dims / Π dims, dense layers capped at 1); `smart_ratio` the
quadratically decaying keep ratios of Su et al. 2020 with the classifier at 30%. The shuffles are
Frankle et al.'s (2021) ablations: the same mask with positions permuted.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..mask import Mask, prunable_weights
from ..options import Opt, Options
from . import Method, budget, register, with_dense
from .threshold import allocate, layer_counts_mask


def _capped_scale(raw: np.ndarray, sizes: np.ndarray, total: int) -> np.ndarray:
    """Fractional counts ∝ raw·size summing to `total`, no layer above its size (full layers
    are taken out and the rest rescaled)."""
    dense = np.zeros(len(sizes), dtype=bool)
    while True:
        free = total - sizes[dense].sum()
        weight = (raw * sizes)[~dense].sum()
        scale = free / weight if weight > 0 else 0.0
        over = ~dense & (raw * scale > 1)
        if not over.any():
            return np.where(dense, sizes, raw * scale * sizes)
        dense |= over


def _weights(model: nn.Module, exclude=()) -> dict[str, torch.Tensor]:
    """The prunable weights of `model` that `exclude` (resolved names) does not name."""
    return {k: w for k, w in prunable_weights(model).items() if k not in set(exclude)}


def _random_from_counts(model: nn.Module, counts: np.ndarray, seed: int, meta: dict, exclude=()) -> Mask:
    shapes = {k: tuple(w.shape) for k, w in _weights(model, exclude).items()}
    mask = layer_counts_mask(dict(zip(shapes, counts)), shapes, seed, meta)
    return with_dense(mask, model, exclude) if exclude else mask


def _sizes(model: nn.Module, exclude=()) -> tuple[list[str], np.ndarray]:
    weights = _weights(model, exclude)
    return list(weights), np.array([w.numel() for w in weights.values()], dtype=np.int64)


def uniform(model: nn.Module, density: float, *, seed: int = 0, exclude=()) -> Mask:
    """The same density in every layer (but those in `exclude`, kept dense), positions uniformly at random."""
    names, sizes = _sizes(model, exclude)
    counts = allocate(density * sizes, sizes, budget(int(sizes.sum()), density))
    return _random_from_counts(model, counts, seed, {"method": "random", "density": density, "seed": seed}, exclude)


@register
class Random(Method):
    name, summary = "random", "the same density in every layer, positions at random"

    def find(self, model, density, *, data=None, input_shape=None, seed=0, exclude=()):
        return uniform(model, density, seed=seed, exclude=exclude)


def erk_densities(model: nn.Module, density: float, exclude=()) -> dict[str, float]:
    """ERK layer densities: ∝ (Σ of the weight's dims) / (Π of its dims), capped at 1 (of the weights
    `exclude` does not name)."""
    weights = _weights(model, exclude)
    sizes = np.array([w.numel() for w in weights.values()], dtype=np.int64)
    raw = np.array([sum(w.shape) / math.prod(w.shape) for w in weights.values()])
    fractional = _capped_scale(raw, sizes, density * sizes.sum())
    return dict(zip(weights, fractional / sizes))


def erk(model: nn.Module, density: float, *, seed: int = 0, exclude=()) -> Mask:
    """Erdős–Rényi-Kernel densities (Evci et al. 2020), positions at random."""
    names, sizes = _sizes(model, exclude)
    dens = erk_densities(model, density, exclude)
    counts = allocate(np.array([dens[k] for k in names]) * sizes, sizes, budget(int(sizes.sum()), density))
    return _random_from_counts(model, counts, seed, {"method": "erk", "density": density, "seed": seed}, exclude)


@register
class ERK(Method):
    name, summary = "erk", "Erdős–Rényi-Kernel layer densities (∝ Σ dims / Π dims), positions at random"

    def find(self, model, density, *, data=None, input_shape=None, seed=0, exclude=()):
        return erk(model, density, seed=seed, exclude=exclude)


def smart_ratio_densities(model: nn.Module, density: float, *, linear_density: float = 0.3,
                          depth_scaling: bool = False, exclude=()) -> dict[str, float]:
    """Su et al. (2020): the classifier (last layer) keeps `linear_density`; body layer l of L
    (1-based, L counting the classifier) keeps ∝ (L−l+1)² + (L−l+1), divided by l² with
    `depth_scaling` (the authors' VGG variant). When the budget cannot give the classifier its
    share, it gets the global density. Layers in `exclude` keep their depth l but take no share
    (an excluded classifier is dense: the body shares the whole budget)."""
    every = list(prunable_weights(model))
    weights = _weights(model, exclude)
    sizes = np.array([w.numel() for w in weights.values()], dtype=np.int64)
    n_all = len(every)
    ranks = np.array([every.index(k) + 1 for k in weights])
    raw = ((n_all - ranks + 1) ** 2 + (n_all - ranks + 1)).astype(np.float64)
    if depth_scaling:
        raw /= ranks ** 2
    total = density * sizes.sum()
    n = len(sizes)
    if every[-1] not in weights:  # the classifier is excluded: no head share
        return dict(zip(weights, _capped_scale(raw, sizes, total) / sizes))
    head = min(linear_density, 1.0) * sizes[-1]
    if n == 1 or head >= total or total - head > sizes[:-1].sum():
        head = density * sizes[-1]
    fractional = np.append(_capped_scale(raw[:-1], sizes[:-1], total - head), head) if n > 1 else np.array([total])
    return dict(zip(weights, fractional / sizes))


def smart_ratio(model: nn.Module, density: float, *, seed: int = 0, linear_density: float = 0.3,
                depth_scaling: bool = False, exclude=()) -> Mask:
    """Smart-ratio random ticket (Su et al. 2020)."""
    names, sizes = _sizes(model, exclude)
    dens = smart_ratio_densities(model, density, linear_density=linear_density, depth_scaling=depth_scaling,
                                 exclude=exclude)
    counts = allocate(np.array([dens[k] for k in names]) * sizes, sizes, budget(int(sizes.sum()), density))
    meta = {"method": "smart_ratio", "density": density, "seed": seed, "linear_density": linear_density,
            "depth_scaling": depth_scaling}
    return _random_from_counts(model, counts, seed, meta, exclude)


@register
class SmartRatio(Method):
    name, summary = "smart_ratio", "Su et al.'s quadratically decaying layer densities, positions at random"
    options = Options(linear_density=Opt(float, 0.3, "density of the classifier (last layer)", above=0, max=1),
                      depth_scaling=Opt(bool, False, "divide layer l's share by l² (the authors' VGG variant)"))

    def find(self, model, density, *, data=None, input_shape=None, seed=0, linear_density=0.3, depth_scaling=False,
             exclude=()):
        return smart_ratio(model, density, seed=seed, linear_density=linear_density, depth_scaling=depth_scaling,
                           exclude=exclude)


def shuffle_layerwise(mask: Mask, seed: int = 0) -> Mask:
    """The mask with each layer's kept positions permuted at random (per-layer counts kept)."""
    g = torch.Generator().manual_seed(seed)
    return Mask({k: m.reshape(-1)[torch.randperm(m.numel(), generator=g)].reshape(m.shape) for k, m in mask.items()},
                {**mask.meta, "shuffled": "layerwise", "shuffle_seed": seed})


def shuffle_global(mask: Mask, seed: int = 0) -> Mask:
    """The mask's kept positions permuted across the whole network (only the total count kept)."""
    g = torch.Generator().manual_seed(seed)
    flat = torch.cat([m.reshape(-1) for m in mask.values()])
    flat = flat[torch.randperm(flat.numel(), generator=g)]
    out, start = {}, 0
    for k, m in mask.items():
        out[k] = flat[start:start + m.numel()].reshape(m.shape)
        start += m.numel()
    return Mask(out, {**mask.meta, "shuffled": "global", "shuffle_seed": seed})
