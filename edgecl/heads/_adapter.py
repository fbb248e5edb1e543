"""Low-rank residual feature adapter: ``f' = f + B (A f)``."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError, InvalidInput
from edgecl.heads._base import frozen_array


class LowRankAdapter:
    """A rank-``r`` residual correction of encoder features.

    ``down`` is ``A`` with shape ``(rank, feature_dim)``; ``up`` is ``B`` with shape
    ``(feature_dim, rank)``. With ``up`` all zeros the adapter is the identity.

    Examples
    --------
    >>> import numpy as np
    >>> LowRankAdapter.identity(feature_dim=3, rank=2).apply(np.ones((1, 3), np.float32)).tolist()
    [[1.0, 1.0, 1.0]]
    """

    kind = "lowrank"

    def __init__(self, down: Any, up: Any) -> None:
        self.down = frozen_array(down, "down", 2)
        self.up = frozen_array(up, "up", 2)
        if self.up.shape != (self.down.shape[1], self.down.shape[0]):
            raise ConfigError(
                f"up must have shape {(self.down.shape[1], self.down.shape[0])}, "
                f"got {self.up.shape}"
            )
        self._down_t = np.ascontiguousarray(self.down.T)
        self._up_t = np.ascontiguousarray(self.up.T)

    @classmethod
    def identity(cls, feature_dim: int, rank: int, seed: int = 0) -> LowRankAdapter:
        """A random ``down`` projection and zero ``up``: an adapter that changes nothing yet."""
        rng = np.random.default_rng(seed)
        down = rng.normal(0.0, 1.0 / np.sqrt(feature_dim), size=(rank, feature_dim))
        return cls(down, np.zeros((feature_dim, rank)))

    @property
    def feature_dim(self) -> int:
        return int(self.down.shape[1])

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def apply(self, features: np.ndarray) -> np.ndarray:
        """Adapted features ``(N, feature_dim)``."""
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise InvalidInput(
                f"adapter expects features (N, {self.feature_dim}), got {features.shape}"
            )
        return features + (features @ self._down_t) @ self._up_t

    def arrays(self) -> dict[str, np.ndarray]:
        """The learned state as named arrays."""
        return {"down": self.down, "up": self.up}

    def spec(self) -> dict[str, Any]:
        """Kind and dimensions, for a manifest."""
        return {"type": self.kind, "feature_dim": self.feature_dim, "rank": self.rank}
