"""LAME (Boudiaf et al., CVPR 2022): Laplacian-regularised maximum-likelihood estimation.

Adapts outputs only: the class assignment ``Y`` of a batch minimises
``sum unary*Y - sum (W Y)*Y + sum Y log Y`` with ``unary = -log p`` and an affinity ``W``
between l2-normalised features; solved by the fixed point ``Y = softmax(-unary + W Y)``
(up to 100 iterations, stop when the energy changes by <= 1e-8 relative). The defaults
and both affinities follow the reference code (fiveai/LAME). On a device the batch is a
sliding window of the recent samples; the returned rows are those of the current batch.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.adapt._base import TestTimeAdapter


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _distances(x: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", x, x)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0))


def affinity(features: np.ndarray, kind: str = "rbf", knn: int = 5) -> np.ndarray:
    """LAME's affinity on l2-normalised features: ``"rbf"`` (bandwidth = mean distance to
    the ``min(knn, N)``-th nearest point, self included) or ``"knn"`` (1 for the ``knn``
    nearest other points, asymmetric)."""
    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    d = _distances(x)
    n = len(x)
    if kind == "rbf":
        k = min(knn, n)
        sigma = np.sort(d, axis=1)[:, k - 1].mean()
        return np.exp(-(d ** 2) / (2.0 * max(sigma, 1e-12) ** 2))
    if kind == "knn":
        k = min(knn + 1, n)
        order = np.argsort(d, axis=1, kind="stable")[:, 1:k]
        w = np.zeros((n, n))
        np.put_along_axis(w, order, 1.0, axis=1)
        return w
    raise ConfigError(f"affinity must be 'rbf' or 'knn', got {kind!r}")


def lame(probabilities: np.ndarray, features: np.ndarray, *, kind: str = "rbf",
         knn: int = 5, max_steps: int = 100) -> np.ndarray:
    """LAME assignments ``(N, K)`` for one batch of probabilities and features."""
    unary = -np.log(probabilities + 1e-10)
    w = affinity(features, kind, knn)
    y = _softmax(-unary)
    energy_old = None
    for i in range(max_steps):
        pair = w @ y
        y = _softmax(-unary + pair)
        energy = float((unary * y - pair * y + y * np.log(np.clip(y, 1e-20, None))).sum())
        if i > 1 and energy_old is not None and \
                abs(energy - energy_old) <= 1e-8 * abs(energy_old):
            break
        energy_old = energy
    return y


class LAME(TestTimeAdapter):
    """LAME over a sliding window of the last ``window`` samples (features + logits)."""

    name = "lame"

    def __init__(self, *, affinity: str = "knn", knn: int = 5, window: int = 64,
                 max_steps: int = 100) -> None:
        if affinity not in ("rbf", "knn"):
            raise ConfigError(f"affinity must be 'rbf' or 'knn', got {affinity!r}")
        if min(knn, window, max_steps) < 1:
            raise ConfigError("knn, window and max_steps must be >= 1")
        self.affinity, self.knn, self.window, self.max_steps = affinity, knn, window, max_steps
        self.reset()

    def hyperparameters(self) -> dict[str, Any]:
        return {"affinity": self.affinity, "knn": self.knn, "window": self.window,
                "max_steps": self.max_steps}

    def reset(self) -> None:
        self._feats: deque[np.ndarray] = deque(maxlen=self.window)
        self._probs: deque[np.ndarray] = deque(maxlen=self.window)

    def adapt(self, features: np.ndarray, logits: np.ndarray, *,
              images: np.ndarray | None = None) -> np.ndarray:
        f, z = self.check(features, logits)
        self._feats.extend(f)
        self._probs.extend(_softmax(z))
        n = min(len(f), self.window)
        y = lame(np.stack(self._probs), np.stack(self._feats), kind=self.affinity,
                 knn=self.knn, max_steps=self.max_steps)
        out = _softmax(z)
        out[len(f) - n:] = y[-n:]
        return out
