"""Drift detection over a stream of per-sample scores (numpy only).

Feed a detector one score per sample, where a higher score means a more unusual sample
(an OOD score such as energy ``-logsumexp(logits)``, or ``1 - confidence``). It returns a
:class:`DomainShift` when the score distribution has changed, then re-baselines on the
samples that follow, so later shifts are detected too.

* ``"ks"`` (:class:`KSWindowDetector`): two-sample Kolmogorov-Smirnov test of a recent
  sliding window against a reference window; sensitive to any change of distribution.
* ``"page_hinkley"`` (:class:`PageHinkley`): sequential Page-Hinkley test of the mean,
  O(1) per sample.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> stream = np.concatenate([rng.normal(0, 1, 1000), rng.normal(2, 1, 500)])
>>> det = create_drift_detector("ks")
>>> shifts = det.update_many(stream)
>>> [(s.detector, 1000 <= s.index < 1064) for s in shifts]
[('ks', True)]
"""

from __future__ import annotations

from typing import Any

from edgecl._exceptions import ConfigError
from edgecl.ood._drift_base import DomainShift, DriftDetector
from edgecl.ood._ks import KSWindowDetector, kolmogorov_sf, ks_2samp_pvalue, ks_2samp_statistic
from edgecl.ood._page_hinkley import PageHinkley

__all__ = [
    "DomainShift",
    "DriftDetector",
    "KSWindowDetector",
    "PageHinkley",
    "create_drift_detector",
    "kolmogorov_sf",
    "ks_2samp_pvalue",
    "ks_2samp_statistic",
    "list_drift_detectors",
]

_DETECTORS: dict[str, type[DriftDetector]] = {
    cls.name: cls for cls in (KSWindowDetector, PageHinkley)
}


def list_drift_detectors() -> list[str]:
    """Names of the registered drift detectors."""
    return sorted(_DETECTORS)


def create_drift_detector(name: str, **hp: Any) -> DriftDetector:
    """Build the drift detector registered as ``name`` with hyperparameters ``hp``."""
    cls = _DETECTORS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ConfigError(f"unknown drift detector {name!r}; known: {list_drift_detectors()}")
    try:
        return cls(**hp)
    except TypeError as exc:
        raise ConfigError(f"bad hyperparameters for {name!r}: {exc}") from exc
