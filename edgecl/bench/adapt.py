"""``edgecl bench adapt``: predict latency with the adaptation worker running vs without."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgecl.bench._timing import summary_ms
from edgecl.bench.results import AdaptBenchResult


def bench_adapt(bundle: Path, frames: np.ndarray, *, method: str = "align", calls: int = 4000,
                block: int = 200, batch: int = 1, threads: int = 1) -> AdaptBenchResult:
    """Predict latency (``batch`` images per call) in alternating blocks of ``block`` calls:
    plain ``runtime.predict`` vs ``AdaptationWorker.predict`` (predict with features, then
    a non-blocking hand-off) while the worker adapts ``method`` and publishes states in its
    own thread. ``frames`` are the inputs, cycled (use shifted data so the method works)."""
    from edgecl.device import AdaptationWorker, DeviceRuntime

    rt = DeviceRuntime.open(bundle, threads=threads)
    worker = AdaptationWorker(rt, method, publish_every=64)
    n = len(frames)
    for i in range(50):
        rt.predict(frames[(i * batch) % n:(i * batch) % n + batch])
    times: dict[str, list[float]] = {"off": [], "on": []}
    k = 0
    try:
        for _ in range(max(1, calls // (2 * block))):
            for mode in ("off", "on"):
                call = worker.predict if mode == "on" else rt.predict
                for _ in range(block):
                    start = (k * batch) % max(n - batch, 1)
                    k += 1
                    x = frames[start:start + batch]
                    t0 = time.perf_counter()
                    call(x)
                    times[mode].append(time.perf_counter() - t0)
                if mode == "on":
                    worker.wait_idle()  # the "off" block must not pay for queued work
    finally:
        worker.close()
    p50, p99 = summary_ms(np.array(times["off"]))
    a50, a99 = summary_ms(np.array(times["on"]))
    return AdaptBenchResult(
        method=method, batch=batch, threads=threads, calls_per_mode=len(times["off"]),
        predict_p50_ms_off=round(p50, 4), predict_p99_ms_off=round(p99, 4),
        predict_p50_ms_on=round(a50, 4), predict_p99_ms_on=round(a99, 4),
        p50_ratio=round(a50 / p50, 3), p99_ratio=round(a99 / p99, 3),
        states_published=worker.stats.published,
        batches_adapted=worker.stats.batches,
        batches_skipped=worker.stats.skipped_batches,
        worker_errors=worker.stats.errors)
