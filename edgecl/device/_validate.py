"""Fast validation of images against a bundle's input spec."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecl._exceptions import InvalidInput
from edgecl.bundle import InputSpec


class InputValidator:
    """Checks type, dtype, rank, shape, batch size, finiteness and value range.

    The common case costs two reductions (min and max); a failure is diagnosed afterwards
    so the message names what is wrong and what the spec expects.
    """

    def __init__(self, spec: InputSpec, max_batch: int = 1024) -> None:
        self.spec = spec
        self.max_batch = int(max_batch)
        self._shape = tuple(spec.shape)
        self._dtype = np.dtype(spec.dtype)
        self._lo, self._hi = spec.value_range
        self._expect = spec.describe()

    def check(self, images: Any) -> np.ndarray:
        """Return ``images`` as a contiguous plain ``(N, C, H, W)`` ndarray (a subclass,
        e.g. a MaskedArray, as its underlying data) or raise InvalidInput."""
        if type(images) is not np.ndarray:
            if not isinstance(images, np.ndarray):
                raise InvalidInput(f"expected a numpy array: {self._expect}; "
                                   f"got {type(images).__name__}")
            # a subclass (e.g. a MaskedArray) is checked and served as its real data:
            # a mask must not hide NaN or out-of-range values from the checks
            images = np.asarray(images).view(np.ndarray)
        if images.dtype != self._dtype:
            raise InvalidInput(f"wrong dtype {images.dtype}: expected {self._expect}")
        if images.ndim == len(self._shape):
            images = images[None]
        elif images.ndim != len(self._shape) + 1:
            raise InvalidInput(f"wrong rank {images.ndim} (shape {images.shape}): "
                               f"expected {self._expect}")
        if images.shape[1:] != self._shape:
            raise InvalidInput(f"wrong shape {images.shape}: expected {self._expect}")
        n = images.shape[0]
        if n == 0:
            raise InvalidInput(f"empty batch: expected {self._expect} with N >= 1")
        if n > self.max_batch:
            raise InvalidInput(f"batch of {n} exceeds max_batch={self.max_batch}")
        if not (images.min() >= self._lo and images.max() <= self._hi):
            self._diagnose(images)
        if not images.flags.c_contiguous:
            images = np.ascontiguousarray(images)
        return images

    def _diagnose(self, images: np.ndarray) -> None:
        finite = np.isfinite(images)
        if not finite.all():
            bad = np.flatnonzero(~finite.reshape(images.shape[0], -1).all(axis=1))
            kinds = "NaN" if np.isnan(images).any() else "inf"
            raise InvalidInput(f"{kinds} values in sample(s) {bad[:8].tolist()}: "
                               f"expected {self._expect}")
        raise InvalidInput(
            f"values out of range [{float(images.min()):g}, {float(images.max()):g}]: "
            f"expected {self._expect}")
