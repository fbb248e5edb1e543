"""Evaluation harnesses: the reference benchmarks behind ``edgecl eval ...``.

This package sits above the libraries it measures (``ood``, ``adapt``, ``device``,
``cloud``, ``fleet``) and the reference zoo; nothing in those imports it.

- :func:`evaluate_ood`: every OOD detector against corruptions and novel classes.
- :func:`evaluate_drift`: drift detectors on the zoo's continual stream (delay, false alarms).
- :func:`evaluate_sampling`: which sampling policy picks the samples the student gets wrong.
- :func:`evaluate_adapt`: prequential test-time adaptation on the zoo's streams.
- :func:`evaluate_loop`: the cloud-device loop on one of :data:`LOOP_SCENARIOS`.

Each returns a typed result (see :mod:`edgecl.eval.results`) whose ``to_json()`` matches
the JSON Schema in ``edgecl/schemas/``.
"""

from __future__ import annotations

from edgecl.eval.adapt import evaluate_adapt
from edgecl.eval.drift import evaluate_drift, stream_scores
from edgecl.eval.loop import LOOP_SCENARIOS, build_loop_stream, evaluate_loop
from edgecl.eval.ood import evaluate_ood
from edgecl.eval.results import (
    AdaptFloors,
    AdaptMethodResult,
    AdaptResult,
    DriftDetectorResult,
    DriftResult,
    DriftSeverityResult,
    LoopClock,
    LoopCloudFigures,
    LoopCloudRun,
    LoopDeltas,
    LoopDeviceRun,
    LoopGap,
    LoopResult,
    LoopStrategyResult,
    OodDetectorResult,
    OodResult,
    OodSetResult,
    SamplingPolicyResult,
    SamplingResult,
)
from edgecl.eval.sampling import evaluate_sampling

__all__ = [
    "AdaptFloors",
    "AdaptMethodResult",
    "AdaptResult",
    "DriftDetectorResult",
    "DriftResult",
    "DriftSeverityResult",
    "LOOP_SCENARIOS",
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
    "build_loop_stream",
    "evaluate_adapt",
    "evaluate_drift",
    "evaluate_loop",
    "evaluate_ood",
    "evaluate_sampling",
    "stream_scores",
]
