"""Domain logic behind the RPCs, on plain types (no protobuf): what an upload must satisfy,
and how many update streams may be open at once."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from edgecl._exceptions import InvalidInput
from edgecl.bundle import ModelBundle
from edgecl.cloud._errors import Overloaded
from edgecl.wire import WireSample

#: Tolerance on the bundle's value range (float rounding on the device).
RANGE_SLACK = 1e-4


def check_batch_size(n: int, max_batch_samples: int) -> None:
    """:class:`InvalidInput` when a batch has more than ``max_batch_samples`` samples."""
    if n > max_batch_samples:
        raise InvalidInput(f"batch of {n} samples exceeds max_batch_samples="
                           f"{max_batch_samples}")


def check_samples(samples: Sequence[WireSample], bundle: ModelBundle, *,
                  max_batch_samples: int) -> None:
    """Raise :class:`InvalidInput` naming the first sample that does not fit ``bundle``.

    A batch holds at most ``max_batch_samples`` distinct ids; each sample has a finite
    float32 input of the bundle's shape inside its value range, finite features (as float32),
    if any, of the bundle's feature length, and a finite priority. Nothing of a batch is
    stored unless all of it passes.
    """
    check_batch_size(len(samples), max_batch_samples)
    for s in samples:
        _check_sample(s, bundle)
    if len({s.sample_id for s in samples}) != len(samples):
        raise InvalidInput("a batch repeats a sample_id")


def _check_sample(s: WireSample, bundle: ModelBundle) -> None:
    spec = bundle.input_spec
    shape, (lo, hi), dim = tuple(spec.shape), spec.value_range, bundle.manifest.feature_dim
    if s.input is None:
        raise InvalidInput(f"sample {s.sample_id} has no input")
    if s.input.dtype != np.float32 or s.input.shape != shape:
        raise InvalidInput(f"sample {s.sample_id}: input must be float32 {shape} like the "
                           f"registered bundle, got {s.input.dtype} {s.input.shape}")
    if not np.isfinite(s.input).all():
        raise InvalidInput(f"sample {s.sample_id}: input contains NaN or inf")
    if s.input.min() < lo - RANGE_SLACK or s.input.max() > hi + RANGE_SLACK:
        raise InvalidInput(f"sample {s.sample_id}: values outside the bundle's range "
                           f"[{lo:g}, {hi:g}]")
    if s.features is not None:
        if s.features.dtype.kind != "f" or s.features.shape != (dim,):
            raise InvalidInput(f"sample {s.sample_id}: features must be floating point "
                               f"({dim},), got {s.features.dtype} {s.features.shape}")
        if not np.isfinite(s.features.astype(np.float32)).all():  # as stored: float32
            raise InvalidInput(f"sample {s.sample_id}: features contain NaN or inf")
    if not np.isfinite(s.priority):
        raise InvalidInput(f"sample {s.sample_id}: priority must be finite")


class StreamSlots:
    """At most ``limit`` open Subscribe streams (``server.max_streams``).

    A stream holds no thread (it runs on the event loop) but memory: the cap bounds what
    a flood of subscribers can make one replica hold.
    """

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self._sem = threading.BoundedSemaphore(self.limit)
        self._lock = threading.Lock()
        self.open = 0

    def acquire(self) -> _Slot:
        """A slot, or :class:`Overloaded` (RESOURCE_EXHAUSTED) when all are taken."""
        if not self._sem.acquire(blocking=False):
            raise Overloaded(f"all {self.limit} update streams are open; retry later "
                             f"(with backoff) or poll FetchUpdate")
        with self._lock:
            self.open += 1
        return _Slot(self)

    def _release(self) -> None:
        with self._lock:
            self.open -= 1
        self._sem.release()


class _Slot:
    """One taken stream slot; :meth:`release` is idempotent (called on end and cancel)."""

    def __init__(self, owner: StreamSlots) -> None:
        self._owner, self._lock, self._held = owner, threading.Lock(), True

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, False
        if held:
            self._owner._release()
