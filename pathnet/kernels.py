"""Numba kernels over flat arrays (no torch here): PHEW random walks, reachability, path counts, and
the first entries of torch's CPU random permutations.

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

Randomness is splitmix64: a walk's own stream (:func:`walk_stream`) or, elsewhere, a generator
in a one-element uint64 array; a seed gives the same walks on every machine.
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
    return _mix(state[0])


@njit(cache=True)
def _mix(z):
    """splitmix64's output function: 64 well-mixed bits of the state `z`."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def _uniform(state):
    """A float in [0, 1) with 53 random bits."""
    return float(_next(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def _randint(state, n):
    """An int in [0, n) (n < 2^53), by scaling 53 random bits: a multiply, where a modulo is a slow division."""
    return min(int(_uniform(state) * n), n - 1)


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
def walk_stream(key, walk):
    """The start of walk number `walk`'s own splitmix64 stream under `key` (the seed's): a walk's draws
    depend on the seed and its number only, never on the walks before it or how walks are batched."""
    return _mix(key + np.uint64(walk) * np.uint64(0xD1B54A32D192ED03) + np.uint64(0x9E3779B97F4A7C15))


@njit(cache=True)
def walk_paths(w, layer0, unit0, walks, key, absw, allowed, uniform, whole, avoid, paths, lengths, done):
    """Walks from (`layer0[j]`, `unit0[j]`) to the end of the network in `w`'s direction, walk j drawing
    from stream `walks[j]` (:func:`walk_stream`). Writes the allowed weight entries walk j crossed to
    ``paths[j, :lengths[j]]`` and whether it reached the end to ``done[j]``; reads no weight state.

    Each hop picks, uniformly, one of the blocks in which the unit has edges (the block path or the
    shortcut at a residual fork; those `avoid` marks only if nothing else is left), then an edge ∝
    its L1 weight, then (prunable blocks) an entry of the kernel ∝ |w| (every allowed entry if
    `whole`). The walks advance hop by hop together, and the binary searches over the rows'
    cumulative L1 step in lockstep, so the many memory reads of different walks are in flight at
    once: that, not arithmetic, is what a hop costs on a large network.
    """
    n = walks.shape[0]
    layer, unit = layer0.copy(), unit0.copy()
    rng = np.empty(n, dtype=np.uint64)
    blk = np.empty(n, dtype=np.int64)
    row0 = np.empty(n, dtype=np.int64)  # the first edge of the unit's row
    lo = np.empty(n, dtype=np.int64)  # the edge chosen, or the start of its search
    span = np.zeros(n, dtype=np.int64)  # candidates left in the search (≤ 1: done)
    r = np.empty(n, dtype=np.float64)
    one = np.empty(1, dtype=np.uint64)
    live = np.arange(n)
    for j in range(n):
        rng[j] = walk_stream(key, walks[j])
        lengths[j] = 0
    n_live = n
    while n_live > 0:
        kept = 0
        for a in range(n_live):  # choose each walk's block and start its edge search
            j = live[a]
            one[0] = rng[j]
            p0, p1 = w.lay_ptr[layer[j]], w.lay_ptr[layer[j] + 1]
            n_ok = 0
            n_pref = 0
            for p in range(p0, p1):
                s, e = _row(w, w.lay_blk[p], unit[j])
                if e > s:
                    n_ok += 1
                    if not avoid[w.lay_blk[p]]:
                        n_pref += 1
            if n_ok == 0:  # the end of the network, or a unit whose edges were all masked
                done[j] = p0 == p1
                continue
            t = _randint(one, n_pref if n_pref > 0 else n_ok)
            b = w.lay_blk[p0]
            if p1 - p0 > 1:
                for p in range(p0, p1):
                    s, e = _row(w, w.lay_blk[p], unit[j])
                    if e > s and (n_pref == 0 or not avoid[w.lay_blk[p]]):
                        if t == 0:
                            b = w.lay_blk[p]
                            break
                        t -= 1
            s, e = _row(w, b, unit[j])
            blk[j] = b
            row0[j] = s
            span[j] = 0
            if uniform or w.cum[e - 1] <= 0.0:
                lo[j] = s + _randint(one, e - s)
            else:
                r[j] = _uniform(one) * w.cum[e - 1]
                lo[j], span[j] = s, e - s
            rng[j] = one[0]
            live[kept] = j
            kept += 1
        n_live = kept
        searching = True
        while searching:  # one step of every walk's search: the first edge whose cumulative L1 passes r
            searching = False
            for a in range(n_live):  # branch-free (a walk whose search is over reads and adds nothing)
                j = live[a]
                m = span[j]
                half = m >> 1
                lo[j] += half * (w.cum[max(lo[j] + half - 1, 0)] <= r[j])
                span[j] = m - half
                searching |= m - half > 1
        for a in range(n_live):  # the kernel entry, and on to the far unit
            j = live[a]
            b, edge = blk[j], lo[j]
            if w.blk_dense[b]:  # far unit and first entry from the row's start (no division)
                far = edge - row0[j]
                first = w.blk_base0[b] + unit[j] * w.blk_near_stride[b] + far * w.blk_far_stride[b]
            else:
                far, first = _target(w, b, edge), _base(w, b, edge)
            if w.blk_prunable[b]:
                if whole:
                    for i in range(w.blk_k[b]):
                        if allowed[first + i]:
                            paths[j, lengths[j]] = first + i
                            lengths[j] += 1
                else:
                    one[0] = rng[j]
                    idx = _pick_entry(absw, allowed, first, w.blk_k[b], uniform, one)
                    rng[j] = one[0]
                    if idx >= 0:
                        paths[j, lengths[j]] = idx
                        lengths[j] += 1
            unit[j] = far
            layer[j] = w.blk_far[b]


@njit(cache=True)
def phew_walks(fw, bw, absw, allowed, state_w, n_kept, budget, stop_at, seeds_in, seeds_out_layer,
               seeds_out_unit, counter, uniform, whole, patience, key, stats, max_path, avoid, lanes):
    """Walks in turn, forward and backward, until `stop_at` weights are kept; return the kept count.

    Walk number i (`counter[0]` carries the next one between calls) starts, for even i, at input
    unit ``seeds_in[(i // 2) % n_in]`` and walks forward, for odd i at output unit ``(i // 2) % n_out``
    and walks backward. Walks are found `lanes` per direction at a time (:func:`walk_paths`) and
    then kept or set aside one by one in their order, exactly as if they had run one after another:
    a walk is kept whole or not at all; one that would pass `budget`, or that got stuck, is set
    aside. Stops early after `patience` walks in a row that add nothing. `stats` accumulates
    [walks, set aside].
    """
    paths = np.empty((2, lanes, max_path), dtype=np.int64)
    lengths = np.zeros((2, lanes), dtype=np.int64)
    done = np.zeros((2, lanes), dtype=np.bool_)
    ids = np.empty(lanes, dtype=np.int64)
    layers = np.empty(lanes, dtype=np.int64)
    units = np.empty(lanes, dtype=np.int64)
    touched = np.empty(max_path, dtype=np.int64)
    idle = 0
    while n_kept < stop_at and idle < patience:
        first = counter[0]
        for d in range(2):  # walks first .. first + 2·lanes − 1: the forward ones, then the backward ones
            w = fw if d == 0 else bw
            for j in range(lanes):
                i = first + ((first + d) % 2) + 2 * j
                ids[j] = i
                if d == 0:
                    layers[j], units[j] = 0, seeds_in[(i // 2) % seeds_in.shape[0]]
                else:
                    layers[j] = seeds_out_layer[(i // 2) % seeds_out_unit.shape[0]]
                    units[j] = seeds_out_unit[(i // 2) % seeds_out_unit.shape[0]]
            walk_paths(w, layers, units, ids, key, absw, allowed, uniform, whole, avoid,
                       paths[d], lengths[d], done[d])
        for i in range(first, first + 2 * lanes):
            if n_kept >= stop_at or idle >= patience:
                break
            d, j = i % 2, (i - first) // 2
            n_new = 0
            for t in range(lengths[d, j]):
                idx = paths[d, j, t]
                if state_w[idx] == 0:
                    state_w[idx] = 2
                    touched[n_new] = idx
                    n_new += 1
            ok = done[d, j] and n_kept + n_new <= budget
            for t in range(n_new):
                state_w[touched[t]] = 1 if ok else 0
            if ok and n_new > 0:
                n_kept += n_new
                idle = 0
            else:
                idle += 1
                if not ok:
                    stats[1] += 1
            stats[0] += 1
            counter[0] = i + 1
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
    without replacement (or uniformly): each closes an input→output path by itself. Returns the
    chosen indices (fewer than `count` if there are fewer candidates); leaves `state_w` as it was.

    ∝ |w|, they are found by rejection first: an entry proposed ∝ |w| among all allowed entries
    (a block ∝ its L1, a row ∝ its L1, then edge and entry as a walk picks them) and accepted if it
    is a free candidate is a draw ∝ |w| among the candidates, so a few proposals replace a pass over
    every edge between the two live sets. While fewer than one proposal in 64 is accepted (the
    candidates hold little of the weight) the pass (:func:`_bridges_scan`) finds the rest.
    """
    chosen = np.full(count, -1, dtype=np.int64)
    found = 0
    if not uniform:
        n_layers = fw.lay_off.shape[0] - 1
        n_blocks = fw.blk_far.shape[0]
        near = np.full(n_blocks, -1, dtype=np.int64)
        for layer in range(n_layers):
            for p in range(fw.lay_ptr[layer], fw.lay_ptr[layer + 1]):
                if fw.blk_prunable[fw.lay_blk[p]]:
                    near[fw.lay_blk[p]] = layer
        row_off = np.zeros(n_blocks + 1, dtype=np.int64)  # per prunable block: cumulative L1 over its rows
        for b in range(n_blocks):
            row_off[b + 1] = row_off[b] + (fw.lay_off[near[b] + 1] - fw.lay_off[near[b]] if near[b] >= 0 else 0)
        rows = np.zeros(row_off[n_blocks], dtype=np.float64)
        blocks = np.zeros(n_blocks, dtype=np.float64)
        total = 0.0
        for b in range(n_blocks):
            acc = 0.0
            for u in range(row_off[b + 1] - row_off[b]):
                s, e = _row(fw, b, u)
                if e > s:
                    acc += fw.cum[e - 1]
                rows[row_off[b] + u] = acc
            total += acc
            blocks[b] = total
        tries = 0
        while total > 0.0 and found < count and tries < 4096 + 64 * found:
            tries += 1
            b = min(np.searchsorted(blocks, _uniform(rng) * total, side="right"), n_blocks - 1)
            lo, hi = row_off[b], row_off[b + 1]
            if hi == lo or rows[hi - 1] <= 0.0:
                continue
            u = min(np.searchsorted(rows[lo:hi], _uniform(rng) * rows[hi - 1], side="right"), hi - lo - 1)
            s, e = _row(fw, b, u)
            if e == s or not fwd_live[fw.lay_off[near[b]] + u]:
                continue
            edge = _pick_cumulative(fw.cum, s, e, rng)
            if not bwd_live[fw.lay_off[fw.blk_far[b]] + _target(fw, b, edge)]:
                continue
            idx = _pick_entry(absw, allowed, _base(fw, b, edge), fw.blk_k[b], False, rng)
            if idx >= 0 and state_w[idx] == 0:
                state_w[idx] = 2  # not accepted twice, nor found again by the pass
                chosen[found] = idx
                found += 1
    if found < count:
        rest = _bridges_scan(fw, state_w, allowed, absw, fwd_live, bwd_live, count - found, uniform, rng)
        chosen[found:found + rest.shape[0]] = rest
        found += rest.shape[0]
    for t in range(found):
        if state_w[chosen[t]] == 2:
            state_w[chosen[t]] = 0
    return chosen[:found]


@njit(cache=True)
def _bridges_scan(fw, state_w, allowed, absw, fwd_live, bwd_live, count, uniform, rng):
    """:func:`bridges` by one pass over every candidate: weighted reservoir sampling (Efraimidis &
    Spirakis: keep the largest log(U)/|w|). Returns the chosen indices (fewer than `count` if there
    are fewer candidates)."""
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


# -- the first entries of torch.randperm ----------------------------------------------------------
# torch.randperm(n, generator=g) on the CPU (n < 2^32 / 20) is a forward Fisher–Yates shuffle, step i
# swapping entry i with entry i + (x mod (n − i)), x the generator's next 32-bit MT19937 output. After
# step i entry i is final, so the first k entries need only k steps; the other n − 1 − k outputs are
# skipped (the state still advances past them, as the next permutation expects).

#: the largest n (exclusive) for which torch.randperm on the CPU shuffles as above
RANDPERM_N_MAX = 4294967295 // 20


@njit(cache=True)
def _mt_twist(mt):
    for i in range(624):
        y = (mt[i] & np.uint32(0x80000000)) | (mt[(i + 1) % 624] & np.uint32(0x7FFFFFFF))
        v = mt[(i + 397) % 624] ^ (y >> np.uint32(1))
        if y & np.uint32(1):
            v ^= np.uint32(0x9908B0DF)
        mt[i] = v


@njit(cache=True)
def randperm_prefixes(sizes, counts, seed, out):
    """For each layer l in turn, mark in `out` (bool, the layers one after another) the first
    ``counts[l]`` entries of the permutation ``torch.randperm(sizes[l], generator=g)`` would give,
    g = ``torch.Generator().manual_seed(seed)`` drawn from layer after layer (every size below
    :data:`RANDPERM_N_MAX`, 0 ≤ seed < 2^32). Work ∝ Σ counts plus one pass per layer."""
    mt = np.empty(624, dtype=np.uint32)
    mt[0] = np.uint32(seed)
    for i in range(1, 624):
        mt[i] = np.uint32(1812433253) * (mt[i - 1] ^ (mt[i - 1] >> np.uint32(30))) + np.uint32(i)
    at = 624  # the next output's place in mt (624: twist first)
    off = 0
    for layer in range(sizes.shape[0]):
        n, k = sizes[layer], counts[layer]
        perm = np.arange(n if k > 0 else 0, dtype=np.int32)  # n < RANDPERM_N_MAX < 2^31
        for i in range(min(k, n - 1)):
            if at == 624:
                _mt_twist(mt)
                at = 0
            y = mt[at]
            at += 1
            y ^= y >> np.uint32(11)
            y ^= (y << np.uint32(7)) & np.uint32(0x9D2C5680)
            y ^= (y << np.uint32(15)) & np.uint32(0xEFC60000)
            y ^= y >> np.uint32(18)
            z = i + np.int64(y) % (n - i)
            perm[i], perm[z] = perm[z], perm[i]
            out[off + perm[i]] = True
        if k >= n and n > 0:  # every entry (the last one needs no draw)
            out[off + perm[n - 1]] = True
        skip = max(n - 1 - k, 0)
        while skip > 0:  # the outputs this permutation drew beyond its first k steps
            if at == 624:
                _mt_twist(mt)
                at = 0
            take = min(skip, 624 - at)
            at += take
            skip -= take
        off += n
