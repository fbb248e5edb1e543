"""Uncertainty-guided sampling (UGS): which few samples a device sends to the cloud.

A :class:`SamplingPolicy` sees every predict batch, in stream order, and returns a
:class:`Selection`: the positions worth uploading, within a bandwidth budget. Policies
live in a registry (:func:`create_policy`, :func:`list_policies`, :func:`register_policy`).

Budgets (every registered policy takes the same two modes; the guarantee is exact):

* ``fraction=f`` with ``burst=b`` -- a token bucket: each batch of ``n`` adds ``f * n``
  tokens to at most ``b`` carried over from earlier batches; a selected sample spends
  one; exact rational arithmetic. Hence, over *any* run of consecutive batches holding
  ``n`` samples (the whole stream included), at most ``f * n + b`` are selected.
* ``per_window=k`` with ``window_seconds=w`` -- at most ``k`` selected samples carry a
  timestamp in any half-open interval ``(t - w, t]`` (a sliding window, so also at most
  ``k`` per fixed window). A batch's samples share its ``timestamp`` (``time.monotonic()``
  when not given).

Within the budget, a batch's candidates are taken greedily in descending score order;
the admission threshold adapts (see :class:`BudgetedPolicy`).

Numpy only: this module runs on the device.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.device._budget import (
    DEFAULT_FRACTION,
    BudgetedPolicy,
    SamplingPolicy,
    Selection,
    _entropy_scale,
    _integer,
    _number,
    _QuantilePolicy,
)

__all__ = [
    "DEFAULT_FRACTION",
    "EntropyPolicy",
    "RandomPolicy",
    "SamplingPolicy",
    "Selection",
    "UncertaintyPolicy",
    "create_policy",
    "list_policies",
    "register_policy",
]


# -- the built-in policies -----------------------------------------------------------------


# Long memory and a deep token bucket: budget saved while the device is sure of itself is
# spent when the world changes (measured with `edgecl eval sampling`, see docs/results.md).
UNCERTAINTY_BUDGET_DEFAULTS: dict[str, Any] = {"history": 8192, "burst": 512.0, "fill_gain": 0.0}


class UncertaintyPolicy(_QuantilePolicy):
    """UGS default: entropy plus standardised OOD score, budgeted, with a diversity filter.

    ``score = w_entropy * entropy / ln(num_classes) + w_ood * (ood - m) / s`` where ``m`` and
    ``s`` are the mean and standard deviation of the OOD score over the first
    ``ood_warmup`` samples (or ``ood_reference=(m, s)``, e.g. from calibration data), then
    frozen: detectors of any scale mix the same way, and a later domain shift keeps its
    large standardised score instead of being absorbed into running statistics (which
    would make the admission quantile lag behind the shift and stop selection).
    Without an OOD score (``ood_score=None``) the score is the entropy term alone.
    A candidate whose centred (running mean removed), l2-normalised feature has cosine
    similarity above ``max_similarity`` with any of the last ``memory`` selected features
    is skipped (needs ``features``).

    Parameters
    ----------
    num_classes : int >= 2, optional
        Normalises entropy to [0, 1]; when not given, entropy is used in nats.
    w_entropy, w_ood : float >= 0
        Weights of the two terms.
    ood_warmup : int >= 1
        Samples whose OOD scores fix the standardisation (when no ``ood_reference``).
    ood_reference : (mean, std), optional
        Fixed standardisation of the OOD score, e.g. its statistics on calibration data.
    max_similarity : float in [-1, 1], memory : int >= 0
        Diversity filter; ``memory=0`` or ``max_similarity=1`` turns it off.
    explore : float in [0, 1], seed : int
        Exploration (epsilon-greedy): each sample is promoted, with probability
        ``explore * fraction``, ahead of every score, so about ``explore`` of the budget
        goes to uniformly random samples (same exact budget). The most uncertain samples
        alone are a biased picture of a domain: an update learned only from them fixes
        them and breaks the easy ones (measured with ``edgecl eval loop``). Promoted
        samples keep their true score in the :class:`Selection`; ``seed`` seeds the draws.
    history, fraction, per_window, window_seconds, burst, fill_gain, reserve, shift_fraction, \
shift_span
        See :class:`BudgetedPolicy`; ``history`` is the ring buffer behind the quantile.
        With ``reserve``, call :meth:`notify_shift` when the device's drift detection
        fires (:class:`~edgecl.device.SampleCollector` does): measured on the zoo's
        continual stream, holding 40% back and spending it at 40% of the samples for 200
        samples after each detected change beats uploading at an even rate by 5 to 7
        points of online accuracy (docs/results.md, "The cloud-device loop").
        Defaults here: ``history=8192``, ``burst=512``, ``fill_gain=0`` (a long view of
        what is unusual, and a deep bucket so quiet periods save budget for shifts).

    Examples
    --------
    >>> import numpy as np
    >>> policy = UncertaintyPolicy(fraction=0.25, burst=1, fill_gain=0, num_classes=4)
    >>> sel = policy.select(entropy=np.array([0.1, 1.3, 0.2, 0.3]), ood_score=None,
    ...                     features=None)
    >>> sel.indices.tolist()
    [1]
    """

    name = "uncertainty"
    diverse = True

    def __init__(self, *, num_classes: int | None = None, w_entropy: float = 1.0,
                 w_ood: float = 1.0, ood_warmup: int = 1024,
                 ood_reference: tuple[float, float] | None = None, max_similarity: float = 0.98,
                 memory: int = 64, explore: float = 0.0, seed: int = 0,
                 **budget: Any) -> None:
        self.explore = _number(explore, "explore", low=0.0, high=1.0)
        self.seed = _integer(seed, "seed", 0)
        self.num_classes = None if num_classes is None else _integer(num_classes,
                                                                     "num_classes", 2)
        self.w_entropy = _number(w_entropy, "w_entropy", low=0.0)
        self.w_ood = _number(w_ood, "w_ood", low=0.0)
        if self.w_entropy == 0 and self.w_ood == 0:
            raise ConfigError("w_entropy and w_ood cannot both be 0")
        self.ood_warmup = _integer(ood_warmup, "ood_warmup", 1)
        if ood_reference is not None:
            ref_mean, ref_std = ood_reference
            _number(ref_mean, "ood_reference mean", low=-math.inf)
            if not _number(ref_std, "ood_reference std", low=0.0) > 0:
                raise ConfigError("ood_reference std must be > 0")
            ood_reference = (float(ref_mean), float(ref_std))
        self.ood_reference = ood_reference
        self.max_similarity = _number(max_similarity, "max_similarity", low=-1.0, high=1.0)
        self.memory = _integer(memory, "memory", 0)
        for key, value in UNCERTAINTY_BUDGET_DEFAULTS.items():
            budget.setdefault(key, value)
        super().__init__(**budget)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "num_classes": self.num_classes,
                "w_entropy": self.w_entropy, "w_ood": self.w_ood, "ood_warmup": self.ood_warmup,
                "ood_reference": self.ood_reference,
                "max_similarity": self.max_similarity, "memory": self.memory,
                "explore": self.explore, "seed": self.seed}

    def reset(self) -> None:
        super().reset()
        self._ood_n = 0
        self._ood_sum = 0.0
        self._ood_sumsq = 0.0
        self._rng = np.random.default_rng(self.seed)
        self._raw: np.ndarray | None = None
        self._lucky: np.ndarray | None = None

    def select(self, *, entropy: np.ndarray, ood_score: np.ndarray | None,
               features: np.ndarray | None, timestamp: float | None = None) -> Selection:
        sel = super().select(entropy=entropy, ood_score=ood_score, features=features,
                             timestamp=timestamp)
        if self._raw is None:
            return sel
        raw, self._raw = self._raw, None
        lucky, self._lucky = self._lucky, None
        assert lucky is not None
        raw.setflags(write=False)
        return Selection(indices=sel.indices, scores=raw, threshold=sel.threshold,
                         explored=lucky[sel.indices])

    def _threshold(self, scores: np.ndarray, target: float) -> float:
        # the running quantile sees the true scores, not the exploration promotions, and
        # aims at the share of the target they leave (the draws are part of the budget)
        return super()._threshold(scores if self._raw is None else self._raw,
                                  target * (1.0 - self.explore))

    def _diversity(self) -> tuple[float, int]:
        return self.max_similarity, self.memory

    def _scores(self, entropy: np.ndarray, ood: np.ndarray | None,
                features: np.ndarray | None) -> np.ndarray:
        scores = self.w_entropy * entropy / _entropy_scale(self.num_classes)
        if ood is None or ood.shape[0] == 0:
            return self._promote(scores)
        if self.ood_reference is None and self._ood_n < self.ood_warmup:
            take = ood[: self.ood_warmup - self._ood_n].astype(np.float64)
            self._ood_n += take.shape[0]
            self._ood_sum += float(take.sum())
            self._ood_sumsq += float((take * take).sum())
        mean, std = self._ood_stats()
        z = (ood - mean) / std
        return self._promote(scores + self.w_ood * z)

    def _promote(self, scores: np.ndarray) -> np.ndarray:
        if self.explore <= 0.0 or scores.shape[0] == 0:
            return scores
        rate = self.explore * self._rate()
        lucky = self._rng.random(scores.shape[0]) < rate
        if not lucky.any():
            return scores
        self._raw = scores.copy()
        self._lucky = lucky
        out = scores.copy()
        out[lucky] = scores.max() + 1e6 + self._rng.random(int(lucky.sum()))
        return out

    def _ood_stats(self) -> tuple[float, float]:
        if self.ood_reference is not None:
            return self.ood_reference
        mean = self._ood_sum / self._ood_n
        var = max(self._ood_sumsq / self._ood_n - mean * mean, 0.0)
        return mean, max(math.sqrt(var), 1e-6 * max(abs(mean), 1.0))


class EntropyPolicy(_QuantilePolicy):
    """Baseline: predictive entropy only (the OOD score and features are ignored).

    Parameters
    ----------
    num_classes : int >= 2, optional
        Normalises entropy to [0, 1] (the ranking does not depend on it).
    history, fraction, per_window, window_seconds, burst
        See :class:`UncertaintyPolicy`.
    """

    name = "entropy"

    def __init__(self, *, num_classes: int | None = None, **budget: Any) -> None:
        self.num_classes = None if num_classes is None else _integer(num_classes,
                                                                     "num_classes", 2)
        super().__init__(**budget)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "num_classes": self.num_classes}

    def _scores(self, entropy: np.ndarray, ood: np.ndarray | None,
                features: np.ndarray | None) -> np.ndarray:
        return entropy / _entropy_scale(self.num_classes)


class RandomPolicy(BudgetedPolicy):
    """Baseline: each sample is a candidate with probability equal to the target fraction,
    under the same budget as the other policies. Scores are uniform draws in [0, 1),
    reproducible from ``seed`` (``reset`` restarts the sequence).
    """

    name = "random"

    def __init__(self, *, seed: int = 0, **budget: Any) -> None:
        self.seed = _integer(seed, "seed", 0)
        super().__init__(**budget)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "seed": self.seed}

    def reset(self) -> None:
        super().reset()
        self._rng = np.random.default_rng(self.seed)

    def select(self, *, entropy: np.ndarray, ood_score: np.ndarray | None,
               features: np.ndarray | None, timestamp: float | None = None) -> Selection:
        sel = super().select(entropy=entropy, ood_score=ood_score, features=features,
                             timestamp=timestamp)
        return Selection(indices=sel.indices, scores=sel.scores, threshold=sel.threshold,
                         explored=np.ones(len(sel), bool))  # every pick is a random draw

    def _scores(self, entropy: np.ndarray, ood: np.ndarray | None,
                features: np.ndarray | None) -> np.ndarray:
        return self._rng.random(entropy.shape[0])

    def _threshold(self, scores: np.ndarray, target: float) -> float:
        return 1.0 - target


# -- registry ------------------------------------------------------------------------------

_POLICIES: dict[str, type[SamplingPolicy]] = {}


def register_policy(cls: type[SamplingPolicy]) -> type[SamplingPolicy]:
    """Register a :class:`SamplingPolicy` subclass under its ``name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, SamplingPolicy)):
        raise ConfigError(f"{cls!r} is not a SamplingPolicy subclass")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{cls.__name__} needs a non-empty class attribute 'name'")
    _POLICIES[name] = cls
    return cls


def list_policies() -> list[str]:
    """Names of the registered sampling policies, sorted."""
    return sorted(_POLICIES)


def create_policy(name: str, **hyperparameters: Any) -> SamplingPolicy:
    """Build the policy registered as ``name``; :class:`ConfigError` for an unknown name or
    bad hyperparameters.

    Examples
    --------
    >>> create_policy("uncertainty", fraction=0.05, num_classes=8).name
    'uncertainty'
    """
    try:
        cls = _POLICIES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown sampling policy {name!r}; known: {list_policies()}") from None
    try:
        return cls(**hyperparameters)
    except TypeError as exc:
        raise ConfigError(f"bad hyperparameters for policy {name!r}: {exc}") from exc


for _cls in (UncertaintyPolicy, EntropyPolicy, RandomPolicy):
    register_policy(_cls)
