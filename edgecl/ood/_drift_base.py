"""The contract of stream drift detectors and the event they emit (numpy only)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from edgecl._exceptions import ConfigError, InvalidInput


@dataclass(frozen=True)
class DomainShift:
    """A detected change of the score distribution.

    Attributes
    ----------
    index : 0-based index (in samples seen since construction or :meth:`~DriftDetector.reset`)
        of the sample at which the shift was detected.
    detector : name of the detector that fired.
    statistic : the test statistic at detection (KS ``D``; Page-Hinkley cumulative deviation).
    reference_mean, current_mean : mean score of the baseline and of the recent samples.
    """

    index: int
    detector: str
    statistic: float
    reference_mean: float
    current_mean: float


class DriftDetector(ABC):
    """Online detector of a change in a stream of scalar scores.

    Constructors take hyperparameters only (bad ones raise :class:`~edgecl.ConfigError`);
    :meth:`update` takes one finite score and returns a :class:`DomainShift` or None.
    Non-finite scores raise :class:`~edgecl.InvalidInput` and leave the state unchanged.
    """

    name: ClassVar[str]

    def __init__(self) -> None:
        self.samples_seen = 0
        self._reset_state()

    @property
    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The hyperparameters, as given to the constructor."""

    @abstractmethod
    def _reset_state(self) -> None:
        """Forget everything learned from the stream (not ``samples_seen``)."""

    @abstractmethod
    def _step(self, value: float) -> DomainShift | None:
        """Consume one validated value; ``samples_seen`` already counts it."""

    def update(self, value: float) -> DomainShift | None:
        """Consume one score; return the detected shift, if any."""
        try:
            x = float(value)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"score must be a real number, got {value!r}") from exc
        if not math.isfinite(x):
            raise InvalidInput(f"score must be finite, got {x}")
        self.samples_seen += 1
        return self._step(x)

    def update_many(self, values: np.ndarray) -> list[DomainShift]:
        """Consume a 1-D array of scores in order (same result as calling :meth:`update`).

        The whole array is validated first: on bad input nothing is consumed.
        """
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"scores must be a 1-D array of real numbers: {exc}") from exc
        if arr.ndim != 1:
            raise InvalidInput(f"scores must be a 1-D array, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise InvalidInput("scores contain NaN or infinite values")
        shifts = []
        for x in arr.tolist():
            self.samples_seen += 1
            shift = self._step(x)
            if shift is not None:
                shifts.append(shift)
        return shifts

    def reset(self) -> None:
        """Start over as if newly constructed (``samples_seen`` back to 0)."""
        self.samples_seen = 0
        self._reset_state()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


def _int_param(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _float_param(
    name: str, value: object, low: float, high: float = math.inf, *, low_open: bool = False
) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    x = float(value) if ok else math.nan  # type: ignore[arg-type]
    if not (math.isfinite(x) and (x > low if low_open else x >= low) and x < high):
        bound = f"{'(' if low_open else '['}{low}, {high})"
        raise ConfigError(f"{name} must be a finite number in {bound}, got {value!r}")
    return x


# -- Kolmogorov-Smirnov over windows -----------------------------------------------------
