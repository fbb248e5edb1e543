"""The contract every OOD detector follows, and the input checks they share."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

import numpy as np

from edgecl._exceptions import ConfigError, InvalidInput
from edgecl.heads import Head

_BASE_KEYS = ("threshold", "feature_dim", "num_classes")


def _matrix(a: Any, name: str) -> np.ndarray:
    """``a`` as a finite 2-D float array (float32/float64 kept, other dtypes to float64)."""
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{name} must be a 2-D array of real numbers: {exc}") from exc
    if arr.dtype.kind not in "fiu":
        raise InvalidInput(f"{name} must be a real-valued array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise InvalidInput(f"{name} must have shape (N, dim), got {arr.shape}")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    if arr.size and not np.isfinite(arr).all():
        raise InvalidInput(f"{name} contains NaN or infinite values")
    return arr


def check_scores(a: Any, name: str) -> np.ndarray:
    """``a`` as a finite, non-empty 1-D float64 array (for metrics)."""
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{name} must be a 1-D array of real numbers: {exc}") from exc
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidInput(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InvalidInput(f"{name} contains NaN or infinite values")
    return arr


def int_param(name: str, value: Any, minimum: int) -> int:
    """A hyperparameter that must be an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def positive_param(name: str, value: Any) -> float:
    """A hyperparameter that must be a finite number ``> 0``."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def threshold_at(scores: np.ndarray, tpr: float) -> float:
    """The smallest score ``t`` such that at least ``tpr`` of ``scores`` are ``<= t``."""
    ordered = np.sort(scores)
    index = max(math.ceil(tpr * ordered.size - 1e-9) - 1, 0)
    return float(ordered[index])


class Detector(ABC):
    """An out-of-distribution detector on encoder features and head logits.

    Scores are higher for "more out-of-distribution". :meth:`fit` learns from in-distribution
    calibration data and sets :attr:`threshold` so that a fraction ``tpr`` of the calibration
    samples is accepted as in-distribution (``score <= threshold``). Constructors take only
    hyperparameters; the learned state is a dict of numpy arrays (:meth:`state`), so a fitted
    detector serialises without pickle (see :func:`~edgecl.ood.save_detectors`).

    :meth:`score` only reads the fitted state, so threads may score concurrently; refit a
    copy rather than a detector other threads are using.

    Subclasses set ``name`` and implement ``_fit``, ``_score``, ``_arrays``, ``_set_arrays``
    and :meth:`hyperparameters`; register them with :func:`~edgecl.ood.register_detector`.
    """

    name: ClassVar[str]
    #: Smallest number of calibration samples per class ``_fit`` needs (0: labels unused).
    min_per_class: ClassVar[int] = 0

    def __init__(self) -> None:
        self.threshold: float | None = None
        self.feature_dim: int | None = None
        self.num_classes: int | None = None

    # -- what subclasses implement ----------------------------------------------------------
    @abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """The constructor's arguments, JSON-serialisable (``create_detector(name, **hp)``)."""

    @abstractmethod
    def _fit(self, features: np.ndarray, logits: np.ndarray, labels: np.ndarray,
             head: Head | None) -> np.ndarray:
        """Learn the state; return the calibration scores the threshold is taken from."""

    @abstractmethod
    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Scores ``(N,)`` float64 for validated inputs."""

    @abstractmethod
    def _arrays(self) -> dict[str, np.ndarray]:
        """The learned arrays (beyond threshold and dimensions)."""

    @abstractmethod
    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`_arrays` returned; raise ConfigError or KeyError if unusable.

        ``feature_dim`` and ``num_classes`` are already set when this runs.
        """

    # -- the public contract ----------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`from_state`) has run."""
        return self.threshold is not None

    def fit(self, features: np.ndarray, logits: np.ndarray, labels: np.ndarray, *,
            head: Head | None = None, tpr: float = 0.95) -> Self:
        """Learn from in-distribution calibration data and set :attr:`threshold`.

        Parameters
        ----------
        features : ndarray (N, D)
            Encoder features of the calibration samples.
        logits : ndarray (N, C)
            Head logits for the same samples.
        labels : ndarray (N,)
            Integer class labels in ``[0, C)``.
        head : Head, optional
            The classifier head (needed by detectors that use its weights, e.g. ``vim``).
        tpr : float
            Fraction of calibration samples the threshold accepts as in-distribution.

        Raises
        ------
        InvalidInput
            Wrong shapes, mismatched lengths, NaN or inf, labels outside ``[0, C)``.
        ConfigError
            Too few samples (overall or per class), a class absent, an unusable ``head``.
        """
        if isinstance(tpr, bool) or not (isinstance(tpr, (int, float, np.integer, np.floating))
                                         and 0.0 < float(tpr) <= 1.0):
            raise ConfigError(f"tpr must be a number in (0, 1], got {tpr!r}")
        f, z = self._pair(features, logits)
        y = self._labels(labels, f.shape[0], z.shape[1])
        if f.shape[0] < 2:
            raise ConfigError(f"{self.name}: need at least 2 calibration samples, got {f.shape[0]}")
        if self.min_per_class:
            counts = np.bincount(y, minlength=z.shape[1])
            few = np.flatnonzero(counts < self.min_per_class)
            if few.size:
                raise ConfigError(
                    f"{self.name} needs at least {self.min_per_class} calibration samples of "
                    f"every class 0..{z.shape[1] - 1}; too few for classes {few.tolist()} "
                    f"(counts {counts[few].tolist()})")
        self.threshold = None  # a refit that fails leaves the detector unfitted, not mixed
        calibration_scores = self._fit(f, z, y, head)
        self.feature_dim, self.num_classes = int(f.shape[1]), int(z.shape[1])
        self.threshold = threshold_at(np.asarray(calibration_scores, np.float64), float(tpr))
        return self

    def score_trusted(self, features: np.ndarray, logits: np.ndarray,
                      probabilities: np.ndarray | None = None, *,
                      confidence: np.ndarray | None = None,
                      logit_max: np.ndarray | None = None) -> np.ndarray:
        """Scores for outputs of the runtime's own pipeline, without input validation.

        The device runtime calls this on every prediction: its features and logits come
        from the encoder and head it runs, so their shapes are known and re-checking them
        would only add latency. What the runtime already computed (``probabilities``, the
        top probability ``confidence`` and the largest logit ``logit_max``, each per
        sample) lets logit-based detectors skip recomputing it. Use :meth:`score` for
        other data.
        """
        if not self.fitted:
            raise ConfigError(f"{self.name} detector is not fitted: call fit() first")
        return self._score(features, logits)

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """OOD scores ``(N,)`` float64: higher means more out-of-distribution.

        Raises :class:`~edgecl.ConfigError` before :meth:`fit`, :class:`~edgecl.InvalidInput`
        for inputs whose shape does not match the fitted dimensions or that hold NaN/inf.
        """
        if not self.fitted:
            raise ConfigError(f"{self.name} detector is not fitted: call fit() first")
        f, z = self._pair(features, logits)
        if f.shape[1] != self.feature_dim or z.shape[1] != self.num_classes:
            raise InvalidInput(
                f"{self.name} was fitted on features (N, {self.feature_dim}) and logits "
                f"(N, {self.num_classes}), got {f.shape} and {z.shape}")
        if f.shape[0] == 0:
            return np.zeros(0, dtype=np.float64)
        return np.asarray(self._score(f, z), dtype=np.float64)

    def is_ood(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Boolean ``(N,)``: ``score > threshold``."""
        scores = self.score(features, logits)
        return scores > self.threshold

    def state(self) -> dict[str, np.ndarray]:
        """The learned state as named numpy arrays (threshold and dimensions included)."""
        if not self.fitted:
            raise ConfigError(f"{self.name} detector is not fitted: nothing to save")
        out = {
            "threshold": np.array(self.threshold, dtype=np.float64),
            "feature_dim": np.array(self.feature_dim, dtype=np.int64),
            "num_classes": np.array(self.num_classes, dtype=np.int64),
        }
        for key, value in self._arrays().items():
            out[key] = np.asarray(value)
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], **hyperparameters: Any) -> Self:
        """Rebuild a fitted detector from :meth:`state` and :meth:`hyperparameters`."""
        det = cls(**hyperparameters)
        try:
            threshold = float(np.asarray(state["threshold"], dtype=np.float64))
            dims = [int(np.asarray(state[k])) for k in ("feature_dim", "num_classes")]
            if not math.isfinite(threshold) or min(dims) < 1:
                raise ConfigError(f"{cls.name} state has a bad threshold or dimensions")
            det.feature_dim, det.num_classes = dims
            det._set_arrays({k: np.asarray(v) for k, v in state.items() if k not in _BASE_KEYS})
        except ConfigError:
            raise
        except KeyError as exc:
            raise ConfigError(f"{cls.name} state lacks the array {exc}") from None
        except (TypeError, ValueError, np.linalg.LinAlgError) as exc:
            raise ConfigError(f"{cls.name} state is unusable: {exc}") from exc
        det.threshold = threshold
        try:  # the arrays must fit the stored dimensions: score one all-zero sample
            probe = det.score(np.zeros((1, dims[0])), np.zeros((1, dims[1])))
        except (ValueError, IndexError, np.linalg.LinAlgError) as exc:
            raise ConfigError(f"{cls.name} state does not fit its dimensions: {exc}") from exc
        if probe.shape != (1,):
            raise ConfigError(f"{cls.name} state does not fit its dimensions")
        return det

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"

    # -- helpers ----------------------------------------------------------------------------
    def _pair(self, features: Any, logits: Any) -> tuple[np.ndarray, np.ndarray]:
        f = _matrix(features, "features")
        z = _matrix(logits, "logits")
        if f.shape[0] != z.shape[0]:
            raise InvalidInput(f"features have {f.shape[0]} rows, logits {z.shape[0]}")
        if f.shape[1] == 0 or z.shape[1] == 0:
            raise InvalidInput(f"empty feature or class dimension: {f.shape}, {z.shape}")
        return f, z

    @staticmethod
    def _labels(labels: Any, n: int, num_classes: int) -> np.ndarray:
        y = np.asarray(labels)
        if y.ndim != 1 or y.shape[0] != n:
            raise InvalidInput(f"labels must have shape ({n},), got {y.shape}")
        if y.dtype.kind == "f":
            if not np.isfinite(y).all() or not np.array_equal(y, np.round(y)):
                raise InvalidInput("labels must be integers")
        elif y.dtype.kind not in "iu":
            raise InvalidInput(f"labels must be integers, got dtype {y.dtype}")
        y = y.astype(np.int64)
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise InvalidInput(f"labels must lie in [0, {num_classes}), got "
                               f"[{y.min()}, {y.max()}]")
        return y


def logsumexp(z: np.ndarray) -> np.ndarray:
    """Row-wise ``log(sum(exp(z)))``, stable, float64."""
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
