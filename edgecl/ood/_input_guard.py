"""Do the inputs still look like those a state was put in service on? (numpy only)

:class:`InputDriftMonitor` finds a change of environment against a long baseline and is
blind for a while after each change. An update the cloud learned for one environment must
not stay in service for long after the inputs moved away from it, so the device also
checks, from the moment it applies an update, that the images keep the statistics of
those it saw just before: :class:`InputGuard` compares the mean of each
:func:`image_statistics` over a short sliding window with the reference's mean, in units
of its standard error, and fires when any of them departs by more than ``z``.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.ood._input_drift import image_statistics


class InputGuard:
    """Fires when a short window of inputs stops matching a reference set of inputs.

    ``set_reference(images)`` takes the reference (at least ``min_reference`` images);
    :meth:`update` then consumes images in order and returns the index (since the
    reference was set) of the first image at which, over the last ``window`` images, some
    statistic's mean lies more than ``z`` standard errors from the reference mean
    (``se = sd_ref * sqrt(1/window + 1/n_ref)``, ``sd_ref`` floored at ``min_sd``). It
    fires once per reference; :meth:`clear` disarms it. Images larger than ``max_side``
    pixels a side are subsampled by a stride first (the same for the reference and the
    window), so a 3x224x224 frame costs about as much as a 56x56 one.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> guard = InputGuard()
    >>> guard.set_reference(rng.random((64, 1, 8, 8)))
    >>> guard.update(rng.random((200, 1, 8, 8))) is None
    True
    >>> dark = rng.random((40, 1, 8, 8)) * 0.3
    >>> 200 <= guard.update(dark) < 215
    True
    """

    def __init__(self, *, window: int = 24, z: float = 6.0, min_reference: int = 16,
                 min_sd: float = 1e-3, max_side: int = 64) -> None:
        if int(window) < 2 or int(min_reference) < 2 or int(max_side) < 2:
            raise ConfigError("window, min_reference and max_side must be >= 2")
        self.max_side = int(max_side)
        if not (0 < float(z) < float("inf")) or not float(min_sd) > 0:
            raise ConfigError("z and min_sd must be finite and > 0")
        self.window, self.z = int(window), float(z)
        self.min_reference, self.min_sd = int(min_reference), float(min_sd)
        self.clear()

    @property
    def armed(self) -> bool:
        """Whether a reference is set and the guard has not fired on it yet."""
        return self._mean is not None

    def clear(self) -> None:
        """Disarm: no reference, nothing to watch."""
        self._mean: np.ndarray | None = None
        self._se = np.zeros(0)
        self._recent: deque[np.ndarray] = deque(maxlen=self.window)
        self.seen = 0

    def set_reference(self, images: np.ndarray) -> None:
        """Arm with ``images`` as the reference (fewer than ``min_reference``: disarm)."""
        stats = self._statistics(images)
        if len(stats) < self.min_reference:
            self.clear()
            return
        self.clear()
        self._mean = stats.mean(axis=0)
        sd = np.maximum(stats.std(axis=0, ddof=1), self.min_sd)
        self._se = sd * np.sqrt(1.0 / self.window + 1.0 / len(stats))

    def update(self, images: np.ndarray) -> int | None:
        """Consume images in order; the index of the image that fired, else None. Bad
        input raises :class:`~edgecl.InvalidInput` and consumes nothing."""
        if self._mean is None:
            self._statistics(images)  # still validate
            return None
        stats = self._statistics(images)
        for row in stats:
            self._recent.append(row)
            self.seen += 1
            if len(self._recent) == self.window:
                z = np.abs(np.mean(self._recent, axis=0) - self._mean) / self._se
                if float(z.max()) > self.z:
                    fired = self.seen - 1
                    self._mean = None
                    return fired
        return None

    def _statistics(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images)
        if x.ndim in (3, 4) and max(x.shape[-2:]) > self.max_side:
            step = -(-max(x.shape[-2:]) // self.max_side)
            x = x[..., ::step, ::step]
        return image_statistics(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(window={self.window}, z={self.z:g})"

