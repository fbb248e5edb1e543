"""Per-dimension feature normalisation: ``f' = f * scale + shift`` (test-time alignment)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError, InvalidInput
from edgecl.heads._base import frozen_array


class FeatureNorm:
    """A diagonal affine map of encoder features, applied before the adapter and head.

    :meth:`align` builds the map that gives features with mean ``mean`` and variance
    ``var`` the source statistics instead: the feature-level analogue of recomputing batch
    norm statistics on test data, for an encoder that is frozen inside an ONNX graph.

    Examples
    --------
    >>> import numpy as np
    >>> norm = FeatureNorm.align(mean=np.array([2.0]), var=np.array([4.0]),
    ...                          source_mean=np.array([0.0]), source_var=np.array([1.0]))
    >>> norm.apply(np.array([[2.0], [4.0]], np.float32)).ravel().tolist()
    [0.0, 1.0]
    """

    kind = "affine"

    def __init__(self, scale: Any, shift: Any) -> None:
        self.scale = frozen_array(scale, "scale", 1)
        self.shift = frozen_array(shift, "shift", 1)
        if self.scale.shape != self.shift.shape:
            raise ConfigError(f"scale {self.scale.shape} and shift {self.shift.shape} differ")

    @classmethod
    def align(cls, *, mean: np.ndarray, var: np.ndarray, source_mean: np.ndarray,
              source_var: np.ndarray, eps: float = 1e-6) -> FeatureNorm:
        """The map taking statistics ``(mean, var)`` to ``(source_mean, source_var)``."""
        scale = np.sqrt((np.asarray(source_var, np.float64) + eps)
                        / (np.asarray(var, np.float64) + eps))
        return cls(scale, np.asarray(source_mean, np.float64) - np.asarray(mean) * scale)

    @property
    def feature_dim(self) -> int:
        return int(self.scale.shape[0])

    def apply(self, features: np.ndarray) -> np.ndarray:
        """Normalised features ``(N, feature_dim)``."""
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise InvalidInput(
                f"feature norm expects features (N, {self.feature_dim}), got {features.shape}")
        return features * self.scale + self.shift

    def arrays(self) -> dict[str, np.ndarray]:
        """The state as named arrays."""
        return {"scale": self.scale, "shift": self.shift}
