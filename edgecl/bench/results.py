"""The typed results of ``edgecl bench``; each matches ``edgecl/schemas/bench-*.schema.json``.

Latencies are milliseconds (``_ms``) or microseconds (``_us``), medians unless named p99.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgecl._result import OMIT_NONE, JsonResult

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
]


# -- bench_device ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OodOverhead:
    """One OOD detector on the batch-1 predict path (:func:`bench_ood_overhead`)."""

    predict_ms_b1: float
    with_ood_ms_b1: float
    with_ood_p99_ms_b1: float
    added_us_b1: float
    added_pct_b1: float
    #: Total time of the scored blocks, collector worker included, over the plain ones.
    throughput_added_pct: float
    selected: int


@dataclass(frozen=True, slots=True)
class ModelBench:
    """One model: SDK predict vs bare onnxruntime vs torch eager at batch 1 and 32."""

    sdk_ms_b1: float
    sdk_p99_ms_b1: float
    ort_ms_b1: float
    ort_p99_ms_b1: float
    torch_ms_b1: float
    torch_p99_ms_b1: float
    overhead_b1: float
    torch_over_ort_b1: float
    sdk_ms_b32: float
    sdk_p99_ms_b32: float
    ort_ms_b32: float
    ort_p99_ms_b32: float
    torch_ms_b32: float
    torch_p99_ms_b32: float
    overhead_b32: float
    torch_over_ort_b32: float
    added_us_b1: float
    #: OOD scoring + sampling overhead per detector of the bundle.
    ood: dict[str, OodOverhead]


@dataclass(frozen=True, slots=True)
class DeviceMachine:
    """Where ``bench device`` ran."""

    cpus: int | None
    cpu_model: str
    onnxruntime: str
    torch: str
    numpy: str


@dataclass(frozen=True, slots=True)
class TorchReference:
    """What the torch eager figures of each model ran."""

    tiny: str
    edge: str


@dataclass(frozen=True, slots=True)
class DeviceBenchResult(JsonResult):
    """:func:`~edgecl.bench.bench_device`: the ``tiny`` and ``edge`` models, and peak RSS."""

    SCHEMA = "bench-device"
    threads: int
    calls: int
    warmup: int
    machine: DeviceMachine
    torch_reference: TorchReference
    tiny: ModelBench
    edge: ModelBench
    rss_mb: float
    rss_mb_b32: float
    rss_mb_with_ood: float
    rss_note: str


# -- bench_cloud ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CloudMachine:
    """Where ``bench cloud`` ran."""

    cores: int | None
    cpu: str


@dataclass(frozen=True, slots=True)
class CloudBenchResult(JsonResult):
    """:func:`~edgecl.bench.bench_cloud`: uploads and RPC latency per concurrency (keys
    ``c<devices>``), and the teacher's labelling rate through the service vs raw."""

    SCHEMA = "bench-cloud"
    uploads_per_s: dict[str, float]
    rpc_p50_ms: dict[str, float]
    rpc_p99_ms: dict[str, float]
    batch_samples: int
    uploads_per_device: int
    torch_threads: int
    variant: str
    machine: CloudMachine
    torch: str
    teacher_ratio: float
    teacher_samples_per_s_service: float
    teacher_samples_per_s_raw: float
    teacher_batch: int
    teacher_rounds: int
    replicas: int = 1
    registry: str = "sqlite"
    replica_rss_mb: float = 0.0
    #: With ``--subscribers``: streams ``held`` of those ``opened``, and the Upload p99 at
    #: ``devices`` devices ``upload_p99_ms_with`` / ``_without`` them (medians of rounds).
    subscribers: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SoakBenchResult(JsonResult):
    """:func:`~edgecl.bench.bench_soak`: ``devices`` devices upload for ``minutes`` to an
    ``edgecl serve`` subprocess; acknowledged vs stored samples, server RSS over time,
    client error codes, acknowledged and labelled rates."""

    SCHEMA = "bench-soak"
    devices: int
    minutes: float
    variant: str
    rate_per_device: float
    rss_every_s: float
    run_s: float
    samples_put: int
    #: Distinct samples the service acknowledged (accepted or duplicate).
    acked: int
    #: Samples in the registry after the server stopped.
    stored: int
    #: ``acked - stored``: acknowledged samples missing from the registry (must be 0).
    lost: int
    #: Whether every outbox was empty at the end.
    drained: bool
    labelled: int
    acked_per_s: float
    labelled_per_s: float
    rss_first_minute_mb: float
    rss_final_mb: float
    rss_peak_mb: float
    #: Final RSS over the RSS at one minute, in percent.
    rss_growth_pct: float
    #: ``[seconds since start, MiB]`` pairs of the server process.
    rss_mb: list[list[float]]
    #: Failed client calls by gRPC status code.
    errors: dict[str, int]
    machine: CloudMachine


# -- bench_swap / bench_adapt ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SwapBenchResult(JsonResult):
    """:func:`~edgecl.bench.bench_swap`: predict latency while updates are applied."""

    SCHEMA = "bench-swap"
    predict_p50_ms: float
    predict_p99_ms: float
    predict_p50_ms_swapping: float
    predict_p99_ms_swapping: float
    p99_ratio: float
    apply_ms_p50: float
    apply_ms_p99: float
    swap_us_p50: float
    swap_us_p99: float
    swaps: int
    calls_per_mode: int
    threads: int
    swaps_per_s: float
    #: Which bundle ran (set by ``edgecl bench swap``).
    bundle: str | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True, slots=True)
class AdaptBenchResult(JsonResult):
    """:func:`~edgecl.bench.bench_adapt`: predict latency with the adaptation worker on/off."""

    SCHEMA = "bench-adapt"
    method: str
    batch: int
    threads: int
    calls_per_mode: int
    predict_p50_ms_off: float
    predict_p99_ms_off: float
    predict_p50_ms_on: float
    predict_p99_ms_on: float
    p50_ratio: float
    p99_ratio: float
    states_published: int
    batches_adapted: int
    batches_skipped: int
    worker_errors: int
    #: Which bundle ran (set by ``edgecl bench adapt``).
    bundle: str | None = field(default=None, metadata=OMIT_NONE)
