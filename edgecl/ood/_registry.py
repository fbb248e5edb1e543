"""Registry of detectors: ``register_detector``, ``create_detector``, ``list_detectors``."""

from __future__ import annotations

from typing import Any

from edgecl._exceptions import ConfigError
from edgecl.ood._base import Detector
from edgecl.ood._hdc import HDC
from edgecl.ood._knn import KNN
from edgecl.ood._logits import Energy, MaxSoftmax
from edgecl.ood._mahalanobis import Mahalanobis
from edgecl.ood._vim import ViM

_DETECTORS: dict[str, type[Detector]] = {}


def register_detector(cls: type[Detector]) -> type[Detector]:
    """Register a :class:`Detector` subclass under its ``name`` (usable as a decorator).

    Registering the same class again is a no-op; another class under a taken name is refused.
    """
    name = getattr(cls, "name", None)
    if not (isinstance(cls, type) and issubclass(cls, Detector)):
        raise ConfigError(f"{cls!r} is not a Detector subclass")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{cls.__name__} needs a non-empty class attribute 'name'")
    if _DETECTORS.get(name, cls) is not cls:
        raise ConfigError(f"detector name {name!r} is taken by {_DETECTORS[name].__name__}")
    _DETECTORS[name] = cls
    return cls


def list_detectors() -> list[str]:
    """Names of the registered detectors, sorted."""
    return sorted(_DETECTORS)


def detector_class(name: str) -> type[Detector]:
    """The class registered under ``name``."""
    try:
        return _DETECTORS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown detector {name!r}; known: {list_detectors()}") from None


def create_detector(name: str, **hyperparameters: Any) -> Detector:
    """An unfitted detector ``name`` with the given hyperparameters.

    Examples
    --------
    >>> create_detector("knn", k=5)
    KNN(k=5, normalize=True, max_memory=4096, seed=0)
    """
    cls = detector_class(name)
    try:
        return cls(**hyperparameters)
    except TypeError as exc:
        raise ConfigError(f"bad hyperparameters for {name!r}: {exc}") from exc


for _cls in (Energy, HDC, KNN, Mahalanobis, MaxSoftmax, ViM):
    register_detector(_cls)
