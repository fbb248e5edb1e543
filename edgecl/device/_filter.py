"""Depthwise 2-D filtering of input images in numpy: the convolutional part of a prompt."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def depthwise_conv2d(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Filter each channel of ``x`` ``(N, C, H, W)`` with its own ``(k, k)`` kernel.

    ``kernel`` is ``(C, k, k)`` with odd ``k``; zero padding keeps the size ("same"). This
    is a cross-correlation, exactly torch's ``conv2d(x, kernel[:, None], padding=k // 2,
    groups=C)``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    >>> identity = np.zeros((1, 3, 3), np.float32); identity[0, 1, 1] = 1
    >>> bool((depthwise_conv2d(x, identity) == x).all())
    True
    """
    k = kernel.shape[-1]
    r = k // 2
    padded = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)))
    windows = sliding_window_view(padded, (k, k), axis=(2, 3))  # (N, C, H, W, k, k)
    return np.einsum("nchwij,cij->nchw", windows, kernel, optimize=True).astype(
        x.dtype, copy=False)
