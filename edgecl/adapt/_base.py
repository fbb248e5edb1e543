"""The contract of test-time adaptation methods (no labels, numpy only)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from edgecl._exceptions import InvalidInput


class TestTimeAdapter(ABC):
    """Adapts predictions on a stream without labels, prequentially.

    :meth:`adapt` receives one batch's features and logits (as the runtime computed them),
    returns the adapted class probabilities for that batch, and updates the method's state
    for the batches that follow. Subclasses register with :func:`register_adapter`.
    """

    name: ClassVar[str]

    @abstractmethod
    def adapt(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Adapted probabilities ``(N, K)`` for a batch; updates the state."""

    @abstractmethod
    def reset(self) -> None:
        """Forget everything learned from the stream."""

    @abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """Constructor arguments, so ``create_adapter(a.name, **a.hyperparameters())``
        builds a fresh equivalent."""

    @staticmethod
    def check(features: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Validated float64 copies of a batch: 2-D, same length, finite, non-empty."""
        f = np.asarray(features, dtype=np.float64)
        z = np.asarray(logits, dtype=np.float64)
        if f.ndim != 2 or z.ndim != 2 or len(f) != len(z) or len(f) == 0:
            raise InvalidInput(f"features (N, D) and logits (N, K) must be non-empty and "
                               f"agree in N, got {f.shape} and {z.shape}")
        if not (np.isfinite(f).all() and np.isfinite(z).all()):
            raise InvalidInput("features or logits contain NaN or inf")
        return f, z
