"""``edgecl eval adapt``: prequential test-time adaptation on the zoo's streams.

Every method sees the stream in batches, predicts a batch first and adapts on it after
(online accuracy = accuracy of those predictions). Encoder features are computed once per
stream (the encoder is frozen; every method starts from the same raw features), so the
reported ``ms_per_sample`` is the method's own cost on top of predict.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.eval.results import AdaptFloors, AdaptMethodResult, AdaptResult

SCENARIOS = ("continual", "gradual", "recurring", "label-shift")
DEFAULT_METHODS = ("source", "lame", "adanpc", "tent", "eata", "cotta", "align",
                   "align+lame", "align+tent", "align+eata", "align+cotta")
COLLAPSE_WINDOW, COLLAPSE_SHARE, COLLAPSE_MARGIN = 500, 0.9, 0.05


def scenario_stream(scenario: str, *, seed: int = 0, samples: int | None = None) -> Any:
    """The zoo stream behind ``scenario`` (severity 5 where it applies): continual =
    10 corruptions x 2,000 samples (20,000), gradual = 5 corruptions ramped 1-5-1 x 100,
    recurring = 10 corruptions x 200 x 3 cycles, label-shift = 10 clean windows of 300
    with Dirichlet(0.3) class proportions. ``samples`` overrides the per-domain count."""
    from edgecl.zoo.streams import (
        DEFAULT_CORRUPTIONS,
        continual_stream,
        gradual_stream,
        label_shift_stream,
        recurring_stream,
    )

    ten = list(DEFAULT_CORRUPTIONS[:10])
    if scenario == "continual":
        return continual_stream(ten, severity=5, samples_per_domain=samples or 2000, seed=seed)
    if scenario == "gradual":
        return gradual_stream(ten[:5], samples_per_severity=samples or 100, seed=seed)
    if scenario == "recurring":
        return recurring_stream(ten, severity=5, samples_per_domain=samples or 200, seed=seed)
    if scenario == "label-shift":
        return label_shift_stream(windows=10, samples_per_window=samples or 300, seed=seed)
    raise ConfigError(f"unknown scenario {scenario!r}; use one of {SCENARIOS}")


def window_shares(labels: np.ndarray, window: int = COLLAPSE_WINDOW) -> np.ndarray:
    """Share of the most frequent class in each ``window`` consecutive predictions (windows
    stepped by ``window // 5``; one window when the stream is shorter)."""
    window = min(window, len(labels))
    starts = range(0, len(labels) - window + 1, max(window // 5, 1))
    return np.array([np.bincount(labels[s:s + window]).max() / window for s in starts])


def collapsed_windows(pred: np.ndarray, source_pred: np.ndarray,
                      share: float = COLLAPSE_SHARE, margin: float = COLLAPSE_MARGIN) -> int:
    """Windows where one class takes more than ``share`` of the predictions and the source
    model's predictions of the same samples are less concentrated by more than ``margin``
    (the source is itself degenerate on some corruptions: only making it worse counts)."""
    ours, theirs = window_shares(pred), window_shares(source_pred)
    return int(((ours > share) & (ours > theirs + margin)).sum())


def _per_domain(correct: np.ndarray, domains: np.ndarray, names: list[str]) -> dict[str, float]:
    return {names[k]: round(float(correct[domains == k].mean()), 4)
            for k in np.unique(domains)}


def evaluate_adapt(zoo: Any, *, scenario: str = "continual",
                   methods: Sequence[str] = DEFAULT_METHODS, batch: int = 64,
                   samples: int | None = None, seed: int = 0,
                   progress: bool = False) -> AdaptResult:
    """Online accuracy of each method on the scenario's stream.

    Returns an :class:`~edgecl.eval.results.AdaptResult`, as JSON ``{"methods": {name:
    {"mean_online_acc", "per_domain", "ms_per_sample", "max_class_share",
    "collapsed_windows", "collapsed", "guard_resets", "worst_domain_delta"}},
    "best_device", "floors", ...}`` (``edgecl/schemas/eval-adapt.schema.json``). ``source``
    is the unadapted baseline. Each method runs inside a
    :class:`~edgecl.adapt.CollapseGuard` (as a device would run it); a collapsed window:
    one class took > 90% of 500 consecutive predictions, more than 5 points above the
    source's top share on the same samples.
    """
    from tqdm import tqdm

    from edgecl.adapt import EATA, CollapseGuard, adapter_for
    from edgecl.device import DeviceRuntime
    from edgecl.zoo import KNOWN_CLASSES, load_mnist

    if batch < 1:
        raise ConfigError("batch must be >= 1")
    stream = scenario_stream(scenario, seed=seed, samples=samples)
    images, labels, domains = stream.arrays()
    names = [d.name for d in stream.domains]
    rt = DeviceRuntime.open(zoo.student_bundle)
    feats = np.concatenate([rt.encode(images[i:i + 512]) for i in range(0, len(images), 512)])
    source_logits = rt.state.head.logits(feats)
    source_pred = source_logits.argmax(axis=1)
    source_correct = source_pred == labels
    calib = load_mnist().calibration.only(KNOWN_CLASSES)  # EATA's Fisher (source data)
    results: dict[str, AdaptMethodResult] = {}
    for name in tqdm(list(methods), desc=f"eval adapt ({scenario})", disable=not progress):
        if name == "source":
            pred, ms, resets = source_pred, 0.0, 0
        else:
            method = adapter_for(rt, name, guard=True)
            inner = method.inner if isinstance(method, CollapseGuard) else method
            eata = getattr(inner, "inner", inner)
            if isinstance(eata, EATA):
                eata.seed(rt.encode(calib.images))
            chunks = []
            started = time.perf_counter()
            for i in range(0, len(labels), batch):
                sl = slice(i, i + batch)
                chunks.append(method.adapt(feats[sl], source_logits[sl],
                                           images=images[sl] if method.uses_images else None
                                           ).argmax(axis=1))
            ms = (time.perf_counter() - started) * 1e3 / len(labels)
            pred = np.concatenate(chunks)
            resets = len(method.events) if isinstance(method, CollapseGuard) else 0
        correct = pred == labels
        collapsed = collapsed_windows(pred, source_pred)
        per_domain = _per_domain(correct, domains, names)
        source_domain = _per_domain(source_correct, domains, names)
        results[name] = AdaptMethodResult(
            mean_online_acc=round(float(correct.mean()), 4),
            per_domain=per_domain,
            ms_per_sample=round(ms, 4),
            max_class_share=round(float(window_shares(pred).max()), 3),
            collapsed_windows=collapsed,
            collapsed=collapsed > 0,
            guard_resets=resets,
            worst_domain_delta=round(min(per_domain[k] - source_domain[k]
                                         for k in per_domain), 4),
        )
    best: str | None = None
    floors: AdaptFloors | None = None
    device = {k: v for k, v in results.items() if k != "source"}
    if device and "source" in results:
        best = max(device, key=lambda k: device[k].mean_online_acc)
        src = results["source"].mean_online_acc
        floors = AdaptFloors(
            best_gain_points=round(100 * (device[best].mean_online_acc - src), 2),
            best_worst_domain_points=round(100 * device[best].worst_domain_delta, 2),
            collapsed=sorted(k for k, v in device.items() if v.collapsed),
        )
    return AdaptResult(scenario=scenario, samples=len(labels), batch=batch, domains=names,
                       seed=seed, methods=results, best_device=best, floors=floors)
