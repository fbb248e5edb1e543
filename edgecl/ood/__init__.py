"""Out-of-distribution detectors on encoder features and head logits (numpy only).

Every detector follows one contract (:class:`Detector`): ``fit`` on in-distribution
calibration features, logits and labels, then ``score`` (higher = more out-of-distribution)
and ``is_ood`` (``score > threshold``, the threshold accepting 95% of the calibration data).
Detectors live in a registry::

    >>> from edgecl.ood import create_detector, list_detectors
    >>> list_detectors()
    ['energy', 'hdc', 'knn', 'mahalanobis', 'msp', 'vim']
    >>> create_detector("energy", temperature=2.0)
    Energy(temperature=2.0)

Fitted detectors are saved to one ``.npz`` tied to an encoder's sha256
(:func:`save_detectors`, :func:`load_detectors`). :func:`auroc` and :func:`fpr_at_tpr`
measure them (OOD is the positive class); the reference benchmark on a zoo is
:func:`edgecl.eval.evaluate_ood`. Drift detectors
(:class:`KSWindowDetector`, :class:`PageHinkley`) watch a stream of such scores and emit
:class:`DomainShift` events; :class:`InputDriftMonitor` watches the images themselves
(statistics no model update changes).
"""

from __future__ import annotations

from edgecl.ood._base import Detector
from edgecl.ood._calibrate import DEFAULT_DETECTOR, OOD_FILE, calibrate_bundle
from edgecl.ood._hdc import HDC, hdc_projection
from edgecl.ood._input_drift import IMAGE_STATISTICS, InputDriftMonitor, image_statistics
from edgecl.ood._input_guard import InputGuard
from edgecl.ood._io import load_detectors, save_detectors
from edgecl.ood._knn import KNN
from edgecl.ood._logits import Energy, MaxSoftmax
from edgecl.ood._mahalanobis import Mahalanobis
from edgecl.ood._metrics import auroc, fpr_at_tpr
from edgecl.ood._registry import create_detector, list_detectors, register_detector
from edgecl.ood._vim import ViM
from edgecl.ood.drift import (
    DomainShift,
    DriftDetector,
    KSWindowDetector,
    PageHinkley,
    create_drift_detector,
    list_drift_detectors,
)

__all__ = [
    "DEFAULT_DETECTOR",
    "Detector",
    "DomainShift",
    "DriftDetector",
    "Energy",
    "HDC",
    "IMAGE_STATISTICS",
    "InputDriftMonitor",
    "InputGuard",
    "KNN",
    "KSWindowDetector",
    "Mahalanobis",
    "MaxSoftmax",
    "OOD_FILE",
    "PageHinkley",
    "ViM",
    "auroc",
    "calibrate_bundle",
    "create_detector",
    "create_drift_detector",
    "fpr_at_tpr",
    "hdc_projection",
    "image_statistics",
    "list_detectors",
    "list_drift_detectors",
    "load_detectors",
    "register_detector",
    "save_detectors",
]

