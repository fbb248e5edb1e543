"""The contract of test-time adaptation methods (no labels, numpy only)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from edgecl._exceptions import InvalidInput


class TestTimeAdapter(ABC):
    """Adapts predictions on a stream without labels, prequentially.

    :meth:`adapt` receives one batch's features and logits (as the runtime computed them),
    returns the adapted class probabilities for that batch, and updates the method's state
    for the batches that follow. Subclasses register with :func:`register_adapter`.
    """

    name: ClassVar[str]
    #: True for methods that also need the batch's raw inputs (``images=``), e.g. CoTTA's
    #: augmented views; the others ignore them.
    uses_images: ClassVar[bool] = False

    @abstractmethod
    def adapt(self, features: np.ndarray, logits: np.ndarray, *,
              images: np.ndarray | None = None) -> np.ndarray:
        """Adapted probabilities ``(N, K)`` for a batch; updates the state.

        ``features`` are the raw encoder features, ``logits`` what the current model state
        gives for them; ``images`` the raw inputs (only methods with ``uses_images``)."""

    @abstractmethod
    def reset(self) -> None:
        """Forget everything learned from the stream."""

    @abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """Constructor arguments, so ``create_adapter(a.name, **a.hyperparameters())``
        builds a fresh equivalent."""

    @staticmethod
    def check(features: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Validated float64 copies of a batch: 2-D, same length, finite, non-empty."""
        f = np.asarray(features, dtype=np.float64)
        z = np.asarray(logits, dtype=np.float64)
        if f.ndim != 2 or z.ndim != 2 or len(f) != len(z) or len(f) == 0:
            raise InvalidInput(f"features (N, D) and logits (N, K) must be non-empty and "
                               f"agree in N, got {f.shape} and {z.shape}")
        if not (np.isfinite(f).all() and np.isfinite(z).all()):
            raise InvalidInput("features or logits contain NaN or inf")
        return f, z


class ParametricAdapter(TestTimeAdapter):
    """A method that adapts parameters of the model state (feature norm, adapter, head), so
    its result can be published as a new :class:`~edgecl.device.ModelState` and run by
    ``predict`` itself (see :class:`edgecl.device.AdaptationWorker`)."""

    @abstractmethod
    def state_changes(self) -> dict[str, Any]:
        """Keyword arguments for ``ModelState.evolve`` that install the adapted parameters
        (any of ``feature_norm``, ``adapter``, ``head``)."""
