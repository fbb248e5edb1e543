"""Exponential backoff with full jitter: the one retry schedule of edgecl."""

from __future__ import annotations

import random

from edgecl._exceptions import ConfigError


class Backoff:
    """Delays ``uniform(0, min(max_s, initial_s * factor**n))`` for the n-th retry.

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter") spreads a fleet's
    reconnections after an outage. :meth:`reset` after a success.

    Examples
    --------
    >>> b = Backoff(initial_s=1.0, factor=2.0, max_s=3.0, seed=0)
    >>> caps = []
    >>> for _ in range(4):
    ...     caps.append(b.cap()); _ = b.next()
    >>> caps
    [1.0, 2.0, 3.0, 3.0]
    >>> b.reset(); b.cap()
    1.0
    """

    def __init__(self, initial_s: float = 0.1, factor: float = 2.0, max_s: float = 30.0,
                 seed: int | None = None) -> None:
        if not (initial_s > 0 and factor >= 1 and max_s >= initial_s):
            raise ConfigError("need initial_s > 0, factor >= 1 and max_s >= initial_s")
        self.initial_s, self.factor, self.max_s = float(initial_s), float(factor), float(max_s)
        self._rng = random.Random(seed)
        self.attempt = 0

    def cap(self) -> float:
        """Upper bound of the next delay."""
        return min(self.max_s, self.initial_s * self.factor ** self.attempt)

    def next(self) -> float:
        """The next delay in seconds (and count the attempt)."""
        delay = self._rng.uniform(0.0, self.cap())
        self.attempt = min(self.attempt + 1, 64)
        return delay

    def reset(self) -> None:
        """Back to the first delay (after a success)."""
        self.attempt = 0
