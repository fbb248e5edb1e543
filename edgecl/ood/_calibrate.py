"""Fit detectors on a bundle's calibration data and store them in the bundle (``ood.npz``)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.bundle import STATS_FILE, FeatureStats, add_bundle_files
from edgecl.ood._base import Detector
from edgecl.ood._io import save_detectors
from edgecl.ood._registry import create_detector, list_detectors

OOD_FILE = "ood.npz"
DEFAULT_DETECTOR = "vim"  # best mean AUROC on the zoo (`edgecl eval ood`); needs a linear head
FALLBACK_DETECTOR = "mahalanobis"


def calibrate_bundle(bundle_dir: str | os.PathLike[str], images: np.ndarray,
                     labels: np.ndarray, *, detectors: Sequence[str] | None = None,
                     batch: int = 256) -> dict[str, Detector]:
    """Fit ``detectors`` (default: all registered) on in-distribution calibration samples
    run through the bundle's encoder and head, and add them to the bundle as ``ood.npz``,
    with the features' statistics as ``feature_stats.npz`` (for test-time alignment).

    ``labels`` index the bundle's classes. Returns the fitted detectors by name.
    """
    from edgecl.device import DeviceRuntime

    names = list(detectors) if detectors is not None else list_detectors()
    if not names:
        raise ConfigError("no detectors to calibrate")
    rt = DeviceRuntime.open(bundle_dir, ood=None)
    feats, logits = [], []
    for start in range(0, len(images), batch):
        pred = rt.predict(images[start:start + batch], return_features=True)
        feats.append(pred.features)
        logits.append(pred.logits)
    f, z = np.concatenate(feats), np.concatenate(logits)
    fitted = {name: create_detector(name).fit(f, z, np.asarray(labels), head=rt.bundle.head)
              for name in names}
    sha = rt.bundle.encoder_sha256
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / OOD_FILE
        save_detectors(path, fitted, encoder_sha256=sha)
        # the same calibration features give the source statistics test-time alignment needs
        add_bundle_files(bundle_dir, {OOD_FILE: path.read_bytes(),
                                      STATS_FILE: FeatureStats.of(f).to_bytes(sha)})
    return fitted
