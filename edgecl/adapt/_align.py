"""Test-time feature alignment: re-standardise encoder features to the source statistics.

Batch-norm adaptation (Schneider et al., NeurIPS 2020: recompute normalisation statistics on
test data) is the strongest cheap fix for covariate shift, but a device's encoder is a
frozen ONNX graph. We apply the same idea at its output: per feature dimension, the mean
and variance over a sliding window of recent samples are mapped to the source statistics
(``feature_stats.npz`` in the bundle), ``f' = (f - mu_w) / sd_w * sd_s + mu_s``, a
:class:`~edgecl.heads.FeatureNorm` that a :class:`~edgecl.device.ModelState` carries.

Prequential: a batch is predicted with the statistics of the samples before it, then joins
the window. Window statistics confuse a label shift with a covariate shift, so alignment is
gated by an OOD detector: it is active only while more than ``gate_share`` of the window is
flagged out-of-distribution (a clean stream with skewed classes stays untouched). When a
batch (of at least 16) lies far from the window (its mean feature is more than ``reset_z``
window standard deviations away, averaged over dimensions) the domain changed: the window
restarts from that batch instead of mixing two domains' statistics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError, InvalidInput
from edgecl.adapt._base import ParametricAdapter
from edgecl.adapt._lame import _softmax
from edgecl.bundle import FeatureStats
from edgecl.heads import FeatureNorm, Head, LowRankAdapter

_RESET_MIN_BATCH = 16  # smaller batches are too noisy to call a domain change


class FeatureAlign(ParametricAdapter):
    """Sliding-window feature alignment to the source statistics, gated by OOD share."""

    name = "align"

    def __init__(self, head: Head, source: FeatureStats, *,
                 adapter: LowRankAdapter | None = None, detector: Any = None,
                 window: int = 128, min_samples: int = 16, gate_share: float = 0.35,
                 reset_z: float | None = 0.5, eps: float = 1e-6) -> None:
        if window < 2 or not 2 <= min_samples <= window:
            raise ConfigError("need window >= 2 and 2 <= min_samples <= window")
        if not 0 <= gate_share < 1:
            raise ConfigError("gate_share must be in [0, 1)")
        if reset_z is not None and not reset_z > 0:
            raise ConfigError("reset_z must be > 0 (or None: never restart the window)")
        if source.mean.shape != (head.feature_dim,):
            raise ConfigError(f"source statistics have {source.mean.shape[0]} dimensions, the "
                              f"head takes {head.feature_dim}")
        if detector is not None and getattr(detector, "threshold", None) is None:
            raise ConfigError("the gate detector is not fitted")
        self.head, self.adapter, self.source, self.detector = head, adapter, source, detector
        self.window, self.min_samples, self.gate_share, self.eps = (
            window, min_samples, gate_share, eps)
        self.reset_z = reset_z
        self.restarts = 0
        self.reset()

    def hyperparameters(self) -> dict[str, Any]:
        return {"window": self.window, "min_samples": self.min_samples,
                "gate_share": self.gate_share, "reset_z": self.reset_z, "eps": self.eps}

    def reset(self) -> None:
        d = self.head.feature_dim
        self._ring = np.zeros((self.window, d))  # the window, as a ring buffer of rows
        self._flags = np.zeros(self.window, dtype=bool)
        self._count = self._next = 0
        self._norm: FeatureNorm | None = None
        self._dirty = False

    @property
    def active(self) -> bool:
        """Whether the current state aligns (enough samples, gate open)."""
        return self._current() is not None

    def state_changes(self) -> dict[str, Any]:
        return {"feature_norm": self._current()}

    def transform(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features and logits under the current state (aligned when active)."""
        norm = self._current()
        f = features if norm is None else norm.apply(features)
        if self.adapter is not None:
            f = self.adapter.apply(f)
        return f, self.head.logits(f)

    def observe(self, features: np.ndarray) -> None:
        """Add a batch of raw features to the window (the state follows lazily)."""
        if features.ndim != 2 or features.shape[1] != self.head.feature_dim:
            raise InvalidInput(f"features must be (N, {self.head.feature_dim}), "
                               f"got {features.shape}")
        f = np.asarray(features, dtype=np.float64)[-self.window:]
        if self.detector is not None:
            plain = f if self.adapter is None else self.adapter.apply(f)
            flags = self.detector.score(plain, self.head.logits(plain)) > self.detector.threshold
        else:
            flags = np.ones(len(f), dtype=bool)
        if self.reset_z is not None and len(f) >= _RESET_MIN_BATCH and \
                self._count >= 2 * _RESET_MIN_BATCH:
            rows = self._ring[:self._count]
            z = np.abs(f.mean(axis=0) - rows.mean(axis=0)) / np.sqrt(rows.var(axis=0) + self.eps)
            if float(z.mean()) > self.reset_z:  # a new domain: forget the old one's rows
                self._count = self._next = 0
                self.restarts += 1
        idx = (self._next + np.arange(len(f))) % self.window
        self._ring[idx], self._flags[idx] = f, flags
        self._next = int((self._next + len(f)) % self.window)
        self._count = min(self._count + len(f), self.window)
        self._dirty = True

    def _current(self) -> FeatureNorm | None:
        if not self._dirty:
            return self._norm
        self._dirty = False
        n = self._count
        if n < self.min_samples or self._flags[:n].mean() <= self.gate_share:
            self._norm = None
            return None
        rows = self._ring[:n]
        mean, var = rows.mean(axis=0), rows.var(axis=0)
        self._norm = FeatureNorm.align(mean=mean, var=var, source_mean=self.source.mean,
                                       source_var=self.source.var, eps=self.eps)
        return self._norm

    def adapt(self, features: np.ndarray, logits: np.ndarray, *,
              images: np.ndarray | None = None) -> np.ndarray:
        f, _ = self.check(features, logits)
        _, z = self.transform(f)
        self.observe(f)
        return _softmax(z)
