"""Cosine (prototype) head: ``logits = s * cos(f, p_c)``."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.heads._base import Head, frozen_array

_EPS = 1e-12


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit length (zero rows stay zero)."""
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    return x / np.maximum(norm, _EPS)


class CosineHead(Head):
    """Class prototypes ``(num_classes, feature_dim)`` compared by scaled cosine similarity.

    Examples
    --------
    >>> import numpy as np
    >>> head = CosineHead(np.array([[1.0, 0.0], [0.0, 1.0]]), scale=10.0)
    >>> head.logits(np.array([[3.0, 0.0]], dtype=np.float32)).tolist()
    [[10.0, 0.0]]
    """

    kind = "cosine"

    def __init__(self, prototypes: Any, scale: float = 16.0) -> None:
        self.prototypes = frozen_array(prototypes, "prototypes", 2)
        if not np.isfinite(scale) or scale <= 0:
            raise ConfigError(f"scale must be a positive number, got {scale}")
        self.scale = float(scale)
        self._unit_t = np.ascontiguousarray(l2_normalise(self.prototypes).T * self.scale)

    @property
    def feature_dim(self) -> int:
        return int(self.prototypes.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.prototypes.shape[0])

    def logits(self, features: np.ndarray) -> np.ndarray:
        self._check_features(features)
        return l2_normalise(features) @ self._unit_t

    def arrays(self) -> dict[str, np.ndarray]:
        return {"prototypes": self.prototypes}

    def hyperparameters(self) -> dict[str, Any]:
        return {"scale": self.scale}

    @classmethod
    def from_features(
        cls, features: np.ndarray, labels: np.ndarray, num_classes: int, scale: float = 16.0
    ) -> CosineHead:
        """Prototypes as the mean l2-normalised feature of each class."""
        unit = l2_normalise(np.asarray(features, dtype=np.float32))
        protos = np.zeros((num_classes, unit.shape[1]), dtype=np.float32)
        for c in range(num_classes):
            members = unit[labels == c]
            if len(members) == 0:
                raise ConfigError(f"no features for class {c}")
            protos[c] = members.mean(axis=0)
        return cls(protos, scale=scale)
