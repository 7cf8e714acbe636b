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
from . import Method, budget, register
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


def _random_from_counts(model: nn.Module, counts: np.ndarray, seed: int, meta: dict) -> Mask:
    shapes = {k: tuple(w.shape) for k, w in prunable_weights(model).items()}
    return layer_counts_mask(dict(zip(shapes, counts)), shapes, seed, meta)


def _sizes(model: nn.Module) -> tuple[list[str], np.ndarray]:
    weights = prunable_weights(model)
    return list(weights), np.array([w.numel() for w in weights.values()], dtype=np.int64)


def uniform(model: nn.Module, density: float, *, seed: int = 0) -> Mask:
    """The same density in every layer, positions uniformly at random."""
    names, sizes = _sizes(model)
    counts = allocate(density * sizes, sizes, budget(int(sizes.sum()), density))
    return _random_from_counts(model, counts, seed, {"method": "random", "density": density, "seed": seed})


@register
class Random(Method):
    name, summary = "random", "the same density in every layer, positions at random"

    def find(self, model, density, *, data=None, input_shape=None, seed=0):
        return uniform(model, density, seed=seed)


def erk_densities(model: nn.Module, density: float) -> dict[str, float]:
    """ERK layer densities: ∝ (Σ of the weight's dims) / (Π of its dims), capped at 1."""
    weights = prunable_weights(model)
    sizes = np.array([w.numel() for w in weights.values()], dtype=np.int64)
    raw = np.array([sum(w.shape) / math.prod(w.shape) for w in weights.values()])
    fractional = _capped_scale(raw, sizes, density * sizes.sum())
    return dict(zip(weights, fractional / sizes))


def erk(model: nn.Module, density: float, *, seed: int = 0) -> Mask:
    """Erdős–Rényi-Kernel densities (Evci et al. 2020), positions at random."""
    names, sizes = _sizes(model)
    dens = erk_densities(model, density)
    counts = allocate(np.array([dens[k] for k in names]) * sizes, sizes, budget(int(sizes.sum()), density))
    return _random_from_counts(model, counts, seed, {"method": "erk", "density": density, "seed": seed})


@register
class ERK(Method):
    name, summary = "erk", "Erdős–Rényi-Kernel layer densities (∝ Σ dims / Π dims), positions at random"

    def find(self, model, density, *, data=None, input_shape=None, seed=0):
        return erk(model, density, seed=seed)


def smart_ratio_densities(model: nn.Module, density: float, *, linear_density: float = 0.3,
                          depth_scaling: bool = False) -> dict[str, float]:
    """Su et al. (2020): the classifier (last layer) keeps `linear_density`; body layer l of L
    (1-based, L counting the classifier) keeps ∝ (L−l+1)² + (L−l+1), divided by l² with
    `depth_scaling` (the authors' VGG variant). When the budget cannot give the classifier its
    share, it gets the global density."""
    weights = prunable_weights(model)
    sizes = np.array([w.numel() for w in weights.values()], dtype=np.int64)
    n = len(sizes)
    ranks = np.arange(1, n + 1)
    raw = ((n - ranks + 1) ** 2 + (n - ranks + 1)).astype(np.float64)
    if depth_scaling:
        raw /= ranks ** 2
    total = density * sizes.sum()
    head = min(linear_density, 1.0) * sizes[-1]
    if n == 1 or head >= total or total - head > sizes[:-1].sum():
        head = density * sizes[-1]
    fractional = np.append(_capped_scale(raw[:-1], sizes[:-1], total - head), head) if n > 1 else np.array([total])
    return dict(zip(weights, fractional / sizes))


def smart_ratio(model: nn.Module, density: float, *, seed: int = 0, linear_density: float = 0.3,
                depth_scaling: bool = False) -> Mask:
    """Smart-ratio random ticket (Su et al. 2020)."""
    names, sizes = _sizes(model)
    dens = smart_ratio_densities(model, density, linear_density=linear_density, depth_scaling=depth_scaling)
    counts = allocate(np.array([dens[k] for k in names]) * sizes, sizes, budget(int(sizes.sum()), density))
    meta = {"method": "smart_ratio", "density": density, "seed": seed, "linear_density": linear_density,
            "depth_scaling": depth_scaling}
    return _random_from_counts(model, counts, seed, meta)


@register
class SmartRatio(Method):
    name, summary = "smart_ratio", "Su et al.'s quadratically decaying layer densities, positions at random"
    options = Options(linear_density=Opt(float, 0.3, "density of the classifier (last layer)", above=0, max=1),
                      depth_scaling=Opt(bool, False, "divide layer l's share by l² (the authors' VGG variant)"))

    def find(self, model, density, *, data=None, input_shape=None, seed=0, linear_density=0.3, depth_scaling=False):
        return smart_ratio(model, density, seed=seed, linear_density=linear_density, depth_scaling=depth_scaling)


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
