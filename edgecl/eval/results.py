"""The typed results of the evaluations; each matches ``edgecl/schemas/eval-*.schema.json``.

``to_dict()`` / ``to_json()`` give the JSON of ``edgecl eval ... --json``. Keys that are
data (detector, domain, corruption, policy names) stay mappings; fixed structures are
dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgecl._result import FLAT, OMIT_NONE, JsonResult, flat

__all__ = [
    "AdaptFloors",
    "AdaptMethodResult",
    "AdaptResult",
    "DriftDetectorResult",
    "DriftResult",
    "DriftSeverityResult",
    "LoopClock",
    "LoopCloudFigures",
    "LoopCloudRun",
    "LoopDeltas",
    "LoopDeviceRun",
    "LoopGap",
    "LoopResult",
    "LoopStrategyResult",
    "OodDetectorResult",
    "OodResult",
    "OodSetResult",
    "SamplingPolicyResult",
    "SamplingResult",
]


# -- evaluate_ood ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OodSetResult:
    """One detector on one OOD set."""

    auroc: float
    fpr95: float


@dataclass(frozen=True, slots=True)
class OodDetectorResult:
    """One detector: its figures per OOD set (JSON: one key per set) and their mean AUROC."""

    sets: dict[str, OodSetResult] = field(metadata=FLAT)
    mean_auroc: float


@dataclass(frozen=True, slots=True)
class OodResult(JsonResult):
    """:func:`~edgecl.eval.evaluate_ood`: every detector against every OOD set."""

    SCHEMA = "eval-ood"
    convention: str
    id: str
    ood_sets: list[str]
    severity: int
    seed: int
    encoder_sha256: str
    detectors: dict[str, OodDetectorResult]
    #: Thresholds fitted on the calibration split, per detector.
    thresholds: dict[str, float]
    #: Sample counts: ``calibration``, ``id`` and one per OOD set.
    samples: dict[str, int]


# -- evaluate_drift -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DriftSeverityResult:
    """One detector at one severity, over all corruptions (delays in samples)."""

    median_delay: float | None
    p90_delay: float | None
    missed: int
    early_alarms: int
    #: Delay per corruption; None when missed.
    per_corruption: dict[str, int | None]


@dataclass(frozen=True, slots=True)
class DriftDetectorResult:
    """One drift detector: per severity (JSON keys ``severity_<s>``) and its false alarms."""

    params: dict[str, Any]
    severities: dict[int, DriftSeverityResult] = field(metadata=flat("severity_{}"))
    false_alarms_per_10k: float
    false_alarms: int
    clean_samples: int


@dataclass(frozen=True, slots=True)
class DriftResult(JsonResult):
    """:func:`~edgecl.eval.evaluate_drift`: detection delay and false alarms per detector."""

    SCHEMA = "eval-drift"
    score: str
    detectors: dict[str, DriftDetectorResult]


# -- evaluate_sampling ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SamplingPolicyResult:
    """What one policy selected; undefined figures are None."""

    selected: int
    selected_fraction: float
    error_rate_selected: float | None
    #: Mean pairwise cosine similarity of the selected samples' features.
    mean_similarity: float | None
    score_error_auroc: float | None


@dataclass(frozen=True, slots=True)
class SamplingResult(JsonResult):
    """:func:`~edgecl.eval.evaluate_sampling`: the policies at one budget on one stream."""

    SCHEMA = "eval-sampling"
    budget: float
    samples: int
    corruptions: list[str]
    #: ``"runtime"``, ``"energy"``, ``"callable"`` or None.
    ood_score: str | None
    policies: dict[str, SamplingPolicyResult]
    overall_error_rate: float
    error_ratio_vs_random: float | None
    max_error_ratio: float | None
    score_error_auroc: float | None
    floors: dict[str, float]
    floor_failures: list[str]
    seconds: float


# -- evaluate_adapt -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdaptMethodResult:
    """One test-time adaptation method on the stream."""

    mean_online_acc: float
    per_domain: dict[str, float]
    ms_per_sample: float
    max_class_share: float
    collapsed_windows: int
    collapsed: bool
    guard_resets: int
    worst_domain_delta: float


@dataclass(frozen=True, slots=True)
class AdaptFloors:
    """The best device method against the source, in accuracy points."""

    best_gain_points: float
    best_worst_domain_points: float
    collapsed: list[str]


@dataclass(frozen=True, slots=True)
class AdaptResult(JsonResult):
    """:func:`~edgecl.eval.evaluate_adapt`: prequential accuracy of each method."""

    SCHEMA = "eval-adapt"
    scenario: str
    samples: int
    batch: int
    domains: list[str]
    seed: int
    methods: dict[str, AdaptMethodResult]
    #: The best method other than ``source`` (when ``source`` and another method ran).
    best_device: str | None = field(default=None, metadata=OMIT_NONE)
    floors: AdaptFloors | None = field(default=None, metadata=OMIT_NONE)


# -- evaluate_loop --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoopDeviceRun:
    """The device-only strategy's own figures."""

    method: str
    states_published: int
    seconds: float


@dataclass(frozen=True, slots=True)
class LoopCloudRun:
    """A cloud strategy's own figures."""

    upload_fraction: float
    updates_applied: int
    updates_rejected_cloud: int
    updates_rejected_device: int
    rolled_back: int
    reverted: int
    shifts_detected: int
    seconds: float
    #: Updates the service served from its domain library (``cloud+memory``).
    updates_recalled: int = 0


@dataclass(frozen=True, slots=True)
class LoopDeltas:
    """Worst accuracy differences to ``source`` (present when ``source`` ran)."""

    worst_domain_delta: float
    first_200_worst_delta: float
    worst_visit_delta: float


@dataclass(frozen=True, slots=True)
class LoopStrategyResult:
    """One strategy of the loop; its ``device`` / ``cloud`` / ``deltas`` keys are merged
    into the JSON object when present."""

    mean_online_acc: float
    per_domain: dict[str, float]
    #: Accuracy over the first 200 samples of every visit, per domain.
    first_200: dict[str, float]
    #: Accuracy per visit, keyed ``domain#k``.
    per_visit: dict[str, float]
    #: Mean accuracy over the first 200 samples of every second and later visit of a
    #: domain (None: no domain is visited twice).
    revisit_acc_first_200: float | None = None
    #: Mean accuracy over the last 200 samples of every first visit of a domain that is
    #: visited again (None: none is).
    first_visit_acc_last_200: float | None = None
    device: LoopDeviceRun | None = field(default=None, metadata=FLAT)
    cloud: LoopCloudRun | None = field(default=None, metadata=FLAT)
    deltas: LoopDeltas | None = field(default=None, metadata=FLAT)


@dataclass(frozen=True, slots=True)
class LoopCloudFigures:
    """The ``cloud`` strategy's uploads and update medians (None without updates)."""

    upload_fraction: float
    update_bytes: int | None
    update_latency_s: float | None


@dataclass(frozen=True, slots=True)
class LoopClock:
    """The virtual clock of the cloud strategies: the device's ``pace`` (samples per
    simulated second), a sync every ``sync_s``, and the service's cost model: ``job_s`` per
    learning job (``workers`` at a time), ``label_per_s`` (None: labelling is instant)."""

    pace: float
    sync_s: float
    job_s: float
    label_per_s: float | None
    workers: int


@dataclass(frozen=True, slots=True)
class LoopGap:
    """Share of the teacher-source gap the cloud closed (None when there is no gap)."""

    gap_closed: float | None


@dataclass(frozen=True, slots=True)
class LoopResult(JsonResult):
    """:func:`~edgecl.eval.evaluate_loop`: every strategy on one scenario's stream."""

    SCHEMA = "eval-loop"
    scenario: str
    strategies: dict[str, LoopStrategyResult]
    samples: int
    domains: list[str]
    severity: int
    budget: float
    sync_every: int
    seed: int
    #: Merged into the JSON when the ``cloud`` strategy ran.
    cloud: LoopCloudFigures | None = field(default=None, metadata=FLAT)
    #: Merged into the JSON when ``source``, ``teacher`` and ``cloud`` ran.
    gap: LoopGap | None = field(default=None, metadata=FLAT)
    #: The virtual clock the cloud strategies ran on.
    clock: LoopClock | None = None
