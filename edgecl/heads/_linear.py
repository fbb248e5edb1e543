"""Linear head: ``logits = f W^T + b``."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.heads._base import Head, frozen_array


class LinearHead(Head):
    """A fully connected layer ``(num_classes, feature_dim)`` with a bias.

    Examples
    --------
    >>> import numpy as np
    >>> head = LinearHead(np.eye(2, 3), np.zeros(2))
    >>> head.logits(np.array([[1.0, 2.0, 3.0]], dtype=np.float32)).tolist()
    [[1.0, 2.0]]
    """

    kind = "linear"

    def __init__(self, weight: Any, bias: Any) -> None:
        self.weight = frozen_array(weight, "weight", 2)
        self.bias = frozen_array(bias, "bias", 1)
        if self.bias.shape[0] != self.weight.shape[0]:
            raise ConfigError(
                f"bias has {self.bias.shape[0]} entries, weight has {self.weight.shape[0]} rows"
            )
        self._weight_t = np.ascontiguousarray(self.weight.T)

    @property
    def feature_dim(self) -> int:
        return int(self.weight.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    def logits(self, features: np.ndarray) -> np.ndarray:
        self._check_features(features)
        out = np.dot(features, self._weight_t)
        out += self.bias
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight, "bias": self.bias}

    def hyperparameters(self) -> dict[str, Any]:
        return {}
