"""The typed result of ``edgecl simulate`` (``edgecl/schemas/simulate.schema.json``).

The figures are described in :mod:`edgecl.fleet._metrics`; the raw per-device logs the
simulator collects stay plain dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgecl._result import OMIT_NONE, JsonResult
from edgecl.fleet._plans import Impairments

__all__ = ["CloudCost", "DeviceSummary", "RolloutRecord", "RolloutWaveRecord",
           "SimulationReport", "SimulationResult", "StrategySummary", "UpdateCounts"]


@dataclass(frozen=True, slots=True)
class UpdateCounts:
    """Cloud updates summed over the devices of a strategy."""

    applied: int
    rejected: int
    rolled_back: int


@dataclass(frozen=True, slots=True)
class DeviceSummary:
    """One device's own figures in one strategy."""

    device_id: str
    group: str
    #: None when the device predicted nothing.
    mean_online_acc: float | None
    samples: int
    uploads: int
    bytes_up: int
    bytes_down: int
    updates_applied: int
    updates_rejected: int
    rolled_back: int
    states_adapted: int
    failed_calls: int
    offline_s: float
    pace: float
    slow: bool
    forgetting: float | None
    seconds: float


@dataclass(frozen=True, slots=True)
class RolloutWaveRecord:
    """One wave of a staged rollout: devices admitted, when (simulated seconds), and how
    many of them applied or refused the version."""

    wave: int
    devices: int
    started_s: float
    applied: int
    refused: int


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    """One version's rollout in a simulation with a staged or manual policy."""

    target: str
    version: int
    state: str
    reason: str
    waves: list[RolloutWaveRecord]


@dataclass(frozen=True, slots=True)
class StrategySummary:
    """One strategy over the whole fleet (``strategies.<name>``)."""

    mean_online_acc: float
    per_domain: dict[str, float]
    #: ``(start_fraction, accuracy)`` per slice of the devices' streams; None when empty.
    accuracy_over_time: list[tuple[float, float | None]]
    bytes_up_per_device: float
    bytes_down_per_device: float
    upload_fraction: float
    update_latency_s: float | None
    updates: UpdateCounts
    ood_auroc: float | None
    forgetting: float | None
    samples: int
    per_device: list[DeviceSummary]
    #: Accuracy of the devices that joined late (``late-joiner``) over their first 200
    #: samples in each corrupted domain; None without late devices.
    joiner_acc_first_200: float | None = None
    #: Every version's rollout, when the service ran a staged or manual policy.
    rollouts: list[RolloutRecord] | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True, slots=True)
class CloudCost:
    """Simulated seconds the service takes: ``job_s`` per learning job (``workers`` at a
    time), ``label_per_s`` samples labelled per second, a round every ``sync_s``."""

    job_s: float
    label_per_s: float
    workers: int
    sync_s: float


@dataclass(frozen=True, slots=True)
class SimulationReport:
    """Where the HTML report, its plots and (when written) its JSON result are."""

    html: str
    plots: list[str]
    json: str | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True, slots=True)
class SimulationResult(JsonResult):
    """:func:`~edgecl.fleet.simulate`: the fleet's settings and every strategy's figures."""

    SCHEMA = "simulate"
    scenario: str
    devices: int
    samples_per_device: int
    steps: int
    batch: int
    seed: int
    pace: float
    budget: float
    domains_per_device: int
    backend: str
    cloud_mode: str
    #: How devices are grouped (a sentence).
    groups: str
    impairments: Impairments
    strategies: dict[str, StrategySummary]
    #: Wall-clock seconds (a measurement; also ``wall_seconds``).
    seconds: float
    #: "virtual": cloud strategies ran on simulated time (reproducible); "real": paced by
    #: the wall clock.
    clock: str = "virtual"
    #: Whether devices watched their raw inputs for domain changes (``watch_inputs``).
    watch_inputs: bool = False
    simulated_seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    #: The virtual clock's model of cloud compute; None in real time.
    cloud_cost: CloudCost | None = field(default=None, metadata=OMIT_NONE)
    #: Set when a report directory was given.
    report: SimulationReport | None = field(default=None, metadata=OMIT_NONE)
