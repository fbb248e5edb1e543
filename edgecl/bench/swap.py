"""``edgecl bench swap``: what a hot swap costs, and what it does to predict latency."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecl.bench._timing import summary_ms
from edgecl.bench.results import SwapBenchResult


def bench_swap(bundle: Path, *, calls: int = 4000, block: int = 200, swaps_per_s: float = 10.0,
               threads: int = 1) -> SwapBenchResult:
    """Batch-1 predict latency while a background thread applies signed updates (verify,
    build, swap) at ``swaps_per_s``, vs without, in alternating blocks of ``block`` calls
    (A B A B ...); plus the latency of one ``UpdateManager.apply`` and of the bare
    reference swap inside it."""
    from edgecl.cloud import UpdateSigner
    from edgecl.device import CanaryPolicy, DeviceRuntime, UpdateManager, UpdateVerifier
    from edgecl.wire import UpdatePayload

    rt = DeviceRuntime.open(bundle, threads=threads)
    signer = UpdateSigner.generate()
    manager = UpdateManager(rt, UpdateVerifier(signer.public_key),
                            canary=CanaryPolicy(min_samples=10**9))
    rng = np.random.default_rng(0)
    head = rt.state.head.arrays()
    d = rt.bundle.manifest.feature_dim
    shape = rt.bundle.input_spec.shape

    identity = np.repeat(np.pad([[1.0]], 1)[None], shape[0], 0)  # a 3x3 identity filter

    def update(v: int) -> Any:
        parts = {"prompt": rng.normal(0, 0.01, shape), "filter": identity,
                 "adapter.down": rng.normal(0, 0.1, (8, d)),
                 "adapter.up": rng.normal(0, 0.01, (d, 8)), "head.weight": head["weight"],
                 "head.bias": head["bias"]}
        return signer.sign(UpdatePayload(v, v - 1, rt.bundle.encoder_sha256, parts=parts))

    n_updates = int(calls / block / 2 * block * 0.01 * swaps_per_s) + 200
    updates = [update(v) for v in range(1, n_updates + 1)]
    apply_s: list[float] = []
    swap_s: list[float] = []
    frames = rng.random((64, *shape), dtype=np.float32)
    for i in range(50):
        rt.predict(frames[i % 64])
    swapping = threading.Event()
    stop = threading.Event()
    next_update = [0]

    def swap_once() -> None:
        u = updates[next_update[0]]
        next_update[0] += 1
        t0 = time.perf_counter()
        state = manager.apply(u)
        apply_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rt.swap_state(state.evolve())  # the bare reference swap
        swap_s.append(time.perf_counter() - t0)

    def swapper() -> None:
        period = 1.0 / swaps_per_s
        while not stop.is_set():
            # wake as soon as a swapping block starts (short blocks may last < period)
            if swapping.wait(period) and next_update[0] < len(updates):
                swap_once()
                stop.wait(period)

    worker = threading.Thread(target=swapper, daemon=True)
    worker.start()
    times: dict[str, list[float]] = {"plain": [], "swapping": []}
    try:
        for r in range(max(1, calls // (2 * block))):
            for mode in ("plain", "swapping"):
                (swapping.set if mode == "swapping" else swapping.clear)()
                for i in range(block):
                    x = frames[(i + r) % 64]
                    t0 = time.perf_counter()
                    rt.predict(x)
                    times[mode].append(time.perf_counter() - t0)
    finally:
        stop.set()
        worker.join()
    if not apply_s:  # a run too short for the swapper: time one apply on its own
        swap_once()
    p50, p99 = summary_ms(np.array(times["plain"]))
    s50, s99 = summary_ms(np.array(times["swapping"]))
    a50, a99 = summary_ms(np.array(apply_s))
    w50, w99 = summary_ms(np.array(swap_s))
    return SwapBenchResult(
        predict_p50_ms=round(p50, 4), predict_p99_ms=round(p99, 4),
        predict_p50_ms_swapping=round(s50, 4), predict_p99_ms_swapping=round(s99, 4),
        p99_ratio=round(s99 / p99, 3), apply_ms_p50=round(a50, 3),
        apply_ms_p99=round(a99, 3), swap_us_p50=round(w50 * 1e3, 2),
        swap_us_p99=round(w99 * 1e3, 2), swaps=len(apply_s),
        calls_per_mode=len(times["plain"]), threads=threads, swaps_per_s=swaps_per_s)
