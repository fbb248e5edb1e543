"""Detectors on the logits alone: maximum softmax probability and energy."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecl.heads import Head
from edgecl.ood._base import Detector, logsumexp, positive_param


class _LogitsDetector(Detector):
    """Shared part of the detectors with no learned arrays (only the threshold)."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = positive_param("temperature", temperature)

    def hyperparameters(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def _fit(self, features: np.ndarray, logits: np.ndarray, labels: np.ndarray,
             head: Head | None) -> np.ndarray:
        return self._score(features, logits)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        pass


class MaxSoftmax(_LogitsDetector):
    """Maximum softmax probability (Hendrycks & Gimpel, 2017): ``-max softmax(z / T)``.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[4.0, 0.0], [0.0, 0.0], [3.0, 1.0]])
    >>> det = MaxSoftmax().fit(np.zeros((3, 1)), z, np.array([0, 1, 0]))
    >>> det.score(np.zeros((2, 1)), np.array([[0.0, 0.0], [9.0, 0.0]])).round(3).tolist()
    [-0.5, -1.0]
    """

    name = "msp"

    def score_trusted(self, features: np.ndarray, logits: np.ndarray,
                      probabilities: np.ndarray | None = None, *,
                      confidence: np.ndarray | None = None,
                      logit_max: np.ndarray | None = None) -> np.ndarray:
        if self.temperature == 1.0 and self.fitted:  # the runtime's softmax, reused
            if confidence is not None:
                return -confidence
            if probabilities is not None:
                return -probabilities.max(axis=1)
        return super().score_trusted(features, logits, probabilities)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        z = np.asarray(logits, dtype=np.float64) / self.temperature
        # max softmax = exp(max z - logsumexp z)
        return -np.exp(z.max(axis=1) - logsumexp(z))


class Energy(_LogitsDetector):
    """Energy score (Liu et al., 2020): ``-T logsumexp(z / T)``.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[0.0, 0.0], [5.0, 1.0]])
    >>> det = Energy().fit(np.zeros((2, 1)), z, np.array([0, 1]))
    >>> det.score(np.zeros((1, 1)), np.array([[0.0, 0.0]])).round(4).tolist()
    [-0.6931]
    """

    name = "energy"

    def score_trusted(self, features: np.ndarray, logits: np.ndarray,
                      probabilities: np.ndarray | None = None, *,
                      confidence: np.ndarray | None = None,
                      logit_max: np.ndarray | None = None) -> np.ndarray:
        if self.temperature == 1.0 and self.fitted:
            # logsumexp(z) = z_k - log p_k for any k; k = argmax keeps log p_k >= -log C
            if confidence is not None and logit_max is not None:
                score = np.log(confidence)
                score -= logit_max
                return score
            if probabilities is not None:
                return np.log(probabilities.max(axis=1)) - logits.max(axis=1)
        return super().score_trusted(features, logits, probabilities)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        t = self.temperature
        return -t * logsumexp(np.asarray(logits, dtype=np.float64) / t)
