"""Interleaved timing of several callables (A B C A B C ...), reported as median and p99."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def interleaved(fns: dict[str, Callable[[], object]], *, calls: int,
                warmup: int) -> dict[str, np.ndarray]:
    """Seconds per call of each function, measured round-robin so drift hits all alike.

    The order rotates every round (A B C, B C A, C A B, ...) so no function always runs
    right after the same neighbour (cache and frequency effects spread evenly).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: np.empty(calls) for name in fns}
    clock = time.perf_counter
    items = list(fns.items())
    for i in range(calls):
        for j in range(len(items)):
            name, fn = items[(i + j) % len(items)]
            t0 = clock()
            fn()
            times[name][i] = clock() - t0
    return times


def summary_ms(samples: np.ndarray) -> tuple[float, float]:
    """(median, p99) in milliseconds."""
    return float(np.median(samples) * 1e3), float(np.percentile(samples, 99) * 1e3)
