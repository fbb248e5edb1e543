"""Benchmarks behind ``edgecl bench``: measured in one run, interleaved, medians and p99.

- :func:`bench_device`: SDK predict vs bare onnxruntime vs torch eager, OOD overhead, RSS.
- :func:`bench_cloud`: upload throughput, RPC latency and the teacher's labelling rate.
- :func:`bench_swap`: hot-swap latency and predict latency during swaps.
- :func:`bench_adapt`: predict latency with the adaptation worker on vs off.
- :func:`bench_soak`: many devices for minutes: lost samples, server RSS growth, errors.

Each returns a typed result (see :mod:`edgecl.bench.results`) whose ``to_json()`` matches
the JSON Schema in ``edgecl/schemas/``.
"""

from __future__ import annotations

from edgecl.bench.adapt import bench_adapt
from edgecl.bench.cloud import bench_cloud
from edgecl.bench.device import bench_device
from edgecl.bench.ood import bench_ood_overhead
from edgecl.bench.results import (
    AdaptBenchResult,
    CloudBenchResult,
    CloudMachine,
    DeviceBenchResult,
    DeviceMachine,
    ModelBench,
    OodOverhead,
    SoakBenchResult,
    SwapBenchResult,
    TorchReference,
)
from edgecl.bench.soak import bench_soak
from edgecl.bench.swap import bench_swap

__all__ = [
    "AdaptBenchResult",
    "CloudBenchResult",
    "CloudMachine",
    "DeviceBenchResult",
    "DeviceMachine",
    "ModelBench",
    "OodOverhead",
    "SoakBenchResult",
    "SwapBenchResult",
    "TorchReference",
    "bench_adapt",
    "bench_cloud",
    "bench_device",
    "bench_ood_overhead",
    "bench_soak",
    "bench_swap",
]
