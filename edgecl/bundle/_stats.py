"""Source feature statistics of a bundle (``feature_stats.npz``), for test-time alignment.

Per-dimension mean and variance of the encoder's features on in-distribution calibration
data, tied to the encoder's sha256. Written next to ``ood.npz`` by
:func:`edgecl.ood.calibrate_bundle`; read by :func:`read_feature_stats`.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecl._exceptions import BundleError, ConfigError

STATS_FILE = "feature_stats.npz"
_FORMAT = "edgecl.feature_stats"
_VERSION = 1


@dataclass(frozen=True)
class FeatureStats:
    """Mean and variance per feature dimension over ``count`` source samples."""

    mean: np.ndarray
    var: np.ndarray
    count: int

    @classmethod
    def of(cls, features: np.ndarray) -> FeatureStats:
        """Statistics of ``(N, D)`` features (N >= 2, finite)."""
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or len(f) < 2 or not np.isfinite(f).all():
            raise ConfigError(f"need >= 2 finite feature rows (N, D), got {f.shape}")
        return cls(f.mean(axis=0), f.var(axis=0), len(f))

    def to_bytes(self, encoder_sha256: str) -> bytes:
        """The ``.npz`` file content, tied to ``encoder_sha256``."""
        meta = {"format": _FORMAT, "version": _VERSION, "encoder_sha256": encoder_sha256,
                "count": self.count}
        buffer = io.BytesIO()
        np.savez(buffer, mean=self.mean, var=self.var, meta=np.array(json.dumps(meta)))
        return buffer.getvalue()


def read_feature_stats(path: str | os.PathLike[str], *, encoder_sha256: str) -> FeatureStats:
    """Load statistics written for ``encoder_sha256``; :class:`BundleError` names the file
    and the reason when it is missing, corrupt, for another encoder or inconsistent."""
    path = str(Path(path))
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"][()]))
            mean, var = np.asarray(data["mean"], np.float64), np.asarray(data["var"], np.float64)
    except FileNotFoundError as exc:
        raise BundleError("feature statistics not found", path=path) from exc
    except Exception as exc:  # not a zip, truncated, missing member, bad JSON
        raise BundleError(f"unreadable feature statistics ({exc})", path=path) from exc
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT or \
            meta.get("version") != _VERSION:
        raise BundleError("not an edgecl feature statistics file (format/version)", path=path)
    if meta.get("encoder_sha256") != encoder_sha256:
        raise BundleError("feature statistics were made for another encoder", path=path)
    if mean.ndim != 1 or var.shape != mean.shape or not np.isfinite(mean).all() or \
            not np.isfinite(var).all() or (var < 0).any():
        raise BundleError("feature statistics are malformed", path=path)
    return FeatureStats(mean, var, int(meta.get("count", 0)))
