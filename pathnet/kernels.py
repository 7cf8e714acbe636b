"""Numba kernels over flat arrays (no torch here): PHEW random walks and reachability.

A network arrives as two :class:`Walkable` structures, one per direction. Units are numbered
layer by layer (``lay_off``); for every layer, ``lay_blk[lay_ptr[l]:lay_ptr[l+1]]`` lists the
edge blocks leaving it in that direction. Every edge has an id (``edge_off[b]`` + its place in
the block, rows over near units) that indexes ``cum``, the row-wise cumulative L1 weight (walks
only). A *dense* block (every near unit joined to every far unit, multiplicity ``blk_k``) stores
nothing else: row u holds edges ``edge_off[b] + u·blk_nfar[b] + j`` to far unit j, and the first
of the kernel's ``blk_k[b]`` weight entries is ``blk_base0 + u·blk_near_stride + j·blk_far_stride``.
A *stored* block keeps CSR rows (``indptr`` from ``blk_rows[b]``) and, from ``xedge_off[b]``, the
far unit in ``target``, the first weight entry in ``base`` and the multiplicity in ``mult``.
Weight state is a uint8 array over all entries: 0 free, 1 kept, 2 marked by the walk in progress.

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
    blk_dense: np.ndarray  # bool[B]    edges implicit (every near × far pair)
    blk_nfar: np.ndarray  # int64[B]    units of the far layer
    blk_rows: np.ndarray  # int64[B]    offset of a stored block's rows in indptr
    edge_off: np.ndarray  # int64[B]    offset of the block's edge ids (into cum)
    xedge_off: np.ndarray  # int64[B]   offset of a stored block's edges in target/base/mult
    blk_k: np.ndarray  # int64[B]       kernel volume (weight entries per edge)
    blk_prunable: np.ndarray  # bool[B]
    blk_base0: np.ndarray  # int64[B]   dense blocks: first weight entry of edge (0, 0)
    blk_near_stride: np.ndarray  # int64[B]  … per near unit
    blk_far_stride: np.ndarray  # int64[B]   … per far unit
    indptr: np.ndarray  # int64[]       stored blocks: rows over near units, local edge positions
    target: np.ndarray  # int32[]       far unit (local to the far layer)
    cum: np.ndarray  # float32[E]       cumulative L1 along each row (walks only)
    base: np.ndarray  # int64[]         first weight entry of the edge's kernel (-1: not prunable)
    mult: np.ndarray  # int32[]         multiplicity: kept entries of the kernel (1 for weightless edges)


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
    """The edge ids [s, e) leaving near unit `unit` in block `b`."""
    if w.blk_dense[b]:
        s = w.edge_off[b] + unit * w.blk_nfar[b]
        return s, s + w.blk_nfar[b]
    r = w.blk_rows[b] + unit
    return w.indptr[r] + w.edge_off[b], w.indptr[r + 1] + w.edge_off[b]


@njit(cache=True)
def _target(w, b, edge):
    if w.blk_dense[b]:
        return (edge - w.edge_off[b]) % w.blk_nfar[b]
    return w.target[w.xedge_off[b] + edge - w.edge_off[b]]


@njit(cache=True)
def _base(w, b, edge):
    if w.blk_dense[b]:
        local = edge - w.edge_off[b]
        return (w.blk_base0[b] + (local // w.blk_nfar[b]) * w.blk_near_stride[b]
                + (local % w.blk_nfar[b]) * w.blk_far_stride[b])
    return w.base[w.xedge_off[b] + edge - w.edge_off[b]]


@njit(cache=True)
def _mult(w, b, edge):
    if w.blk_dense[b]:
        return w.blk_k[b]
    return w.mult[w.xedge_off[b] + edge - w.edge_off[b]]


@njit(cache=True)
def dense_cums(l1, out, forward):
    """Row-wise cumulative L1 of a dense block with l1 (n_dst, n_src): rows over sources (forward,
    out is n_src × n_dst) or over destinations (backward, n_dst × n_src). Sums in float64; the
    forward rows are built square tile by square tile, so reads and writes stay in cache."""
    n_dst, n_src = l1.shape
    if not forward:
        for o in range(n_dst):
            row = 0.0
            for i in range(n_src):
                row += l1[o, i]
                out[o * n_src + i] = row
        return
    tile = 64
    acc = np.zeros(tile)
    for i0 in range(0, n_src, tile):
        i1 = min(n_src, i0 + tile)
        acc[:] = 0.0
        for o0 in range(0, n_dst, tile):  # a tile × tile square: reads and writes stay in cache
            o1 = min(n_dst, o0 + tile)
            for i in range(i0, i1):
                a = acc[i - i0]
                row = i * n_dst
                for o in range(o0, o1):
                    a += l1[o, i]
                    out[row + o] = a
                acc[i - i0] = a


# -- walks ----------------------------------------------------------------------------------------


@njit(cache=True)
def _walk(w, layer, unit, absw, allowed, state_w, uniform, whole, rng, touched, avoid):
    """One walk from (`layer`, `unit`) to the end of the network in `w`'s direction.

    At every unit it picks, uniformly, one of the blocks in which the unit has edges (the block
    path or the shortcut at a residual fork), then an edge ∝ its L1 weight, then (prunable
    blocks) an entry of the kernel ∝ |w|. Free weights it crosses are marked 2 and listed in
    `touched`. Returns (number marked, whether the walk reached the end).
    """
    n_new = 0
    while True:
        n_ok = 0  # blocks in which the unit has edges (those `avoid` marks only if nothing else is left)
        n_pref = 0
        for p in range(w.lay_ptr[layer], w.lay_ptr[layer + 1]):
            s, e = _row(w, w.lay_blk[p], unit)
            if e > s:
                n_ok += 1
                if not avoid[w.lay_blk[p]]:
                    n_pref += 1
        if n_ok == 0:  # the end of the network, or a unit whose edges were all masked
            return n_new, w.lay_ptr[layer] == w.lay_ptr[layer + 1]
        t = _randint(rng, n_pref if n_pref > 0 else n_ok)
        b = -1
        for p in range(w.lay_ptr[layer], w.lay_ptr[layer + 1]):
            s, e = _row(w, w.lay_blk[p], unit)
            if e > s and (n_pref == 0 or not avoid[w.lay_blk[p]]):
                if t == 0:
                    b = w.lay_blk[p]
                    break
                t -= 1
        s, e = _row(w, b, unit)
        edge = s + _randint(rng, e - s) if uniform else _pick_cumulative(w.cum, s, e, rng)
        if w.blk_prunable[b]:
            k = w.blk_k[b]
            first = _base(w, b, edge)
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
        unit = _target(w, b, edge)
        layer = w.blk_far[b]


@njit(cache=True)
def phew_walks(fw, bw, absw, allowed, state_w, n_kept, budget, stop_at, seeds_in, seeds_out_layer,
               seeds_out_unit, robin, uniform, whole, patience, rng, stats, max_path, avoid):
    """Alternate forward and backward walks until `stop_at` weights are kept; return the kept count.

    Forward walks start at the input units in turn, backward walks at the output units in turn
    (`robin` = [next input, next output, walk counter] carries the turn between calls). A walk
    is kept whole or not at all: one that would pass `budget`, or that got stuck, is set aside
    and its marks undone. Stops early after `patience` walks in a row that add nothing.
    `stats` accumulates [walks, set aside]. A hop takes a block `avoid` marks only where the unit
    has no other.
    """
    touched = np.empty(max_path, dtype=np.int64)
    idle = 0
    while n_kept < stop_at and idle < patience:
        if robin[2] % 2 == 0:
            unit = seeds_in[robin[0]]
            robin[0] = (robin[0] + 1) % seeds_in.shape[0]
            n_new, done = _walk(fw, 0, unit, absw, allowed, state_w, uniform, whole, rng, touched, avoid)
        else:
            j = robin[1]
            robin[1] = (robin[1] + 1) % seeds_out_unit.shape[0]
            n_new, done = _walk(bw, seeds_out_layer[j], seeds_out_unit[j], absw, allowed, state_w, uniform, whole,
                                rng, touched, avoid)
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
    first = _base(w, b, edge)
    for j in range(w.blk_k[b]):
        if state_w[first + j] == 1:
            return True
    return False


@njit(cache=True)
def reach(w, state_w, kept, live, forward):
    """Extend the unit set `live` (bool over global units, in place) along kept edges of `w`.

    Layers are in topological order, so one sweep (ascending for the forward structure,
    descending for the backward one) reaches everything. `kept` lists the kept weight indices in
    ascending order: a dense block is crossed through its kept weights only (they are contiguous
    in the weight array), not through every edge.
    """
    n_layers = w.lay_off.shape[0] - 1
    for i in range(n_layers):
        layer = i if forward else n_layers - 1 - i
        n_near = w.lay_off[layer + 1] - w.lay_off[layer]
        for p in range(w.lay_ptr[layer], w.lay_ptr[layer + 1]):
            b = w.lay_blk[p]
            far = w.blk_far[b]
            if w.blk_dense[b] and w.blk_prunable[b]:
                k = w.blk_k[b]
                n_src = n_near if forward else w.blk_nfar[b]
                lo = w.blk_base0[b]
                hi = lo + n_near * w.blk_nfar[b] * k
                for t in range(np.searchsorted(kept, lo), np.searchsorted(kept, hi)):
                    kk = (kept[t] - lo) // k
                    o, src = kk // n_src, kk % n_src  # the weight's (destination, source) units
                    u, v = (src, o) if forward else (o, src)
                    if live[w.lay_off[layer] + u]:
                        live[w.lay_off[far] + v] = True
                continue
            for u in range(n_near):
                if not live[w.lay_off[layer] + u]:
                    continue
                s, e = _row(w, b, u)
                for edge in range(s, e):
                    v = w.lay_off[far] + _target(w, b, edge)
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
                    if not bwd_live[far_off + _target(fw, b, edge)]:
                        continue
                    first = _base(fw, b, edge)
                    for j in range(fw.blk_k[b]):
                        idx = first + j
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
        n_near = w.lay_off[layer + 1] - w.lay_off[layer]
        for p in range(w.lay_ptr[layer], w.lay_ptr[layer + 1]):
            b = w.lay_blk[p]
            far_off = w.lay_off[w.blk_far[b]]
            if w.blk_dense[b]:  # every far unit gains the same: Σ_u paths(u) · k
                total = -np.inf
                for u in range(n_near):
                    total = _logaddexp(total, logc[w.lay_off[layer] + u])
                if total == -np.inf:
                    continue
                total += np.log(float(w.blk_k[b]))
                for v in range(w.blk_nfar[b]):
                    logc[far_off + v] = _logaddexp(logc[far_off + v], total)
                continue
            for u in range(n_near):
                lu = logc[w.lay_off[layer] + u]
                if lu == -np.inf:
                    continue
                s, e = _row(w, b, u)
                for edge in range(s, e):
                    m = _mult(w, b, edge)
                    if m > 0:
                        v = far_off + _target(w, b, edge)
                        logc[v] = _logaddexp(logc[v], lu + np.log(float(m)))
    return logc
