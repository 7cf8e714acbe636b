"""Shared by the benchmarks: best-of-n wall-clock timing."""

from __future__ import annotations

import time


def best_of(fn, repeat: int):
    """(fastest wall time of `repeat` calls of fn, the last result)."""
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out
