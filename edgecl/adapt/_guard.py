"""A collapse guard for any test-time adapter: reset when predictions degenerate."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.adapt._base import TestTimeAdapter
from edgecl.adapt._lame import _softmax


@dataclass(frozen=True)
class CollapseEvent:
    """The guard fired: at which sample, which class took over, and how much."""

    index: int
    dominant_class: int
    share: float
    source_share: float
    cooldown: int = 0


class CollapseGuard(TestTimeAdapter):
    """Wraps an adapter and watches its predictions over the last ``window`` samples and
    over the most recent ``min_samples`` of them. When one class takes more than
    ``max_share`` of either while the unadapted (source) predictions of the same samples
    are less concentrated (by more than ``margin``), the adapter is
    reset to its initial state (the last good state), a :class:`CollapseEvent` is
    recorded, and the source outputs are served for ``cooldown`` samples before the
    adapter resumes; each further event doubles the cooldown (up to 8x), so a method that
    keeps collapsing spends most of the stream switched off instead of degenerate."""

    def __init__(self, inner: TestTimeAdapter, *, window: int = 500,
                 max_share: float = 0.85, min_samples: int = 100,
                 cooldown: int = 500, margin: float = 0.02) -> None:
        if window < 1 or not 0 < max_share < 1 or not 1 <= min_samples <= window or \
                cooldown < 0:
            raise ConfigError("need window >= 1, max_share in (0, 1), 1 <= min_samples <= "
                              "window, cooldown >= 0")
        self.inner, self.window, self.max_share = inner, window, max_share
        self.min_samples, self.cooldown, self.margin = min_samples, cooldown, margin
        self.name = f"guarded-{inner.name}"  # type: ignore[misc]
        self.uses_images = inner.uses_images  # type: ignore[misc]
        if callable(getattr(inner, "state_changes", None)):  # a parametric method stays one
            self.state_changes = inner.state_changes
        self.events: list[CollapseEvent] = []
        self.reset()

    def hyperparameters(self) -> dict[str, Any]:
        return {"window": self.window, "max_share": self.max_share,
                "min_samples": self.min_samples, "cooldown": self.cooldown,
                "margin": self.margin}

    def reset(self) -> None:
        self.inner.reset()
        self._adapted: deque[int] = deque(maxlen=self.window)
        self._source: deque[int] = deque(maxlen=self.window)
        self._seen = 0
        self._paused = 0  # samples left in the current cooldown

    def _degenerate(self, share: float, source_share: float) -> bool:
        # the source "disagrees" when it is less concentrated than the adapted outputs: on
        # a stream where the source itself is degenerate, only making it worse counts
        return share > self.max_share and share > source_share + self.margin

    @property
    def paused(self) -> bool:
        """True while the guard serves source outputs after a collapse."""
        return self._paused > 0

    def adapt(self, features: np.ndarray, logits: np.ndarray, *,
              images: np.ndarray | None = None) -> np.ndarray:
        f, z = self.check(features, logits)
        self._seen += len(f)
        if self._paused > 0:
            self._paused = max(self._paused - len(f), 0)
            return _softmax(z)
        out = self.inner.adapt(f, z, images=images)
        self._adapted.extend(out.argmax(axis=1).tolist())
        self._source.extend(z.argmax(axis=1).tolist())
        n = len(self._adapted)
        if n >= self.min_samples:
            adapted, source = np.asarray(self._adapted), np.asarray(self._source)
            # two horizons: the whole window, and its most recent min_samples (early warning)
            for horizon in (n, self.min_samples):
                counts = np.bincount(adapted[-horizon:])
                share = counts.max() / horizon
                source_share = np.bincount(source[-horizon:]).max() / horizon
                if self._degenerate(share, source_share):
                    break
            if self._degenerate(share, source_share):
                cooldown = self.cooldown * 2 ** min(len(self.events), 3)
                event = CollapseEvent(self._seen, int(counts.argmax()), float(share),
                                      float(source_share), cooldown)
                seen, events = self._seen, [*self.events, event]
                self.reset()
                self._seen, self.events, self._paused = seen, events, cooldown
                return _softmax(z)  # the reset state: unadapted outputs for this batch
        return out
