"""The contract every numpy head follows."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from edgecl._exceptions import ConfigError, InvalidInput


def frozen_array(a: Any, name: str, ndim: int) -> np.ndarray:
    """A read-only float32 copy of ``a`` with ``ndim`` dimensions and finite values."""
    arr = np.array(a, dtype=np.float32, copy=True)
    if arr.ndim != ndim:
        raise ConfigError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ConfigError(f"{name} contains NaN or inf")
    arr.setflags(write=False)
    return arr


class Head(ABC):
    """A small classifier on encoder features: ``logits = head(features)``.

    Heads are immutable: parameters are read-only float32 arrays, set once.
    Subclasses register with :func:`edgecl.heads.register_head` under ``kind``.
    """

    kind: ClassVar[str]

    @property
    @abstractmethod
    def feature_dim(self) -> int:
        """Length of the feature vectors the head takes."""

    @property
    @abstractmethod
    def num_classes(self) -> int:
        """Number of output classes."""

    @abstractmethod
    def logits(self, features: np.ndarray) -> np.ndarray:
        """Class scores ``(N, num_classes)`` for features ``(N, feature_dim)``."""

    @abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """The learned state as named arrays (what ``heads.npz`` stores)."""

    @abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """JSON-serialisable settings that are not arrays (what the manifest stores)."""

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], **hyperparameters: Any) -> Head:
        """Rebuild a head from :meth:`arrays` and :meth:`hyperparameters`."""
        return cls(**arrays, **hyperparameters)

    def spec(self) -> dict[str, Any]:
        """The head's description for a manifest: kind, dims and hyperparameters."""
        return {
            "type": self.kind,
            "feature_dim": self.feature_dim,
            "num_classes": self.num_classes,
            **self.hyperparameters(),
        }

    def _check_features(self, features: np.ndarray) -> None:
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise InvalidInput(
                f"{self.kind} head expects features (N, {self.feature_dim}), got {features.shape}"
            )
