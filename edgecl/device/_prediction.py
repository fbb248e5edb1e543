"""Prediction: what ``DeviceRuntime.predict`` returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """Outputs for a batch (a single image is a batch of one).

    Attributes
    ----------
    labels : ndarray (N,) int64
        Index of the most probable class.
    probabilities : ndarray (N, C) float32
        Softmax over the head's logits.
    confidence : ndarray (N,) float32
        Probability of the predicted class.
    logits : ndarray (N, C) float32
        Head outputs.
    state_version : int
        Version of the ModelState that produced every row of this prediction.
    features : ndarray (N, D) or None
        The features the head saw (after the state's feature norm and adapter), when
        requested.
    ood_score : ndarray (N,) or None
        Score of the state's OOD detector (higher = more out-of-distribution), if any.
    is_ood : ndarray (N,) bool or None
        ``ood_score`` above the detector's calibrated threshold (95% of ID accepted).
    encoder_features : ndarray (N, D) or None
        The raw encoder output (before feature norm and adapter), when requested; what
        test-time adaptation learns from.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    confidence: np.ndarray
    logits: np.ndarray
    state_version: int
    features: np.ndarray | None = None
    ood_score: np.ndarray | None = None
    is_ood: np.ndarray | None = None
    encoder_features: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def entropy(self) -> np.ndarray:
        """Predictive entropy (nats) per sample."""
        p = self.probabilities
        return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
