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


class CollapseGuard(TestTimeAdapter):
    """Wraps an adapter; when one class takes more than ``max_share`` of the adapted
    predictions over the last ``window`` samples while the unadapted (source) predictions
    disagree (their top class share stays <= ``max_share``), the adapter is reset to its
    initial state (the last good state) and a :class:`CollapseEvent` is recorded."""

    def __init__(self, inner: TestTimeAdapter, *, window: int = 500,
                 max_share: float = 0.9) -> None:
        if window < 1 or not 0 < max_share < 1:
            raise ConfigError("window must be >= 1 and max_share in (0, 1)")
        self.inner, self.window, self.max_share = inner, window, max_share
        self.name = f"guarded-{inner.name}"  # type: ignore[misc]
        self.uses_images = inner.uses_images  # type: ignore[misc]
        if callable(getattr(inner, "state_changes", None)):  # a parametric method stays one
            self.state_changes = inner.state_changes
        self.events: list[CollapseEvent] = []
        self.reset()

    def hyperparameters(self) -> dict[str, Any]:
        return {"window": self.window, "max_share": self.max_share}

    def reset(self) -> None:
        self.inner.reset()
        self._adapted: deque[int] = deque(maxlen=self.window)
        self._source: deque[int] = deque(maxlen=self.window)
        self._seen = 0

    def adapt(self, features: np.ndarray, logits: np.ndarray, *,
              images: np.ndarray | None = None) -> np.ndarray:
        f, z = self.check(features, logits)
        out = self.inner.adapt(f, z, images=images)
        self._adapted.extend(out.argmax(axis=1).tolist())
        self._source.extend(z.argmax(axis=1).tolist())
        self._seen += len(f)
        if len(self._adapted) == self.window:
            counts = np.bincount(np.asarray(self._adapted))
            share = counts.max() / self.window
            source_share = np.bincount(np.asarray(self._source)).max() / self.window
            if share > self.max_share and source_share <= self.max_share:
                self.events.append(CollapseEvent(self._seen, int(counts.argmax()),
                                                 float(share), float(source_share)))
                seen, events = self._seen, self.events
                self.reset()
                self._seen, self.events = seen, events
                return _softmax(z)  # the reset state: unadapted outputs for this batch
        return out
