"""Budget machinery shared by sampling policies: the contract, exact token-bucket and
sliding-window budgets, the running admission quantile and the diversity filter.

Numpy only: this module runs on the device. See :mod:`edgecl.device._sampling` for the
budget semantics and the built-in policies.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from edgecl._exceptions import ConfigError, InvalidInput
from edgecl.heads._cosine import l2_normalise

_FEATURE_MEAN_WINDOW = 256.0  # samples; the diversity filter centres features on this EMA

DEFAULT_FRACTION = 0.05


@dataclass(frozen=True)
class Selection:
    """What a policy chose from one batch.

    Attributes
    ----------
    indices : ndarray (K,) int64
        Positions within the batch that were selected, ascending.
    scores : ndarray (N,) float64
        The policy's uncertainty score of every sample in the batch (higher = send).
    threshold : float
        The admission threshold in force for this batch (a score must exceed it).
    explored : ndarray (K,) bool or None
        Aligned with ``indices``: which selected samples were drawn at random rather than
        for their score (exploration, or a random policy); None when none were.
    """

    indices: np.ndarray
    scores: np.ndarray
    threshold: float
    explored: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def explored_mask(self) -> np.ndarray:
        """``explored`` as a (K,) bool array (all False when None)."""
        if self.explored is None:
            return np.zeros(self.indices.shape[0], bool)
        return np.asarray(self.explored, bool)


class SamplingPolicy(ABC):
    """Contract of a sampling policy: stateful, called once per batch in stream order.

    Subclasses register with :func:`register_policy` under ``name``; constructors take
    hyperparameters only and raise :class:`ConfigError` for bad ones.
    """

    name: ClassVar[str]

    @abstractmethod
    def select(
        self,
        *,
        entropy: np.ndarray,
        ood_score: np.ndarray | None,
        features: np.ndarray | None,
        timestamp: float | None = None,
    ) -> Selection:
        """Choose samples of one batch; raises :class:`InvalidInput` for bad arrays."""

    @abstractmethod
    def reset(self) -> None:
        """Forget everything seen (budget, running statistics, recent selections)."""

    @abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments, so ``create_policy(p.name, **p.hyperparameters())``
        builds a fresh equivalent policy."""

    def notify_shift(self) -> None:
        """The device's drift detection saw its environment change. Policies that hold
        budget back for that moment spend it now; the default ignores it."""
        return None


# -- validation ---------------------------------------------------------------------------


def _vector(x: Any, name: str, n: int | None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.number):
        raise InvalidInput(f"{name} must be a 1-D numeric array, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise InvalidInput(f"{name} has {arr.shape[0]} rows, entropy has {n}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise InvalidInput(f"{name} contains NaN or inf")
    return arr


def _features(x: Any, n: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise InvalidInput(f"features must be a 2-D numeric array (N, D), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InvalidInput(f"features has {arr.shape[0]} rows, entropy has {n}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise InvalidInput("features contains NaN or inf")
    return arr


def _number(value: Any, name: str, *, low: float, high: float = math.inf,
            low_open: bool = False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = math.isfinite(v) and (v > low if low_open else v >= low) and v <= high
    if not ok:
        bound = "(" if low_open else "["
        raise ConfigError(f"{name} must be a number in {bound}{low}, {high}], got {value!r}")
    return float(value)


def _integer(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


# -- shared machinery: budget, running quantile, diversity ---------------------------------


class BudgetedPolicy(SamplingPolicy):
    """Base of the built-in policies: scores -> threshold -> greedy, budgeted admission.

    Per batch: score every sample (:meth:`_scores`), compute the threshold for the current
    target fraction (:meth:`_threshold`), then admit candidates whose score exceeds it in
    descending score order while the budget lasts, skipping near-duplicates when the
    diversity filter is on.

    Parameters
    ----------
    fraction : float in (0, 1], optional
        Target and hard cap on the fraction of samples sent (default 0.05 when
        ``per_window`` is not given).
    per_window : int >= 1, optional
        Instead of ``fraction``: at most this many samples per ``window_seconds``. The
        target fraction is then ``per_window`` over the samples that arrived in the last
        window (so the first window is filled greedily).
    window_seconds : float > 0
        Length of the sliding window of ``per_window`` mode.
    burst : float >= 1
        ``fraction`` mode: unspent budget carried from one batch to the next is capped at
        ``burst`` samples; each batch adds ``fraction * batch_size`` on top.
    fill_gain : float >= 0
        Budget left unspent is lost (beyond ``burst``, or when the window slides on), so
        once more than half of it is unspent the threshold aims at more than the target:
        at ``target * (1 + fill_gain * excess)`` of the samples, ``excess = 2 * fill - 1``
        in [0, 1], ``fill`` being the carried budget over ``burst`` (or the window's unused
        share of ``per_window``). 0 aims at exactly ``target``. The hard cap never changes.
    reserve : float in [0, 1)
        ``fraction`` mode: share of the budget held back while the environment is stable
        (the threshold aims at ``fraction * (1 - reserve)``; the rest accrues in the bucket)
        until the bucket holds what one shift period spends beyond its own accrual,
        ``shift_span * (shift_fraction - fraction)`` (then it aims at ``fraction`` again;
        ``burst`` must be at least that). After :meth:`notify_shift` the threshold aims at
        ``shift_fraction`` for ``shift_span`` samples, spending what was saved where a new
        domain begins and the device knows least. 0 (the default) turns this off.
    shift_fraction : float in (0, 1], shift_span : int >= 1
        The target fraction, and for how many samples, after a shift (``shift_fraction``
        defaults to ``fraction``).
    """

    diverse: ClassVar[bool] = False  # whether the feature-space diversity filter is applied

    def __init__(self, *, fraction: float | None = None, per_window: int | None = None,
                 window_seconds: float = 1.0, burst: float = 4.0,
                 fill_gain: float = 2.0, reserve: float = 0.0,
                 shift_fraction: float | None = None, shift_span: int = 200) -> None:
        if fraction is not None and per_window is not None:
            raise ConfigError("give either fraction or per_window, not both")
        if per_window is None:
            fraction = DEFAULT_FRACTION if fraction is None else fraction
            self.fraction: float | None = _number(fraction, "fraction", low=0.0, high=1.0,
                                                  low_open=True)
        else:
            self.fraction = None
        self.per_window = None if per_window is None else _integer(per_window, "per_window", 1)
        self.window_seconds = _number(window_seconds, "window_seconds", low=0.0, low_open=True)
        self.burst = _number(burst, "burst", low=1.0)
        self.fill_gain = _number(fill_gain, "fill_gain", low=0.0)
        self.reserve = _number(reserve, "reserve", low=0.0, high=1.0)
        if self.reserve >= 1.0:
            raise ConfigError(f"reserve must be below 1, got {reserve!r}")
        if self.reserve > 0 and self.fraction is None:
            raise ConfigError("reserve needs fraction mode (a per_window budget is not carried)")
        self.shift_fraction = (None if shift_fraction is None else
                               _number(shift_fraction, "shift_fraction", low=0.0, high=1.0,
                                       low_open=True))
        self.shift_span = _integer(shift_span, "shift_span", 1)
        self.reset()

    def hyperparameters(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "per_window": self.per_window,
                "window_seconds": self.window_seconds, "burst": self.burst,
                "fill_gain": self.fill_gain, "reserve": self.reserve,
                "shift_fraction": self.shift_fraction, "shift_span": self.shift_span}

    def reset(self) -> None:
        self.seen = 0
        self.selected = 0
        # The bucket starts empty: from the first sample on, the total sent never exceeds
        # fraction * seen; `burst` only bounds how much unspent budget is carried forward.
        self._tokens = Fraction(0)
        self._arrivals: deque[tuple[float, int]] = deque()  # (timestamp, batch size)
        self._sent_times: deque[float] = deque()
        self._last_time = -math.inf
        self._memory: deque[np.ndarray] = deque()
        self._feature_mean: np.ndarray | None = None
        self._shift_left = 0  # samples still to be sampled at shift_fraction

    def notify_shift(self) -> None:
        """Start a shift period: the next ``shift_span`` samples are sampled at
        ``shift_fraction`` (within the budget, saved tokens included). The diversity filter
        starts over too: centred on the old domain's mean, every feature of a new domain
        points the same way and would look like a duplicate of the first one sent."""
        self._shift_left = self.shift_span
        self._feature_mean = None
        self._memory.clear()

    def _rate(self) -> float:
        """The fraction the policy aims at now, before the fill gain (1 in per_window mode:
        there the window decides)."""
        if self.fraction is None:
            return 1.0
        shift_rate = self.fraction if self.shift_fraction is None else self.shift_fraction
        if self._shift_left > 0:
            return shift_rate
        # save only what one shift period spends beyond its own accrual
        if self._tokens >= self.shift_span * (shift_rate - self.fraction):
            return self.fraction
        return self.fraction * (1.0 - self.reserve)

    # -- hooks ---------------------------------------------------------------------------

    @abstractmethod
    def _scores(self, entropy: np.ndarray, ood: np.ndarray | None,
                features: np.ndarray | None) -> np.ndarray:
        """Score every sample of the batch (higher = more worth sending)."""

    @abstractmethod
    def _threshold(self, scores: np.ndarray, target: float) -> float:
        """Admission threshold for this batch, aiming at ``target`` fraction of samples."""

    # -- the contract --------------------------------------------------------------------

    def select(self, *, entropy: np.ndarray, ood_score: np.ndarray | None,
               features: np.ndarray | None, timestamp: float | None = None) -> Selection:
        ent = _vector(entropy, "entropy", None)
        n = ent.shape[0]
        ood = None if ood_score is None else _vector(ood_score, "ood_score", n)
        feats = None if features is None else _features(features, n)
        if feats is not None and self._memory and self._memory[0].shape[0] != feats.shape[1]:
            raise InvalidInput(f"features have {feats.shape[1]} dimensions, earlier ones had "
                               f"{self._memory[0].shape[0]}; call reset() first")
        now = self._clock(timestamp)
        scores = self._scores(ent, ood, feats)
        self.seen += n
        capacity, target = self._budget(now, n)
        threshold = self._threshold(scores, target) if n else math.inf
        chosen: list[int] = []
        if n and capacity > 0:
            order = np.argsort(-scores, kind="stable")
            unit = None if feats is None or not self.diverse else l2_normalise(
                self._centred(feats))
            for i in order:
                if len(chosen) >= capacity or not (scores[i] > threshold or target >= 1.0):
                    break
                if unit is not None and not self._novel(unit[i]):
                    continue
                chosen.append(int(i))
        self._commit(now, len(chosen))
        self._shift_left = max(0, self._shift_left - n)
        indices = np.sort(np.asarray(chosen, dtype=np.int64))
        indices.setflags(write=False)
        scores.setflags(write=False)
        return Selection(indices=indices, scores=scores, threshold=float(threshold))

    # -- budget --------------------------------------------------------------------------

    def _clock(self, timestamp: float | None) -> float:
        if timestamp is None:
            if self.per_window is None:
                return self._last_time
            timestamp = time.monotonic()
        ok = isinstance(timestamp, (int, float, np.integer, np.floating))
        if not ok or isinstance(timestamp, bool) or not math.isfinite(float(timestamp)):
            raise InvalidInput(f"timestamp must be a finite number, got {timestamp!r}")
        if float(timestamp) < self._last_time:
            raise InvalidInput(f"timestamp {timestamp} is earlier than the previous one "
                               f"({self._last_time}); batches must come in stream order")
        self._last_time = float(timestamp)
        return self._last_time

    def _budget(self, now: float, n: int) -> tuple[int, float]:
        """(most samples this batch may send, target fraction for the threshold)."""
        if self.per_window is None:
            assert self.fraction is not None
            carried = min(Fraction(self.burst), self._tokens)  # unspent budget carried over
            self._tokens = carried + Fraction(self.fraction) * n
            capacity, fill, target = math.floor(self._tokens), carried / self.burst, self._rate()
        else:
            start = now - self.window_seconds
            self._arrivals.append((now, n))
            while self._arrivals and not self._arrivals[0][0] > start:
                self._arrivals.popleft()
            while self._sent_times and not self._sent_times[0] > start:
                self._sent_times.popleft()
            arrived = sum(size for _, size in self._arrivals)
            capacity = max(self.per_window - len(self._sent_times), 0)
            fill, target = capacity / self.per_window, self.per_window / max(arrived, 1)
        excess = max(0.0, 2.0 * float(fill) - 1.0)
        return capacity, min(1.0, target * (1.0 + self.fill_gain * excess))

    def _commit(self, now: float, count: int) -> None:
        self.selected += count
        if self.per_window is None:
            self._tokens -= count
        else:
            self._sent_times.extend([now] * count)

    # -- diversity -----------------------------------------------------------------------

    def _centred(self, feats: np.ndarray) -> np.ndarray:
        """Features minus a slow running mean of all features seen.

        Raw ReLU features of one domain are nearly parallel (cosine ~0.98), so without
        centring a cosine filter would call everything in a new domain a duplicate.
        """
        batch_mean = feats.mean(axis=0)
        if self._feature_mean is None:
            self._feature_mean = batch_mean
        centred = feats - self._feature_mean
        keep = (1.0 - 1.0 / _FEATURE_MEAN_WINDOW) ** feats.shape[0]
        self._feature_mean = keep * self._feature_mean + (1.0 - keep) * batch_mean
        return centred

    def _novel(self, unit: np.ndarray) -> bool:
        """Whether ``unit`` is not a near-duplicate of a recent selection; remembers it."""
        max_sim, memory = self._diversity()
        if memory == 0:
            return True
        if self._memory and float(np.max(np.stack(self._memory) @ unit)) > max_sim:
            return False
        self._memory.append(unit)
        while len(self._memory) > memory:
            self._memory.popleft()
        return True

    def _diversity(self) -> tuple[float, int]:
        return 1.0, 0


class _ScoreHistory:
    """Ring buffer of recent scores and their running quantile.

    The quantile is recomputed once ``size / 128`` new scores have arrived (every 64 for
    the default 8192), so a batch-1 caller does not pay a full partition per sample.
    """

    def __init__(self, size: int) -> None:
        self._buf = np.empty(size, dtype=np.float64)
        self._pos = 0
        self._count = 0
        self._refresh = max(1, size // 128)
        self._stale = 0
        self._cached: tuple[float, float] | None = None

    def add(self, scores: np.ndarray) -> None:
        size = self._buf.shape[0]
        scores = scores[-size:]
        idx = (self._pos + np.arange(scores.shape[0])) % size
        self._buf[idx] = scores
        self._pos = int((self._pos + scores.shape[0]) % size)
        self._count = min(size, self._count + scores.shape[0])
        self._stale += scores.shape[0]

    def quantile(self, q: float) -> float:
        # a young buffer (a fresh start, or just after a shift) is recomputed more often
        refresh = min(self._refresh, max(1, self._count // 16))
        if self._cached is None or self._cached[0] != q or self._stale >= refresh:
            self._cached = (q, float(np.quantile(self._buf[: self._count], q)))
            self._stale = 0
        return self._cached[1]


class _QuantilePolicy(BudgetedPolicy):
    """Admits scores above the running ``1 - target`` quantile of the last ``history``;
    during a shift span (:meth:`notify_shift`), of the scores seen since the shift: what
    is unusual in a new domain is judged against that domain, not the one before."""

    def __init__(self, *, history: int = 512, **budget: Any) -> None:
        self.history = _integer(history, "history", 2)
        super().__init__(**budget)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "history": self.history}

    def reset(self) -> None:
        super().reset()
        self._history = _ScoreHistory(self.history)
        self._since_shift: _ScoreHistory | None = None

    def notify_shift(self) -> None:
        super().notify_shift()
        self._since_shift = _ScoreHistory(self.history)

    def _threshold(self, scores: np.ndarray, target: float) -> float:
        self._history.add(scores)
        if self._shift_left <= 0:
            self._since_shift = None
        if self._since_shift is None:
            return self._history.quantile(1.0 - target)
        self._since_shift.add(scores)
        return self._since_shift.quantile(1.0 - target)


def _entropy_scale(num_classes: int | None) -> float:
    return 1.0 if num_classes is None else math.log(num_classes)
