"""Combinations: feature alignment first, then any other method on the aligned features."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.adapt._align import FeatureAlign
from edgecl.adapt._base import ParametricAdapter, TestTimeAdapter
from edgecl.adapt._entropy import HeadTTA


class Aligned(ParametricAdapter):
    """``align+<method>``: :class:`FeatureAlign` normalises the features, ``inner`` adapts
    on the aligned features and the logits the aligned state gives.

    Publishable as a model state when ``inner`` is parametric (its head/adapter plus the
    feature norm); with an output-only ``inner`` (LAME, AdaNPC) :meth:`state_changes`
    raises :class:`ConfigError`.
    """

    def __init__(self, align: FeatureAlign, inner: TestTimeAdapter) -> None:
        if isinstance(inner, (FeatureAlign, Aligned)):
            raise ConfigError("align can be combined once, with a method other than itself")
        self.align, self.inner = align, inner
        self.name = f"align+{inner.name}"  # type: ignore[misc]
        self.uses_images = inner.uses_images  # type: ignore[misc]

    def hyperparameters(self) -> dict[str, Any]:
        return {"align": self.align.hyperparameters(), "inner": self.inner.hyperparameters()}

    def reset(self) -> None:
        self.align.reset()
        self.inner.reset()

    def state_changes(self) -> dict[str, Any]:
        changes = getattr(self.inner, "state_changes", None)
        if changes is None:
            raise ConfigError(f"{self.inner.name!r} adapts outputs only; it has no state to "
                              "publish")
        return {**self.align.state_changes(), **changes()}

    def adapt(self, features: np.ndarray, logits: np.ndarray, *,
              images: np.ndarray | None = None) -> np.ndarray:
        f, _ = self.check(features, logits)
        norm = self.align.state_changes()["feature_norm"]
        aligned = f if norm is None else norm.apply(f)
        if isinstance(self.inner, HeadTTA):  # it owns head and adapter: give it the norm's
            z = self.inner.logits(aligned)    # output only
        else:
            _, z = self.align.transform(f)
        self.align.observe(f)
        return self.inner.adapt(aligned, z, images=images)
