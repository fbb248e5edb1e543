"""Cost of OOD scoring + uncertainty-guided sampling on the predict path (``bench device``)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecl.bench._timing import summary_ms
from edgecl.bench.results import OodOverhead


def bench_ood_overhead(bundle: Path, *, calls: int, warmup: int, threads: int,
                       block: int = 20) -> dict[str, OodOverhead]:
    """For every detector in the bundle: batch-1 predict scoring with it and offering each
    prediction to a :class:`~edgecl.device.SampleCollector`, vs plain predict.

    One runtime and one onnxruntime session; blocks of ``block`` calls alternate between a
    state without a detector and a state with it (A B A B ...). ``added_pct_b1`` compares
    median latencies (what the caller waits for). The collector's worker (policy, drift
    detector, outbox) runs beside predict; ``throughput_added_pct`` includes its cost: the
    scored blocks' total time, including draining the worker, over the plain blocks'.
    """
    from edgecl.device import DeviceRuntime, Outbox, SampleCollector, create_policy
    from edgecl.ood import KSWindowDetector

    rt = DeviceRuntime.open(bundle, threads=threads, ood=None)
    spec = rt.bundle.input_spec
    lo, hi = spec.value_range
    frames = (lo + (hi - lo) * np.random.default_rng(0).random((64, *spec.shape))
              ).astype(np.float32)
    out: dict[str, OodOverhead] = {}
    with tempfile.TemporaryDirectory() as tmp:
        outbox = Outbox(Path(tmp) / "outbox.db", store=("image", "features"))
        for name in sorted(rt.detectors):
            collector = SampleCollector(outbox, create_policy("uncertainty", fraction=0.05),
                                        drift=KSWindowDetector(), min_batch=block)
            out[name] = _measure(rt, name, collector, frames, calls=calls, warmup=warmup,
                                 block=block)
            collector.close()
        outbox.close()
    return out


def _measure(rt: Any, name: str, collector: Any, frames: np.ndarray, *, calls: int,
             warmup: int, block: int) -> OodOverhead:
    clock = time.perf_counter
    times: dict[str, list[float]] = {"plain": [], "scored": []}
    totals = {"plain": 0.0, "scored": 0.0}
    skip = max(1, warmup // block)
    for r in range(skip + max(1, -(-calls // block))):
        for mode in ("plain", "scored"):
            rt.use_detector(None if mode == "plain" else name)
            t_block = clock()
            for i in range(block):
                x = frames[(i + 7 * r) % len(frames)]
                t0 = clock()
                pred = rt.predict(x, return_features=True)
                if mode == "scored":
                    collector.offer(x, pred)
                elapsed = clock() - t0
                if r >= skip:
                    times[mode].append(elapsed)
            if mode == "scored":
                collector.flush()
            if r >= skip:
                totals[mode] += clock() - t_block
    base, _ = summary_ms(np.array(times["plain"]))
    with_ood, p99 = summary_ms(np.array(times["scored"]))
    return OodOverhead(
        predict_ms_b1=round(base, 4), with_ood_ms_b1=round(with_ood, 4),
        with_ood_p99_ms_b1=round(p99, 4),
        added_us_b1=round((with_ood - base) * 1e3, 2),
        added_pct_b1=round((with_ood / base - 1.0) * 100.0, 2),
        throughput_added_pct=round((totals["scored"] / totals["plain"] - 1.0) * 100, 2),
        selected=collector.stats().selected)
