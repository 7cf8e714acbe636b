"""Exact top-k selection: from scores to a mask that keeps exactly the weights asked for.

Ties are broken by a seeded random order (never by "≤ threshold", which over- or under-prunes
when scores repeat), weights a current mask already pruned are never revived, and layerwise
budgets add up to the global one exactly. Selection runs where the scores are (iterative SynFlow
or SNIP on a GPU never copies scores to the host); only the tie order is drawn on the host, from
the seed, so a mask is the same on every device. Also the iterative density schedules.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch

from .. import kernels
from ..errors import DensityError, OptionError, WeightError, check_density, check_int
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


# The few array operations selection needs, on torch tensors where they live. On the CPU they run as
# numpy on zero-copy views: for these, numpy is 3-8x faster than torch's CPU kernels (VGG-16's 14.7M
# scores, one thread); elsewhere (CUDA) they are torch's, on the device.

def _np(t: torch.Tensor) -> np.ndarray | None:
    return t.numpy() if t.device.type == "cpu" else None


def _flatnonzero(flags: torch.Tensor) -> torch.Tensor:
    """Positions of the True entries of a 1-d bool tensor."""
    a = _np(flags)
    return torch.from_numpy(np.flatnonzero(a)) if a is not None else flags.nonzero().squeeze(1)


def _count(flags: torch.Tensor) -> int:
    a = _np(flags)
    return int(np.count_nonzero(a)) if a is not None else int(flags.sum())


def _take(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """values[idx]."""
    a = _np(values)
    return torch.from_numpy(a[idx.numpy()]) if a is not None else values[idx]


def _put(target: torch.Tensor, idx: torch.Tensor, value: torch.Tensor | bool) -> torch.Tensor:
    """target[idx] = value, in place; returns target."""
    a = _np(target)
    if a is not None:
        a[idx.numpy()] = value.numpy() if isinstance(value, torch.Tensor) else value
    else:
        target[idx] = value
    return target


def _cat(values: list[torch.Tensor]) -> torch.Tensor:
    """One flat tensor (dtypes promoted as torch.cat does: float32 with float64 gives float64, exactly)."""
    if values[0].device.type == "cpu":
        return torch.from_numpy(np.concatenate([_np(v) for v in values]))
    return torch.cat(values)


def _has_nan(values: list[torch.Tensor]) -> list[bool]:
    if values[0].device.type == "cpu":
        return [bool(np.isnan(_np(v)).any()) for v in values]
    return torch.stack([v.isnan().any() for v in values]).tolist()  # one synchronisation


def _kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest of a 1-d tensor (1 ≤ k ≤ n) as a 0-d tensor on its device, by selection, not sorting."""
    n = values.numel()
    a = _np(values)
    if a is not None:
        return torch.as_tensor(np.partition(a, n - k)[n - k])
    if k <= n - k + 1:
        return torch.topk(values, k, sorted=False).values.min()
    return torch.topk(values, n - k + 1, largest=False, sorted=False).values.max()


def _top_k(values: torch.Tensor, k: int, rng: np.random.Generator) -> torch.Tensor:
    """Keep-flags for exactly the k largest values; ties at the cut drawn at random by `rng`.

    Runs where `values` live; only the tie order (a permutation of the tied count) is drawn on
    the host, so a seed picks the same weights on every device.
    """
    n = values.numel()
    if k >= n or k <= 0:
        return torch.full((n,), k > 0, dtype=torch.bool, device=values.device)
    kth = _kth_largest(values, k)
    keep = values > kth
    tied = _flatnonzero(values == kth)
    order = torch.from_numpy(rng.permutation(tied.numel())[: k - _count(keep)]).to(values.device)
    return _put(keep, _take(tied, order), True)


def _comparable(s: torch.Tensor) -> torch.Tensor:
    """Scores as a flat float32/float64 tensor: other dtypes become float64 (exact for all of them up to 2^53)."""
    s = s.detach().reshape(-1)
    return s if s.dtype in (torch.float32, torch.float64) else s.to(torch.float64)


def keep_count(num_weights: int, density: float, count: str = "round") -> int:
    """Weights a selection of `density` keeps of `num_weights`: round(d·N) ("round", pathnet's exact budget) or
    N − int((1 − d)·N) ("floor_pruned": Synaptic-Flow prunes int((1 − d)·N), so it keeps up to one more)."""
    if count == "round":
        return budget(num_weights, density)
    if count != "floor_pruned":
        raise OptionError(f"count={count!r} is not allowed: count takes one of 'round', 'floor_pruned'")
    n = num_weights - int((1.0 - check_density(density)) * num_weights)
    if n < 1:
        raise DensityError(f"density {density!r} keeps no weight of {num_weights:,} under count='floor_pruned'")
    return n


def keep_top(scores: Mapping[str, torch.Tensor], density: float, *, scope: str = "global",
             current: Mask | None = None, seed: int = 0, meta: dict | None = None, count: str = "round") -> Mask:
    """Keep exactly round(density · N) weights with the highest scores (`count="floor_pruned"`:
    N − int((1 − density) · N), see :func:`keep_count`).

    `scope="layerwise"` keeps the same fraction in every layer (counts allocated so they add up
    exactly). Weights `current` has pruned are never kept again (only the unpruned compete).
    Selection runs on the scores' device (that of the first entry); the mask returned is on the
    CPU and, for the same scores and seed, the same on every device.
    """
    check_density(density)
    if scope not in ("global", "layerwise"):
        raise OptionError(f"scope={scope!r} is not allowed: scope takes one of 'global', 'layerwise'")
    names = list(scores)
    device = scores[names[0]].device
    sizes = np.array([scores[k].numel() for k in names])
    n_keep = keep_count(int(sizes.sum()), density, count)
    alive, values = [], []  # per layer: the positions that may be kept (None: all) and their scores
    for k in names:
        s = _comparable(scores[k].to(device))
        idx = _flatnonzero(current[k].reshape(-1).to(device)) if current is not None else None
        alive.append(idx)
        values.append(s if idx is None else _take(s, idx))
    nan = _has_nan(values)
    if any(nan):
        raise WeightError(f"scores for {names[nan.index(True)]!r} contain NaN; check the model's weights and the data")
    room = np.array([v.numel() for v in values])
    if n_keep > room.sum():
        raise DensityError(f"density {density} keeps {n_keep:,} weights but only {int(room.sum()):,} remain unpruned")
    rng = np.random.default_rng(seed)
    if scope == "global":
        keeps = _top_k(_cat(values), n_keep, rng).split(room.tolist())
    else:
        counts = allocate(np.minimum(density * sizes, room), room, n_keep)
        keeps = [_top_k(v, int(c), rng) for v, c in zip(values, counts)]
    out = {}
    for k, idx, keep in zip(names, alive, keeps):
        if idx is not None:
            keep = _put(torch.zeros(scores[k].numel(), dtype=torch.bool, device=device), idx, keep)
        out[k] = keep.reshape(scores[k].shape)
    return Mask(out, meta)


def schedule(density: float, iterations: int, kind: str = "exponential") -> list[float]:
    """Densities of `iterations` pruning rounds ending at `density`: d^(k/n) (exponential, as SynFlow)
    or 1 − (1 − d)·k/n (linear)."""
    check_density(density)
    check_int("iterations", iterations, min=1, error=OptionError)
    if kind == "exponential":
        return [density ** (k / iterations) for k in range(1, iterations + 1)]
    if kind == "linear":
        return [1 - (1 - density) * k / iterations for k in range(1, iterations + 1)]
    raise OptionError(f"schedule_kind={kind!r} is not allowed: schedule_kind takes one of 'exponential', 'linear'")


def layer_counts_mask(counts: Mapping[str, int], shapes: Mapping[str, tuple], seed: int, meta: dict) -> Mask:
    """A mask with exactly `counts[name]` kept weights per layer at seeded random positions: the first
    counts of ``torch.randperm`` over each layer in turn, one generator seeded with `seed` (by a partial
    shuffle with torch's own generator, so the work is ∝ the kept weights: VGG-16's 138M at 5% in a
    fraction of the full permutations' time, the same masks bit for bit)."""
    sizes = np.array([math.prod(s) for s in shapes.values()], dtype=np.int64)
    keep = np.array([int(counts[k]) for k in shapes], dtype=np.int64)
    flat = torch.zeros(int(sizes.sum()), dtype=torch.bool)
    parts = flat.split(sizes.tolist())  # views: writing a part writes flat
    if sizes.size and sizes.max() >= kernels.RANDPERM_N_MAX:  # torch shuffles such a layer another way
        g = torch.Generator().manual_seed(seed)
        for part, c in zip(parts, keep):
            part[torch.randperm(part.numel(), generator=g)[: int(c)]] = True
    else:  # torch seeds its generator with the seed's low 32 bits
        kernels.randperm_prefixes(sizes, keep, int(seed) % 2**32, flat.numpy())
    return Mask({k: part.reshape(shape) for (k, shape), part in zip(shapes.items(), parts)}, meta)
