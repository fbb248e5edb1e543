"""ViM: virtual-logit matching (residual outside the principal subspace, minus energy)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.heads import Head, LinearHead
from edgecl.ood._base import Detector, int_param, logsumexp


class ViM(Detector):
    """ViM detector (Wang et al., 2022); needs the :class:`~edgecl.heads.LinearHead`.

    With the head ``z = W f + b``: origin ``u = -pinv(W) b``; the principal subspace is
    spanned by the top-``d`` eigenvectors of ``X^T X / N`` for the centred calibration
    features ``X = f - u`` (``d`` defaults to ``D // 2``); ``res(f)`` is the component of
    ``f - u`` outside it. ``alpha = mean(max_c z_c) / mean(||res||)`` on calibration data and
    ``score = alpha * ||res(f)|| - logsumexp(z)``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> f = rng.normal(size=(50, 4)) * [3.0, 3.0, 0.1, 0.1]
    >>> head = LinearHead(np.eye(2, 4), np.zeros(2))
    >>> det = ViM().fit(f, head.logits(f), (f[:, 0] > 0).astype(int), head=head)
    >>> off = np.array([[0.0, 0.0, 5.0, 5.0]])
    >>> bool(det.is_ood(off, head.logits(off))[0])
    True
    """

    name = "vim"

    def __init__(self, d: int | None = None) -> None:
        super().__init__()
        self.d = None if d is None else int_param("d", d, 1)
        self._origin: np.ndarray | None = None
        self._residual: np.ndarray | None = None
        self._alpha = math.nan

    def hyperparameters(self) -> dict[str, Any]:
        return {"d": self.d}

    def _fit(self, features: np.ndarray, logits: np.ndarray, labels: np.ndarray,
             head: Head | None) -> np.ndarray:
        if not isinstance(head, LinearHead):
            raise ConfigError(f"vim needs head=LinearHead (its weight and bias), got "
                              f"{type(head).__name__}")
        dim = features.shape[1]
        if head.feature_dim != dim or head.num_classes != logits.shape[1]:
            raise ConfigError(f"head is ({head.num_classes}, {head.feature_dim}); features "
                              f"have {dim} dimensions and logits {logits.shape[1]} classes")
        d = dim // 2 if self.d is None else self.d
        if not 1 <= d < dim:
            raise ConfigError(f"vim: d must lie in [1, {dim - 1}] for {dim}-dim features, "
                              f"got {d}")
        w = head.weight.astype(np.float64)
        origin = -np.linalg.pinv(w) @ head.bias.astype(np.float64)
        x = np.asarray(features, dtype=np.float64) - origin
        _, vecs = np.linalg.eigh(x.T @ x / x.shape[0])  # ascending eigenvalues
        self._origin = origin
        self._residual = np.ascontiguousarray(vecs[:, : dim - d])
        mean_res = float(np.linalg.norm(x @ self._residual, axis=1).mean())
        if mean_res <= 0.0:
            raise ConfigError(f"vim: calibration features have no residual outside the top "
                              f"{d} principal directions; use a smaller d")
        self._alpha = float(np.asarray(logits, dtype=np.float64).max(axis=1).mean()) / mean_res
        return self._score(features, logits)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        assert self._origin is not None and self._residual is not None
        x = np.asarray(features, dtype=np.float64) - self._origin
        return self._alpha * np.linalg.norm(x @ self._residual, axis=1) - logsumexp(logits)

    def _arrays(self) -> dict[str, np.ndarray]:
        assert self._origin is not None and self._residual is not None
        return {"origin": self._origin, "residual_basis": self._residual,
                "alpha": np.array(self._alpha)}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        origin = np.asarray(arrays["origin"], dtype=np.float64)
        basis = np.asarray(arrays["residual_basis"], dtype=np.float64)
        alpha = float(np.asarray(arrays["alpha"], dtype=np.float64))
        dim = self.feature_dim
        if (origin.shape != (dim,) or basis.ndim != 2 or basis.shape[0] != dim
                or not 1 <= basis.shape[1] < dim):  # type: ignore[operator]
            raise ConfigError(f"vim state shapes do not fit {dim}-dim features: origin "
                              f"{origin.shape}, residual_basis {basis.shape}")
        if not math.isfinite(alpha):
            raise ConfigError("vim state has a non-finite alpha")
        self._origin, self._residual, self._alpha = origin, basis, alpha
