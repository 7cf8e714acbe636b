"""Numba kernels over flat arrays (no torch here): PHEW random walks and reachability.

A network arrives as two :class:`Walkable` structures, one per direction. Units are numbered
layer by layer (``lay_off``); for every layer, ``lay_blk[lay_ptr[l]:lay_ptr[l+1]]`` lists the
edge blocks leaving it in that direction; a block's edges are rows over its near units
(``indptr`` from ``blk_rows[b]``, edge ids shifted by ``edge_off[b]``) with the far unit in
``target``, the row-wise cumulative L1 weight in ``cum`` and, for prunable blocks, the flat
index ``base[e]`` of the first of the kernel's ``blk_k[b]`` weight entries. Weight state is a
uint8 array over all entries: 0 free, 1 kept, 2 marked by the walk in progress.

Randomness is a splitmix64 generator in a one-element uint64 array: a seed gives the same
walks on every machine.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit


class Walkable(NamedTuple):
    """One direction of a network as flat arrays (see the module docstring)."""

    lay_off: np.ndarray  # int64[L+1]   first global unit of each layer
    lay_ptr: np.ndarray  # int64[L+1]   blocks leaving each layer in this direction
    lay_blk: np.ndarray  # int64[]
    blk_far: np.ndarray  # int64[B]     layer at the block's far end
    blk_rows: np.ndarray  # int64[B]    offset of the block's rows in indptr
    edge_off: np.ndarray  # int64[B]    offset of the block's edges in target/cum/base
    blk_k: np.ndarray  # int64[B]       kernel volume (weight entries per edge)
    blk_prunable: np.ndarray  # bool[B]
    indptr: np.ndarray  # int64[]       per block: rows over near units, local edge positions
    target: np.ndarray  # int64[E]      far unit (local to the far layer)
    cum: np.ndarray  # float64[E]       cumulative L1 along each row
    base: np.ndarray  # int64[E]        first weight entry of the edge's kernel (-1: not prunable)
    mult: np.ndarray  # int64[E]        multiplicity: kept entries of the kernel (1 for weightless edges)


# -- random numbers ---------------------------------------------------------------------------


@njit(cache=True)
def _next(state):
    """splitmix64: advance `state[0]` and return 64 random bits."""
    state[0] += np.uint64(0x9E3779B97F4A7C15)
    z = state[0]
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def _uniform(state):
    """A float in [0, 1) with 53 random bits."""
    return float(_next(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def _randint(state, n):
    """An int in [0, n)."""
    return int(_next(state) % np.uint64(n))


@njit(cache=True)
def _pick_cumulative(cum, start, end, state):
    """Index in [start, end) drawn ∝ the increments of the row's cumulative sums (uniform if all zero)."""
    total = cum[end - 1]
    if total <= 0.0:
        return start + _randint(state, end - start)
    r = _uniform(state) * total
    lo, hi = start, end - 1
    while lo < hi:  # first index with cum > r
        mid = (lo + hi) // 2
        if cum[mid] > r:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True)
def _pick_entry(absw, allowed, base, k, uniform, state):
    """An allowed entry of the kernel at `base` drawn ∝ |w| (uniformly if `uniform` or all zero); -1 if none."""
    total = 0.0
    n_ok = 0
    for j in range(k):
        if allowed[base + j]:
            total += absw[base + j]
            n_ok += 1
    if n_ok == 0:
        return -1
    if uniform or total <= 0.0:
        t = _randint(state, n_ok)
        for j in range(k):
            if allowed[base + j]:
                if t == 0:
                    return base + j
                t -= 1
    r = _uniform(state) * total
    last = -1
    for j in range(k):
        if allowed[base + j]:
            last = base + j
            r -= absw[base + j]
            if r < 0.0:
                return base + j
    return last  # rounding left r ≥ 0: the last allowed entry


@njit(cache=True)
def _row(w, b, unit):
    r = w.blk_rows[b] + unit
    return w.indptr[r] + w.edge_off[b], w.indptr[r + 1] + w.edge_off[b]


# -- walks ----------------------------------------------------------------------------------------


@njit(cache=True)
def _walk(w, layer, unit, absw, allowed, state_w, uniform, whole, rng, touched):
    """One walk from (`layer`, `unit`) to the end of the network in `w`'s direction.

    At every unit it picks, uniformly, one of the blocks in which the unit has edges (the block
    path or the shortcut at a residual fork), then an edge ∝ its L1 weight, then (prunable
    blocks) an entry of the kernel ∝ |w|. Free weights it crosses are marked 2 and listed in
    `touched`. Returns (number marked, whether the walk reached the end).
    """
    n_new = 0
    while True:
        n_ok = 0
        for p in range(w.lay_ptr[layer], w.lay_ptr[layer + 1]):
            s, e = _row(w, w.lay_blk[p], unit)
            if e > s:
                n_ok += 1
        if n_ok == 0:  # the end of the network, or a unit whose edges were all masked
            return n_new, w.lay_ptr[layer] == w.lay_ptr[layer + 1]
        t = _randint(rng, n_ok)
        b = -1
        for p in range(w.lay_ptr[layer], w.lay_ptr[layer + 1]):
            s, e = _row(w, w.lay_blk[p], unit)
            if e > s:
                if t == 0:
                    b = w.lay_blk[p]
                    break
                t -= 1
        s, e = _row(w, b, unit)
        edge = s + _randint(rng, e - s) if uniform else _pick_cumulative(w.cum, s, e, rng)
        if w.blk_prunable[b]:
            k = w.blk_k[b]
            first = w.base[edge]
            if whole:
                for j in range(k):
                    idx = first + j
                    if allowed[idx] and state_w[idx] == 0:
                        state_w[idx] = 2
                        touched[n_new] = idx
                        n_new += 1
            else:
                idx = _pick_entry(absw, allowed, first, k, uniform, rng)
                if idx >= 0 and state_w[idx] == 0:
                    state_w[idx] = 2
                    touched[n_new] = idx
                    n_new += 1
        unit = w.target[edge]
        layer = w.blk_far[b]


@njit(cache=True)
def phew_walks(fw, bw, absw, allowed, state_w, n_kept, budget, stop_at, seeds_in, seeds_out_layer,
               seeds_out_unit, robin, uniform, whole, patience, rng, stats, max_path):
    """Alternate forward and backward walks until `stop_at` weights are kept; return the kept count.

    Forward walks start at the input units in turn, backward walks at the output units in turn
    (`robin` = [next input, next output, walk counter] carries the turn between calls). A walk
    is kept whole or not at all: one that would pass `budget`, or that got stuck, is set aside
    and its marks undone. Stops early after `patience` walks in a row that add nothing.
    `stats` accumulates [walks, set aside].
    """
    touched = np.empty(max_path, dtype=np.int64)
    idle = 0
    while n_kept < stop_at and idle < patience:
        if robin[2] % 2 == 0:
            unit = seeds_in[robin[0]]
            robin[0] = (robin[0] + 1) % seeds_in.shape[0]
            n_new, done = _walk(fw, 0, unit, absw, allowed, state_w, uniform, whole, rng, touched)
        else:
            j = robin[1]
            robin[1] = (robin[1] + 1) % seeds_out_unit.shape[0]
            n_new, done = _walk(bw, seeds_out_layer[j], seeds_out_unit[j], absw, allowed, state_w, uniform, whole,
                                rng, touched)
        robin[2] += 1
        stats[0] += 1
        ok = done and n_kept + n_new <= budget
        for i in range(n_new):
            state_w[touched[i]] = 1 if ok else 0
        if ok and n_new > 0:
            n_kept += n_new
            idle = 0
        else:
            idle += 1
            if not ok:
                stats[1] += 1
    return n_kept


# -- reachability and completion ------------------------------------------------------------------


@njit(cache=True)
def _edge_on(w, b, edge, state_w):
    """Whether an edge carries a kept weight (weightless edges always do)."""
    if not w.blk_prunable[b]:
        return True
    for j in range(w.blk_k[b]):
        if state_w[w.base[edge] + j] == 1:
            return True
    return False


@njit(cache=True)
def reach(w, state_w, live, forward):
    """Extend the unit set `live` (bool over global units, in place) along kept edges of `w`.

    Layers are in topological order, so one sweep (ascending for the forward structure,
    descending for the backward one) reaches everything.
    """
    n_layers = w.lay_off.shape[0] - 1
    for i in range(n_layers):
        layer = i if forward else n_layers - 1 - i
        for p in range(w.lay_ptr[layer], w.lay_ptr[layer + 1]):
            b = w.lay_blk[p]
            far = w.blk_far[b]
            for u in range(w.lay_off[layer + 1] - w.lay_off[layer]):
                if not live[w.lay_off[layer] + u]:
                    continue
                s, e = _row(w, b, u)
                for edge in range(s, e):
                    v = w.lay_off[far] + w.target[edge]
                    if not live[v] and _edge_on(w, b, edge, state_w):
                        live[v] = True
    return live


@njit(cache=True)
def bridges(fw, state_w, allowed, absw, fwd_live, bwd_live, count, uniform, rng):
    """Up to `count` distinct free weights (u→v) with u ∈ fwd_live and v ∈ bwd_live, drawn ∝ |w|
    without replacement (or uniformly): each closes an input→output path by itself.

    One pass of weighted reservoir sampling (Efraimidis & Spirakis: keep the largest
    log(U)/|w|). Returns the chosen indices (fewer than `count` if there are fewer candidates).
    """
    keys = np.full(count, -np.inf)
    chosen = np.full(count, -1, dtype=np.int64)
    n_seen = 0
    slot = 0  # the slot holding the smallest key
    n_layers = fw.lay_off.shape[0] - 1
    for layer in range(n_layers):
        for p in range(fw.lay_ptr[layer], fw.lay_ptr[layer + 1]):
            b = fw.lay_blk[p]
            if not fw.blk_prunable[b]:
                continue
            far_off = fw.lay_off[fw.blk_far[b]]
            for u in range(fw.lay_off[layer + 1] - fw.lay_off[layer]):
                if not fwd_live[fw.lay_off[layer] + u]:
                    continue
                s, e = _row(fw, b, u)
                for edge in range(s, e):
                    if not bwd_live[far_off + fw.target[edge]]:
                        continue
                    for j in range(fw.blk_k[b]):
                        idx = fw.base[edge] + j
                        if state_w[idx] != 0 or not allowed[idx]:
                            continue
                        n_seen += 1
                        x = _uniform(rng)
                        if uniform:
                            key = x
                        elif absw[idx] > 0.0:
                            key = np.log(x + 1e-300) / absw[idx]
                        else:
                            key = -1e300 - x  # zero weights only when nothing else is left
                        if key > keys[slot] or chosen[slot] == -1:
                            keys[slot] = key
                            chosen[slot] = idx
                            for t in range(count):  # find the new smallest key
                                if chosen[t] == -1 or keys[t] < keys[slot]:
                                    slot = t
                                    if chosen[t] == -1:
                                        break
    return chosen[: min(count, n_seen)]


# -- path counting --------------------------------------------------------------------------------


@njit(cache=True)
def _logaddexp(a, b):
    if a == -np.inf:
        return b
    if b == -np.inf:
        return a
    m = max(a, b)
    return m + np.log1p(np.exp(-abs(a - b)))


@njit(cache=True)
def log_path_counts(w, start, forward):
    """Natural log of the number of paths from the start units to every unit, along `w`.

    `start` holds 0.0 at the start units and -inf elsewhere (one path from a start unit to
    itself). An edge of multiplicity m counts as m parallel edges. Sums are taken in log space
    (logaddexp), so counts far beyond float64 stay exact to rounding.
    """
    logc = start.copy()
    n_layers = w.lay_off.shape[0] - 1
    for i in range(n_layers):
        layer = i if forward else n_layers - 1 - i
        for p in range(w.lay_ptr[layer], w.lay_ptr[layer + 1]):
            b = w.lay_blk[p]
            far_off = w.lay_off[w.blk_far[b]]
            for u in range(w.lay_off[layer + 1] - w.lay_off[layer]):
                lu = logc[w.lay_off[layer] + u]
                if lu == -np.inf:
                    continue
                s, e = _row(w, b, u)
                for edge in range(s, e):
                    if w.mult[edge] > 0:
                        v = far_off + w.target[edge]
                        logc[v] = _logaddexp(logc[v], lu + np.log(float(w.mult[edge])))
    return logc
