"""Exact top-k selection: from scores to a mask that keeps exactly the weights asked for.

Ties are broken by a seeded random order (never by "≤ threshold", which over- or under-prunes
when scores repeat), weights a current mask already pruned are never revived, and layerwise
budgets add up to the global one exactly. Also the iterative density schedules.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch

from ..errors import DensityError, WeightError, check_density
from . import budget
from ..mask import Mask


def allocate(targets: np.ndarray, sizes: np.ndarray, total: int) -> np.ndarray:
    """Integer counts ≤ sizes near the fractional `targets`, summing to exactly `total`.

    Floors first, then one more for the largest remainders (ties to the earlier layer).
    """
    targets = np.minimum(np.asarray(targets, dtype=np.float64), sizes)
    counts = np.minimum(np.floor(targets).astype(np.int64), sizes)
    short = total - int(counts.sum())
    if short < 0 or short > int((sizes - counts).sum()):
        raise DensityError(f"cannot place {total} weights in layers of sizes {sizes.tolist()}")
    order = np.lexsort((np.arange(len(sizes)), -(targets - counts)))
    while short > 0:  # usually one pass; more only when capped layers leave remainders elsewhere
        for i in order:
            if short == 0:
                break
            if counts[i] < sizes[i]:
                counts[i] += 1
                short -= 1
    return counts


def _top_k(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of exactly k largest values; ties at the cut drawn at random."""
    n = values.size
    if k >= n:
        return np.arange(n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    kth = np.partition(values, n - k)[n - k]
    above = np.flatnonzero(values > kth)
    tied = np.flatnonzero(values == kth)
    return np.concatenate([above, rng.permutation(tied)[: k - above.size]])


def keep_top(scores: Mapping[str, torch.Tensor], density: float, *, scope: str = "global",
             current: Mask | None = None, seed: int = 0, meta: dict | None = None) -> Mask:
    """Keep exactly round(density · N) weights with the highest scores.

    `scope="layerwise"` keeps the same fraction in every layer (counts allocated so they add up
    exactly). Weights `current` has pruned are never kept again (only the unpruned compete).
    """
    check_density(density)
    if scope not in ("global", "layerwise"):
        raise ValueError(f"scope must be 'global' or 'layerwise', got {scope!r}")
    names = list(scores)
    sizes = np.array([scores[k].numel() for k in names])
    n_keep = budget(int(sizes.sum()), density)
    alive, values = [], []  # per layer: the positions that may be kept and their scores
    for k in names:
        s = scores[k].detach().to("cpu", torch.float64).reshape(-1).numpy()
        idx = np.flatnonzero(current[k].reshape(-1).numpy()) if current is not None else np.arange(s.size)
        v = s[idx]
        if np.isnan(v).any():
            raise WeightError(f"scores for {k!r} contain NaN; check the model's weights and the data")
        alive.append(idx)
        values.append(v)
    room = np.array([len(i) for i in alive])
    if n_keep > room.sum():
        raise DensityError(f"density {density} keeps {n_keep:,} weights but only {int(room.sum()):,} remain unpruned")
    rng = np.random.default_rng(seed)
    if scope == "global":
        chosen = _top_k(np.concatenate(values), n_keep, rng)
        offsets = np.concatenate([[0], np.cumsum(room)])
        picks = [chosen[(chosen >= offsets[i]) & (chosen < offsets[i + 1])] - offsets[i] for i in range(len(names))]
    else:
        counts = allocate(np.minimum(density * sizes, room), room, n_keep)
        picks = [_top_k(v, int(c), rng) for v, c in zip(values, counts)]
    out = {}
    for k, idx, pick in zip(names, alive, picks):
        keep = np.zeros(scores[k].numel(), dtype=bool)
        keep[idx[pick]] = True
        out[k] = torch.from_numpy(keep.reshape(scores[k].shape))
    return Mask(out, meta)


def schedule(density: float, iterations: int, kind: str = "exponential") -> list[float]:
    """Densities of `iterations` pruning rounds ending at `density`: d^(k/n) (exponential, as SynFlow)
    or 1 − (1 − d)·k/n (linear)."""
    check_density(density)
    if iterations < 1:
        raise ValueError(f"iterations must be ≥ 1, got {iterations}")
    if kind == "exponential":
        return [density ** (k / iterations) for k in range(1, iterations + 1)]
    if kind == "linear":
        return [1 - (1 - density) * k / iterations for k in range(1, iterations + 1)]
    raise ValueError(f"schedule must be 'exponential' or 'linear', got {kind!r}")


def layer_counts_mask(counts: Mapping[str, int], shapes: Mapping[str, tuple], seed: int, meta: dict) -> Mask:
    """A mask with exactly `counts[name]` kept weights per layer at seeded random positions."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in shapes.items():
        n = math.prod(shape)
        flat = torch.zeros(n, dtype=torch.bool)
        flat[torch.randperm(n, generator=g)[: int(counts[k])]] = True
        out[k] = flat.reshape(shape)
    return Mask(out, meta)
