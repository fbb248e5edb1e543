"""Fit detectors on a bundle's calibration features and store them in the bundle (``ood.npz``)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgecl._exceptions import ConfigError, InvalidInput
from edgecl.bundle import STATS_FILE, FeatureStats, add_bundle_files, load_bundle
from edgecl.ood._base import Detector
from edgecl.ood._io import save_detectors
from edgecl.ood._registry import create_detector, list_detectors

OOD_FILE = "ood.npz"
DEFAULT_DETECTOR = "vim"  # best mean AUROC on the zoo (`edgecl eval ood`); needs a linear head
FALLBACK_DETECTOR = "mahalanobis"


def calibrate_bundle(bundle_dir: str | os.PathLike[str], features: np.ndarray,
                     labels: np.ndarray, *,
                     detectors: Sequence[str] | None = None) -> dict[str, Detector]:
    """Fit ``detectors`` (default: all registered) on in-distribution calibration
    ``features`` (``(N, D)``: the bundle encoder's outputs for calibration images, e.g.
    :meth:`edgecl.device.DeviceRuntime.encode`) and the bundle head's logits for them, and
    add them to the bundle as ``ood.npz``, with the features' statistics as
    ``feature_stats.npz`` (for test-time alignment).

    ``labels`` index the bundle's classes. Returns the fitted detectors by name.
    """
    names = list(detectors) if detectors is not None else list_detectors()
    if not names:
        raise ConfigError("no detectors to calibrate")
    bundle = load_bundle(bundle_dir)
    f = np.asarray(features, dtype=np.float32)
    y = np.asarray(labels)
    dim = bundle.manifest.feature_dim
    if f.ndim != 2 or f.shape[1] != dim or len(f) == 0:
        raise InvalidInput(f"calibration features must be (N > 0, {dim}), got {f.shape}")
    if y.shape != (len(f),):
        raise InvalidInput(f"calibration labels must be ({len(f)},), got {y.shape}")
    if not np.isfinite(f).all():
        raise InvalidInput("calibration features contain NaN or inf")
    z = bundle.head.logits(f)
    fitted = {name: create_detector(name).fit(f, z, y, head=bundle.head) for name in names}
    sha = bundle.encoder_sha256
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / OOD_FILE
        save_detectors(path, fitted, encoder_sha256=sha)
        # the same calibration features give the source statistics test-time alignment needs
        add_bundle_files(bundle_dir, {OOD_FILE: path.read_bytes(),
                                      STATS_FILE: FeatureStats.of(f).to_bytes(sha)})
    return fitted
