"""Where the newest domain of a target's uploads begins, seen from the cloud.

A device's own drift signal (its OOD score) changes with every update it applies, so the
cloud finds domain changes itself, on a signal no update touches: the frozen encoder's
features of the raw uploads (no prompt, no filter). :func:`newest_segment_start` is a
binary segmentation restricted to the newest segment: the split of the time-ordered
features with the largest standardised mean difference is a change when that statistic
exceeds ``threshold``, and the search continues after it.

The statistic, for a split into ``a`` (older, ``n_a`` samples) and ``b`` (newer)::

    T = n_a n_b / (n_a + n_b) * mean_d (mean_a[d] - mean_b[d])^2 / pooled_var[d]

is about 1 when both sides come from one distribution (a mean of ``D`` chi-square(1)
terms); a severity-5 corruption change moves it to tens or hundreds.
"""

from __future__ import annotations

import numpy as np

from edgecl._exceptions import InvalidInput


def split_statistics(features: np.ndarray, min_size: int) -> np.ndarray:
    """``T`` for every split ``s`` in ``[min_size, n - min_size]`` (index ``s - min_size``)."""
    f = np.asarray(features, np.float64)
    n = len(f)
    if n < 2 * min_size:
        return np.zeros(0)
    c1, c2 = np.cumsum(f, axis=0), np.cumsum(f * f, axis=0)
    tot1, tot2 = c1[-1], c2[-1]
    s = np.arange(min_size, n - min_size + 1)
    na, nb = s[:, None].astype(np.float64), (n - s)[:, None].astype(np.float64)
    sa1, sa2 = c1[s - 1], c2[s - 1]
    mean_a, mean_b = sa1 / na, (tot1 - sa1) / nb
    ss_a = sa2 - na * mean_a ** 2
    ss_b = (tot2 - sa2) - nb * mean_b ** 2
    pooled = np.maximum((ss_a + ss_b) / np.maximum(n - 2, 1), 1e-12)
    scale = (na * nb / n)[:, 0]
    return scale * np.mean((mean_a - mean_b) ** 2 / pooled, axis=1)


def newest_segment_start(features: np.ndarray, *, threshold: float = 12.0,
                         min_size: int = 12) -> int:
    """Index of the first sample of the newest segment of ``features`` ``(N, D)``
    (time-ordered, oldest first); 0 when no split's statistic exceeds ``threshold``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> f = np.concatenate([rng.normal(0, 1, (60, 8)), rng.normal(2, 1, (40, 8))])
    >>> newest_segment_start(f)
    60
    >>> newest_segment_start(rng.normal(0, 1, (100, 8)))
    0
    """
    f = np.asarray(features)
    if f.ndim != 2:
        raise InvalidInput(f"features must be (N, D), got shape {f.shape}")
    if threshold <= 0 or min_size < 2:
        raise InvalidInput("threshold must be > 0 and min_size >= 2")
    start = 0
    while True:
        stats = split_statistics(f[start:], min_size)
        if len(stats) == 0 or float(stats.max()) < threshold:
            return start
        start += int(np.argmax(stats)) + min_size
