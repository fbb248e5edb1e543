"""Deep nearest neighbours: distance to the k-th nearest calibration feature."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.heads import Head
from edgecl.ood._base import Detector, int_param

_NORM_EPS = 1e-12
_CHUNK_ENTRIES = 1 << 22  # distance-matrix entries per block: 32 MiB of float64


class KNN(Detector):
    """kNN detector (Sun et al., 2022): distance to the ``k``-th nearest calibration feature.

    Features are l2-normalised first (``normalize=True``, the paper's setting); with
    ``normalize=False, k=1`` it is pytorch-ood's raw-feature variant. The memory holds at most
    ``max_memory`` calibration features (a random subset drawn with ``seed`` when there are
    more), rounded to float32 (what the state stores) and held as float64 while loaded, so
    distances are computed in float64 with no per-call conversion.

    The threshold is set from leave-one-out calibration scores (a calibration sample is not
    its own neighbour), so it carries over to new in-distribution data; it needs at least
    ``k + 1`` calibration samples.

    Examples
    --------
    >>> import numpy as np
    >>> f = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])
    >>> det = KNN(k=1, normalize=False).fit(f, np.zeros((4, 2)), np.zeros(4, dtype=int))
    >>> det.score(np.array([[1.0, 0.0], [4.0, 0.0]]), np.zeros((2, 2))).tolist()
    [0.0, 3.0]
    """

    name = "knn"

    def __init__(self, k: int = 10, normalize: bool = True, max_memory: int = 4096,
                 seed: int = 0) -> None:
        super().__init__()
        self.k = int_param("k", k, 1)
        if not isinstance(normalize, (bool, np.bool_)):
            raise ConfigError(f"normalize must be a bool, got {normalize!r}")
        self.normalize = bool(normalize)
        self.max_memory = int_param("max_memory", max_memory, self.k + 1)
        self.seed = int_param("seed", seed, 0)
        self._memory: np.ndarray | None = None
        self._memory_sq: np.ndarray | None = None

    def hyperparameters(self) -> dict[str, Any]:
        return {"k": self.k, "normalize": self.normalize, "max_memory": self.max_memory,
                "seed": self.seed}

    def _prepare(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        if self.normalize:
            norm = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
            x = x / np.maximum(norm, _NORM_EPS)
        return x

    def _fit(self, features: np.ndarray, logits: np.ndarray, labels: np.ndarray,
             head: Head | None) -> np.ndarray:
        n = features.shape[0]
        if n < self.k + 1:
            raise ConfigError(f"knn with k={self.k} needs at least k + 1 = {self.k + 1} "
                              f"calibration samples, got {n}")
        x = self._prepare(features)
        if n > self.max_memory:
            rng = np.random.default_rng(self.seed)
            kept = np.sort(rng.choice(n, size=self.max_memory, replace=False))
        else:
            kept = np.arange(n)
        self._install(x[kept].astype(np.float32))
        # leave-one-out: a calibration sample in the memory is not its own neighbour
        position = np.full(n, -1, dtype=np.int64)
        position[kept] = np.arange(kept.size)
        scores = np.empty(n)
        for rows, d2 in self._distances(x):
            own = position[rows]
            inside = np.flatnonzero(own >= 0)
            d2[inside, own[inside]] = np.inf
            scores[rows] = self._kth(d2)
        return scores

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        scores = np.empty(features.shape[0])
        for rows, d2 in self._distances(self._prepare(features)):
            scores[rows] = self._kth(d2)
        return scores

    def _distances(self, x: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Blocks of rows of ``x`` and their squared distances to the memory."""
        assert self._memory is not None and self._memory_sq is not None
        mem, mem_sq = self._memory, self._memory_sq
        step = max(1, _CHUNK_ENTRIES // mem.shape[0])
        for start in range(0, x.shape[0], step):
            q = x[start:start + step]
            d2 = np.einsum("ij,ij->i", q, q)[:, None] - 2.0 * (q @ mem.T) + mem_sq[None, :]
            yield np.arange(start, start + q.shape[0]), np.maximum(d2, 0.0)

    def _kth(self, d2: np.ndarray) -> np.ndarray:
        return np.sqrt(np.partition(d2, self.k - 1, axis=1)[:, self.k - 1])

    def _install(self, memory: np.ndarray) -> None:
        self._memory = np.ascontiguousarray(memory, dtype=np.float64)  # exact: float32 values
        self._memory_sq = np.einsum("ij,ij->i", self._memory, self._memory)

    def _arrays(self) -> dict[str, np.ndarray]:
        assert self._memory is not None
        return {"memory": self._memory.astype(np.float32)}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        memory = np.asarray(arrays["memory"])
        if (memory.dtype != np.float32 or memory.ndim != 2 or memory.shape[0] < self.k
                or memory.shape[1] != self.feature_dim or not np.isfinite(memory).all()):
            raise ConfigError(f"knn memory must be finite float32 (M >= k={self.k}, "
                              f"{self.feature_dim}), got {memory.dtype} {memory.shape}")
        self._install(memory)
