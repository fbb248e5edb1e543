"""Hyperdimensional-computing detector (EAR / HDFF): cosine to bundled class prototypes."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.heads import Head
from edgecl.ood._base import Detector, int_param

_CHUNK_ENTRIES = 1 << 22  # hypervector entries per block: 16 MiB of float32
_CHECK_ENTRIES = 16


def hdc_projection(feature_dim: int, dim: int, seed: int) -> np.ndarray:
    """The seeded random projection ``P`` ``(feature_dim, dim)``, float32.

    ``P`` is built from blocks of ``feature_dim`` columns, each the Q factor of the QR
    decomposition of a Gaussian matrix (signs fixed by ``diag(R)``), concatenated and cut to
    ``dim`` columns: within a block the columns of ``P`` (rows of ``P^T``) are orthonormal.
    """
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(math.ceil(dim / feature_dim)):
        q, r = np.linalg.qr(rng.standard_normal((feature_dim, feature_dim)))
        signs = np.sign(np.diag(r))
        signs[signs == 0] = 1.0
        blocks.append(q * signs)
    return np.ascontiguousarray(np.hstack(blocks)[:, :dim], dtype=np.float32)


def _check_values(projection: np.ndarray) -> np.ndarray:
    flat = projection.ravel()
    return flat[np.linspace(0, flat.size - 1, _CHECK_ENTRIES).astype(np.int64)].copy()


class HDC(Detector):
    """HDC detector as in EAR (Daniels et al.) after HDFF (Wilson et al., 2023).

    ``h(f) = (f - mu) @ P`` with ``mu`` the mean calibration feature and ``P`` the
    :func:`hdc_projection` of ``dim`` (default 4096) columns; with ``bipolar=True``,
    ``h = sign(h)``. Class prototypes bundle the calibration hypervectors,
    ``C_y = sum_{i: y_i = y} h(f_i)``, and ``score = -max_y cos(h(f), C_y)``.

    ``P`` is not stored: it is regenerated from ``seed`` (8 bytes instead of
    ``feature_dim * dim`` floats: 8 MiB of float32 for 512-d features, and float16 would
    still be 4 MiB and perturb every entry by ~5e-4). numpy does not promise the same random
    stream across versions, so the state keeps 16 entries of ``P`` and loading refuses a
    detector whose regenerated ``P`` differs. Needs every class in the calibration data.

    Examples
    --------
    >>> import numpy as np
    >>> f = np.array([[2.0, 0.1], [2.0, -0.1], [-2.0, 0.1], [-2.0, -0.1]])
    >>> det = HDC(dim=64).fit(f, np.zeros((4, 2)), np.array([0, 0, 1, 1]))
    >>> det.score(np.array([[3.0, 0.0], [0.0, 3.0]]), np.zeros((2, 2))).round(2).tolist()
    [-1.0, -0.0]
    """

    name = "hdc"
    min_per_class = 1

    def __init__(self, dim: int = 4096, seed: int = 0, bipolar: bool = False) -> None:
        super().__init__()
        self.dim = int_param("dim", dim, 1)
        self.seed = int_param("seed", seed, 0)
        if not isinstance(bipolar, (bool, np.bool_)):
            raise ConfigError(f"bipolar must be a bool, got {bipolar!r}")
        self.bipolar = bool(bipolar)
        self._mean: np.ndarray | None = None
        self._projection: np.ndarray | None = None
        self._prototypes: np.ndarray | None = None  # unit rows, (C, dim)

    def hyperparameters(self) -> dict[str, Any]:
        return {"dim": self.dim, "seed": self.seed, "bipolar": self.bipolar}

    def _encode(self, features: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
        """Blocks of rows and their hypervectors ``h`` (float32)."""
        assert self._mean is not None and self._projection is not None
        step = max(1, _CHUNK_ENTRIES // self.dim)
        for start in range(0, features.shape[0], step):
            rows = slice(start, start + step)
            centred = (np.asarray(features[rows], dtype=np.float64) - self._mean)
            h = centred.astype(np.float32) @ self._projection
            yield rows, (np.sign(h) if self.bipolar else h)

    def _fit(self, features: np.ndarray, logits: np.ndarray, labels: np.ndarray,
             head: Head | None) -> np.ndarray:
        self._mean = np.asarray(features, dtype=np.float64).mean(axis=0)
        self._projection = hdc_projection(features.shape[1], self.dim, self.seed)
        bundles = np.zeros((logits.shape[1], self.dim))
        for rows, h in self._encode(features):
            onehot = np.zeros((logits.shape[1], h.shape[0]))
            onehot[labels[rows], np.arange(h.shape[0])] = 1.0
            bundles += onehot @ h.astype(np.float64)
        norms = np.linalg.norm(bundles, axis=1)
        if not np.all(norms > 0):
            raise ConfigError(f"hdc: class prototypes {np.flatnonzero(norms == 0).tolist()} "
                              f"are zero (their features all equal the mean)")
        self._prototypes = (bundles / norms[:, None]).astype(np.float32)
        return self._score(features, logits)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        assert self._prototypes is not None
        scores = np.empty(features.shape[0])
        for rows, h in self._encode(features):
            norm = np.maximum(np.linalg.norm(h, axis=1), 1e-12)
            cos = (h @ self._prototypes.T) / norm[:, None]
            scores[rows] = -cos.max(axis=1)
        return scores

    def _arrays(self) -> dict[str, np.ndarray]:
        assert self._mean is not None and self._prototypes is not None
        assert self._projection is not None
        return {"mean": self._mean, "prototypes": self._prototypes,
                "projection_check": _check_values(self._projection)}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        mean = np.asarray(arrays["mean"], dtype=np.float64)
        prototypes = np.asarray(arrays["prototypes"])
        check = np.asarray(arrays["projection_check"])
        if (mean.shape != (self.feature_dim,) or prototypes.dtype != np.float32
                or prototypes.shape != (self.num_classes, self.dim)
                or check.shape != (_CHECK_ENTRIES,)):
            raise ConfigError(f"hdc state shapes do not fit {self.num_classes} classes, "
                              f"{self.feature_dim}-dim features, dim={self.dim}: mean "
                              f"{mean.shape}, prototypes {prototypes.dtype} {prototypes.shape}")
        projection = hdc_projection(mean.shape[0], self.dim, self.seed)
        if not np.allclose(_check_values(projection), check, rtol=0.0, atol=1e-5):
            raise ConfigError(f"hdc: the projection regenerated from seed {self.seed} differs "
                              f"from the one this detector was fitted with (another numpy "
                              f"random stream?); refit the detector")
        self._mean, self._prototypes, self._projection = mean, prototypes, projection
