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
        Encoder features after the adapter, when requested.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    confidence: np.ndarray
    logits: np.ndarray
    state_version: int
    features: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def entropy(self) -> np.ndarray:
        """Predictive entropy (nats) per sample."""
        p = self.probabilities
        return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
