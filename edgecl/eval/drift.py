"""Benchmark of the drift detectors on zoo streams scored by the zoo student.

See :func:`evaluate_drift`. Needs the zoo (``edgecl[sim]``) and onnxruntime; the student
runs through :class:`~edgecl.device.DeviceRuntime` in batches and the detectors then see
the scores one by one, as they would on a device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.eval.results import DriftDetectorResult, DriftResult, DriftSeverityResult
from edgecl.ood import DriftDetector, create_drift_detector

SCORES = ("energy", "msp")
_BATCH = 512


def stream_scores(logits: np.ndarray, score: str = "energy") -> np.ndarray:
    """Per-sample scores, higher = more unusual: ``energy = -logsumexp(logits)`` or
    ``msp = 1 - max softmax(logits)``."""
    if score not in SCORES:
        raise ConfigError(f"score must be one of {SCORES}, got {score!r}")
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(axis=1)
    lse = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
    return -lse if score == "energy" else 1.0 - np.exp(top - lse)


def _detectors(detectors: Sequence[str | DriftDetector]) -> dict[str, DriftDetector]:
    if isinstance(detectors, (str, DriftDetector)):
        detectors = [detectors]
    out: dict[str, DriftDetector] = {}
    for d in detectors:
        det = create_drift_detector(d) if isinstance(d, str) else d
        if not isinstance(det, DriftDetector):
            raise ConfigError(f"detectors must be names or DriftDetector objects, got {d!r}")
        if det.name in out:
            raise ConfigError(f"detector {det.name!r} given twice")
        out[det.name] = det
    if not out:
        raise ConfigError("detectors must not be empty")
    return out


def _count(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _quantile(delays: list[float], q: float) -> float | None:
    """Upper ``q``-quantile (no interpolation); None when it falls on a missed shift."""
    v = float(np.quantile(np.asarray(delays, dtype=np.float64), q, method="higher"))
    return v if np.isfinite(v) else None


def evaluate_drift(
    zoo: Any,
    *,
    detectors: Sequence[str | DriftDetector] = ("ks", "page_hinkley"),
    severities: Sequence[int] = (3, 5),
    corruptions: Sequence[str] | None = None,
    clean_before: int = 512,
    shifted: int = 512,
    clean_samples: int = 10_000,
    score: str = "energy",
    seed: int = 0,
) -> DriftResult:
    """Detection delay and false-alarm rate of drift detectors on the zoo student's scores.

    For each corruption (default: all of :func:`~edgecl.zoo.list_corruptions`) and
    severity, a zoo :func:`~edgecl.zoo.streams.continual_stream` of ``clean_before`` clean
    known-class test samples followed by ``shifted`` corrupted ones is scored by the student
    and fed to a freshly reset detector. The *delay* is the index of the first detection at
    or after the change minus the change index; detections before the change are counted as
    ``early_alarms``; no detection within the shifted segment is a *miss* (delay None).

    The median and p90 are taken over **all** corruptions, with missed ones counted as
    infinitely late, so misses raise them: they are the upper empirical quantiles (no
    interpolation), and None when they fall on a miss. Some corruptions (e.g. ``jpeg``,
    ``elastic``, ``shot_noise``) barely change the student and may well be missed.

    False alarms: each detector runs over ``clean_samples`` known-class test images drawn
    with replacement (seeded); every detection is a false alarm, reported per 10,000 samples.

    Parameters
    ----------
    zoo : a built zoo (:func:`~edgecl.zoo.build_zoo`); its ``student_bundle`` is scored.
    detectors : registered names (default hyperparameters) or configured detectors.
    score : ``"energy"`` (``-logsumexp(logits)``), ``"msp"`` (``1 - max softmax``), or the
        name of an OOD detector stored in the bundle (e.g. ``"vim"``, the runtime's
        default), whose ``ood_score`` the runtime reports.

    Returns
    -------
    DriftResult
        ``{"score", "detectors": {name: {"params", "severity_<s>": {"median_delay",
        "p90_delay", "missed", "early_alarms", "per_corruption": {corruption: delay}},
        "false_alarms_per_10k", "false_alarms", "clean_samples"}}}`` as JSON
        (``edgecl/schemas/eval-drift.schema.json``); ``severity_<s>`` is
        ``detectors[name].severities[s]``.
    """
    from edgecl.device import DeviceRuntime
    from edgecl.zoo import KNOWN_CLASSES, list_corruptions, load_mnist
    from edgecl.zoo.streams import continual_stream

    dets = _detectors(detectors)
    clean_before, shifted = _count("clean_before", clean_before), _count("shifted", shifted)
    clean_samples, seed = _count("clean_samples", clean_samples), _count("seed", seed, 0)
    names = list(list_corruptions() if corruptions is None else corruptions)
    if isinstance(severities, int):
        severities = (severities,)
    sevs = [int(s) for s in severities]
    if not names or not sevs:
        raise ConfigError("corruptions and severities must not be empty")

    # a logit score, or the OOD score of one of the bundle's detectors (as on a device)
    rt = DeviceRuntime.open(zoo.student_bundle, ood=None if score in SCORES else score)

    def scores_of(images: np.ndarray) -> np.ndarray:
        preds = [rt.predict(images[i : i + _BATCH]) for i in range(0, len(images), _BATCH)]
        if score not in SCORES:
            return np.concatenate([p.ood_score for p in preds]).astype(np.float64)
        return stream_scores(np.concatenate([p.logits for p in preds]), score)

    n = max(clean_before, shifted)
    params = {k: d.params for k, d in dets.items()}
    per_sev: dict[str, dict[int, DriftSeverityResult]] = {k: {} for k in dets}
    for sev in sevs:
        delays: dict[str, dict[str, int | None]] = {k: {} for k in dets}
        early = dict.fromkeys(dets, 0)
        for name in names:
            stream = continual_stream(
                [name], severity=sev, samples_per_domain=n, seed=seed, include_clean_first=True
            )
            images = stream.arrays()[0][n - clean_before : n + shifted]
            values = scores_of(images)
            for k, det in dets.items():
                det.reset()
                idx = [s.index for s in det.update_many(values)]
                after = [i - clean_before for i in idx if i >= clean_before]
                early[k] += sum(i < clean_before for i in idx)
                delays[k][name] = after[0] if after else None
        for k in dets:
            per = delays[k]
            finite = [np.inf if v is None else float(v) for v in per.values()]
            per_sev[k][sev] = DriftSeverityResult(
                median_delay=_quantile(finite, 0.5),
                p90_delay=_quantile(finite, 0.9),
                missed=sum(v is None for v in per.values()),
                early_alarms=early[k],
                per_corruption=per,
            )

    test = load_mnist().test.only(KNOWN_CLASSES)
    pool = scores_of(np.asarray(test.images, dtype=np.float32))  # deterministic per image
    clean = pool[np.random.default_rng(seed).integers(0, len(pool), clean_samples)]
    results: dict[str, DriftDetectorResult] = {}
    for k, det in dets.items():
        det.reset()
        alarms = len(det.update_many(clean))
        results[k] = DriftDetectorResult(
            params=params[k],
            severities=per_sev[k],
            false_alarms_per_10k=alarms * 10_000 / clean_samples,
            false_alarms=alarms,
            clean_samples=clean_samples,
        )
    return DriftResult(score=score, detectors=results)
