"""CoTTA (Wang et al., CVPR 2022) on the device's head and adapter (numpy only).

A mean teacher (EMA of the student, momentum 0.999) gives the targets; when the source
model is unsure of a batch (mean max-probability < ``ap``) the teacher's output is the mean
over ``views`` augmented copies of the inputs (needs ``images`` and an ``encoder``);
the student takes one Adam step on the cross entropy to the teacher's soft labels; then
every parameter element is restored to its source value with probability ``restore``.
The teacher's prediction is the output. Prequential: predictions precede the step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError, InvalidInput
from edgecl.adapt._entropy import HeadTTA
from edgecl.heads import Head, LowRankAdapter
from edgecl.heads._grad import softmax64


def augment(images: np.ndarray, rng: np.random.Generator, *, shift: int = 2,
            noise: float = 0.05, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """One random view per image: integer shift (zero fill), contrast/brightness jitter and
    gaussian noise, clipped to ``[low, high]`` (the light augmentations CoTTA uses)."""
    n = len(images)
    out = np.zeros_like(images)
    dy, dx = rng.integers(-shift, shift + 1, size=2)
    h, w = images.shape[-2:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = images[..., ys, xs]
    contrast = rng.uniform(0.8, 1.2, size=(n,) + (1,) * (images.ndim - 1))
    bright = rng.uniform(-0.1, 0.1, size=(n,) + (1,) * (images.ndim - 1))
    mean = out.mean(axis=tuple(range(1, images.ndim)), keepdims=True)
    out = (out - mean) * contrast + mean + bright * (high - low)
    out = out + rng.normal(0.0, noise * (high - low), size=out.shape)
    return np.clip(out, low, high).astype(images.dtype)


class CoTTA(HeadTTA):
    """Mean teacher with augmentation-averaged targets and stochastic restore."""

    name = "cotta"
    uses_images = True

    def __init__(self, head: Head, adapter: LowRankAdapter | None = None, *,
                 lr: float = 1e-3, optimizer: str = "adam",
                 train: tuple[str, ...] = ("head", "adapter"), momentum: float = 0.999,
                 ap: float = 0.92, views: int = 32, restore: float = 0.01,
                 encoder: Callable[[np.ndarray], np.ndarray] | None = None,
                 value_range: tuple[float, float] = (0.0, 1.0), seed: int = 0) -> None:
        if not 0 <= momentum < 1 or not 0 <= ap <= 1 or views < 1 or not 0 <= restore <= 1:
            raise ConfigError("need momentum in [0, 1), ap in [0, 1], views >= 1, "
                              "restore in [0, 1]")
        self.momentum, self.ap, self.views, self.restore = momentum, ap, views, restore
        self.encoder, self.value_range, self.seed_value = encoder, value_range, seed
        super().__init__(head, adapter, lr=lr, optimizer=optimizer, train=train)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "momentum": self.momentum, "ap": self.ap,
                "views": self.views, "restore": self.restore, "seed": self.seed_value}

    def reset(self) -> None:
        super().reset()
        self.source = {k: v.copy() for k, v in self.trainer.params.items()}
        self.teacher = {k: v.copy() for k, v in self.trainer.params.items()}
        self.rng = np.random.default_rng(self.seed_value)
        self.augmented_batches = 0

    def state_changes(self) -> dict[str, Any]:
        """The teacher is what CoTTA predicts with, so the teacher is what is published."""
        student = self.trainer.params
        self.trainer.params = self.teacher
        try:
            return super().state_changes()
        finally:
            self.trainer.params = student

    def _teacher_logits(self, f: np.ndarray, images: np.ndarray | None) -> np.ndarray:
        z = self.logits(f, self.teacher)
        source_conf = softmax64(self.logits(f, self.source)).max(axis=1).mean()
        if source_conf >= self.ap or images is None or self.encoder is None:
            return z
        if len(images) != len(f):
            raise InvalidInput(f"{len(images)} images for {len(f)} feature rows")
        low, high = self.value_range
        views = [self.logits(np.asarray(self.encoder(augment(images, self.rng, low=low,
                                                            high=high)), np.float64),
                             self.teacher) for _ in range(self.views)]
        self.augmented_batches += 1
        return np.mean(views, axis=0)

    def adapt(self, features: np.ndarray, logits: np.ndarray, *,
              images: np.ndarray | None = None) -> np.ndarray:
        f, _ = self.check(features, logits)
        out = softmax64(self.logits(f, self.teacher))
        targets = softmax64(self._teacher_logits(f, images))
        self.trainer.optimizer.step(self.trainer.params, self._grads(f, targets=targets))
        for k, student in self.trainer.params.items():
            self.teacher[k] = self.momentum * self.teacher[k] + (1 - self.momentum) * student
            if k.split(".")[0] in self.train and self.restore > 0:
                mask = self.rng.random(student.shape) < self.restore
                student[mask] = self.source[k][mask]
        return out
