"""AdaNPC (Zhang et al., ICML 2023): a bounded non-parametric kNN memory.

For a query ``z`` (l2-normalised features): cosine similarities to the memory, the top
``k``, weights ``softmax(s / T)``, class votes ``sum_j w_j [y_j = c]``; a query whose vote
confidence reaches ``beta`` joins the memory with its predicted label. Defaults k 100,
T 0.1, beta 0.1. On a device the memory is capped per class (oldest entries leave first).
Seed it with labelled source features (:meth:`AdaNPC.seed`); until then the model's own
confident predictions fill it.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError, InvalidInput
from edgecl.adapt._base import TestTimeAdapter
from edgecl.adapt._lame import _softmax


class AdaNPC(TestTimeAdapter):
    """kNN voting over a per-class-capped memory of normalised features."""

    name = "adanpc"

    def __init__(self, *, k: int = 100, temperature: float = 0.1, beta: float = 0.1,
                 per_class: int = 256) -> None:
        if min(k, per_class) < 1 or not temperature > 0 or not 0 <= beta <= 1:
            raise ConfigError("need k >= 1, per_class >= 1, temperature > 0, beta in [0, 1]")
        self.k, self.temperature, self.beta, self.per_class = k, temperature, beta, per_class
        self._seed: dict[int, list[np.ndarray]] = {}
        self.reset()

    def hyperparameters(self) -> dict[str, Any]:
        return {"k": self.k, "temperature": self.temperature, "beta": self.beta,
                "per_class": self.per_class}

    def reset(self) -> None:
        """Forget what was learned from the stream (the seeded source memory stays)."""
        self._memory: dict[int, deque[np.ndarray]] = {}

    def seed(self, features: np.ndarray, labels: np.ndarray) -> None:
        """Labelled source features that stay in the memory across :meth:`reset`."""
        f, _ = self.check(features, np.zeros((len(features), 1)))
        y = np.asarray(labels)
        if y.shape != (len(f),) or y.dtype.kind not in "iu":
            raise InvalidInput("labels must be one class index per feature row")
        unit = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        for c in np.unique(y):
            self._seed[int(c)] = list(unit[y == c][-self.per_class:])

    @property
    def size(self) -> int:
        """Entries in the memory (seeded and learned)."""
        return sum(len(v) for v in self._seed.values()) + sum(len(v) for v in
                                                              self._memory.values())

    def _bank(self) -> tuple[np.ndarray, np.ndarray] | None:
        rows, labels = [], []
        for source in (self._seed, self._memory):
            for c, entries in source.items():
                rows.extend(entries)
                labels.extend([c] * len(entries))
        if not rows:
            return None
        return np.stack(rows), np.asarray(labels)

    def adapt(self, features: np.ndarray, logits: np.ndarray, *,
              images: np.ndarray | None = None) -> np.ndarray:
        f, z = self.check(features, logits)
        unit = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        probs = _softmax(z)
        bank = self._bank()
        if bank is not None:
            mem, lab = bank
            sims = unit @ mem.T
            k = min(self.k, len(mem))
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            s = np.take_along_axis(sims, top, axis=1)
            w = _softmax(s / self.temperature)
            if lab.max() >= probs.shape[1]:
                raise InvalidInput(f"the memory holds class {lab.max()}, the logits have "
                                   f"{probs.shape[1]} classes")
            votes = np.zeros_like(probs)
            np.add.at(votes, (np.arange(len(f))[:, None], lab[top]), w)
            probs = votes / np.maximum(votes.sum(axis=1, keepdims=True), 1e-12)
        for i in np.flatnonzero(probs.max(axis=1) >= self.beta):
            c = int(probs[i].argmax())
            self._memory.setdefault(c, deque(maxlen=self.per_class)).append(unit[i])
        return probs
