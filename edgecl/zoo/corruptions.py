"""Image corruptions for 28x28 grayscale digits, ImageNet-C and MNIST-C style.

The definitions follow Hendrycks & Dietterich, "Benchmarking Neural Network Robustness
to Common Corruptions and Perturbations" (ICLR 2019, ImageNet-C) and Mu & Gilmer,
"MNIST-C: A Robustness Benchmark for Computer Vision" (2019). They are written from
the published definitions with numpy, :mod:`scipy.ndimage` and Pillow (JPEG only).
Where ImageNet-C's parameters are in pixels of a 224x224 image they are rescaled for
28x28 digits, as each function's docstring says; severity 5 is meant to be hard but
still readable by a human.

Every corruption maps images in [0, 1] to images in [0, 1]; geometric warps use
order-1 (bilinear) interpolation with a constant 0 fill outside the image.

>>> import numpy as np
>>> x = np.zeros((2, 1, 28, 28), dtype=np.float32)
>>> corrupt(x, "brightness", 3).max()
np.float32(0.3)
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError, InvalidInput, MissingDependency

try:
    from scipy import ndimage
except ImportError as exc:  # pragma: no cover - scipy ships with the 'sim' extra
    raise MissingDependency(
        "scipy is required for edgecl.zoo.corruptions: pip install 'edgecl[zoo]'"
    ) from exc

__all__ = ["CORRUPTION_FAMILIES", "SEVERITIES", "CorruptionSpec", "corrupt", "list_corruptions"]

SIZE = 28
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
_CENTRE = (SIZE - 1) / 2.0  # 13.5: the centre of the pixel grid
_GRID_Y, _GRID_X = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
_RANGE_TOL = 1e-5

Transform = Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class CorruptionSpec:
    """One registered corruption.

    Attributes
    ----------
    name, family : str
        Registry name and family (``noise``, ``blur``, ``photometric``, ``geometric``,
        ``overlay`` or ``inverse``).
    params : tuple
        One parameter per severity 1..5, handed to ``fn``.
    fn : callable
        ``fn(x, param, rng)`` on a float64 batch ``(N, 28, 28)``; the result is clipped
        to [0, 1] by :func:`corrupt`.
    random : bool
        Whether the output depends on the random generator.
    """

    name: str
    family: str
    params: tuple[Any, ...]
    fn: Transform
    random: bool = True

    def __post_init__(self) -> None:
        if len(self.params) != len(SEVERITIES):
            raise ValueError(f"{self.name}: need {len(SEVERITIES)} severity parameters")


# --------------------------------------------------------------------------- helpers


def _warp(x: np.ndarray, src_y: np.ndarray, src_x: np.ndarray) -> np.ndarray:
    """Sample each image at its own source coordinates, bilinear with zero fill."""
    n = x.shape[0]
    batch = np.broadcast_to(np.arange(n, dtype=np.float64)[:, None, None], x.shape)
    coords = np.stack([batch, np.broadcast_to(src_y, x.shape), np.broadcast_to(src_x, x.shape)])
    return ndimage.map_coordinates(x, coords, order=1, mode="grid-constant", cval=0.0)


def _affine(x: np.ndarray, mats: np.ndarray, shifts: np.ndarray | None = None) -> np.ndarray:
    """Warp with per-image inverse maps ``src = mats @ (out - centre) + centre + shifts``.

    ``mats`` is ``(N, 2, 2)`` acting on (row, col); ``shifts`` is ``(N, 2)``.
    """
    dy, dx = _GRID_Y - _CENTRE, _GRID_X - _CENTRE
    m = mats[:, :, :, None, None]
    src_y = m[:, 0, 0] * dy + m[:, 0, 1] * dx + _CENTRE
    src_x = m[:, 1, 0] * dy + m[:, 1, 1] * dx + _CENTRE
    if shifts is not None:
        src_y = src_y + shifts[:, 0, None, None]
        src_x = src_x + shifts[:, 1, None, None]
    return _warp(x, src_y, src_x)


def _zoom_matrix(factor: float) -> np.ndarray:
    """Order-1 interpolation matrix zooming one axis by ``factor`` about the centre."""
    src = (np.arange(SIZE) - _CENTRE) / factor + _CENTRE
    return np.clip(1.0 - np.abs(src[:, None] - np.arange(SIZE)[None, :]), 0.0, None)


def _zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom every image about its centre (``factor > 1`` zooms in), zero fill."""
    m = _zoom_matrix(factor)
    return m @ x @ m.T


def _random_signs(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0]), size=n)


def _oriented_grid(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image pixel coordinates (u, v); half the images, drawn at random, transposed."""
    flip = (rng.random(n) < 0.5)[:, None, None]
    return np.where(flip, _GRID_X, _GRID_Y), np.where(flip, _GRID_Y, _GRID_X)


def _stroke(dist: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased intensity of a stroke of ``width`` pixels at distance ``dist``."""
    return np.clip(width / 2.0 + 0.5 - dist, 0.0, 1.0)


def _blur_each(x: np.ndarray, kernels: list[np.ndarray]) -> np.ndarray:
    """Convolve image ``i`` with ``kernels[i]`` (zero fill)."""
    return np.stack([ndimage.convolve(img, k, mode="constant") for img, k in zip(x, kernels)])


# ----------------------------------------------------------------------------- noise


def _gaussian_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive gaussian noise ``x + N(0, sigma)``; sigma is stronger than ImageNet-C's."""
    return x + rng.normal(0.0, sigma, size=x.shape)


def _shot_noise(x: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise ``Poisson(x * photons) / photons`` (ImageNet-C values)."""
    return rng.poisson(x * photons) / photons


def _impulse_noise(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper: a fraction ``amount`` of pixels set to 0 or 1, half each."""
    u = rng.random(x.shape)
    out = np.where(u < amount / 2.0, 0.0, x)
    return np.where((u >= amount / 2.0) & (u < amount), 1.0, out)


def _speckle_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative noise ``x + x * N(0, sigma)``; sigma above ImageNet-C's, whose
    strongest level barely affects black-background digits."""
    return x + x * rng.normal(0.0, sigma, size=x.shape)


# ------------------------------------------------------------------------------ blur


def _gaussian_blur(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur. Rescaled: ImageNet-C's sigma 1..6 px at 224 px is far too strong
    at 28 px, sigma here is 0.6..1.5 px."""
    return ndimage.gaussian_filter(x, sigma=(0.0, sigma, sigma), mode="constant")


def _disk_kernel(radius: float, alias_sigma: float) -> np.ndarray:
    """Disk of ``radius`` px, normalised, softened by a small gaussian (anti-aliasing)."""
    half = int(np.ceil(radius)) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    disk = (yy**2 + xx**2 <= radius**2).astype(np.float64)
    disk = ndimage.gaussian_filter(disk / disk.sum(), alias_sigma, mode="constant")
    return disk / disk.sum()


def _defocus_blur(x: np.ndarray, p: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Convolution with a disk ``(radius, alias_sigma)``. Rescaled: ImageNet-C's radius
    3..10 px at 224 px becomes 1..3 px."""
    kernel = _disk_kernel(*p)
    return ndimage.convolve(x, kernel[None], mode="constant")


def _line_kernel(length: float, angle_deg: float) -> np.ndarray:
    """Normalised anti-aliased line of ``length`` px through the centre at ``angle_deg``."""
    half = int(np.ceil(length / 2.0)) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    theta = np.deg2rad(angle_deg)
    uy, ux = -np.sin(theta), np.cos(theta)  # rows grow downwards
    along = np.clip(yy * uy + xx * ux, -length / 2.0, length / 2.0)
    dist = np.hypot(yy - along * uy, xx - along * ux)
    kernel = np.clip(1.0 - dist, 0.0, None)
    return kernel / kernel.sum()


def _motion_blur(x: np.ndarray, length: float, rng: np.random.Generator) -> np.ndarray:
    """Averaging along a line of ``length`` px at an angle drawn in [-45, 45] degrees.

    ImageNet-C uses ImageMagick's one-sided gaussian motion blur (radius 10..20 px at
    224 px); here the kernel is a centred box line of 3..10 px.
    """
    angles = rng.uniform(-45.0, 45.0, size=x.shape[0])
    return _blur_each(x, [_line_kernel(length, a) for a in angles])


def _zoom_blur(x: np.ndarray, max_zoom: float, rng: np.random.Generator) -> np.ndarray:
    """Average of centre zooms 1, 1.02, ..., ``max_zoom`` (scale-free; ImageNet-C's
    maxima 1.10..1.30 are pushed to 1.12..1.40 to hurt a 28 px digit as much)."""
    zooms = np.arange(1.0, max_zoom + 1e-9, 0.02)
    total = np.zeros_like(x)
    for z in zooms:
        total += _zoom(x, float(z))
    return total / len(zooms)


# ------------------------------------------------------------------------ photometric


def _contrast(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Shrink each image towards its mean: ``(x - mean) * factor + mean``."""
    mean = x.mean(axis=(1, 2), keepdims=True)
    return (x - mean) * factor + mean


def _brightness(x: np.ndarray, delta: float, rng: np.random.Generator) -> np.ndarray:
    """Add ``delta`` (ImageNet-C adds it to HSV value, which for gray is the pixel)."""
    return x + delta


def _plasma(rng: np.random.Generator, n: int, size: int, decay: float) -> np.ndarray:
    """``n`` plasma fractals ``(n, size, size)`` in [0, 1] by diamond-square (periodic)."""
    a = np.zeros((n, size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = a[:, ::step, ::step]
        sq = corners + np.roll(corners, -1, axis=1)
        sq = (sq + np.roll(sq, -1, axis=2)) / 4.0
        a[:, half::step, half::step] = sq + rng.uniform(-wibble, wibble, sq.shape)
        centres = a[:, half::step, half::step]
        top = (corners + np.roll(corners, -1, axis=2) + centres + np.roll(centres, 1, axis=1)) / 4
        a[:, ::step, half::step] = top + rng.uniform(-wibble, wibble, top.shape)
        left = (corners + np.roll(corners, -1, axis=1) + centres + np.roll(centres, 1, axis=2)) / 4
        a[:, half::step, ::step] = left + rng.uniform(-wibble, wibble, left.shape)
        step, wibble = half, wibble / decay
    a -= a.min(axis=(1, 2), keepdims=True)
    return a / np.maximum(a.max(axis=(1, 2), keepdims=True), 1e-12)


def _fog(x: np.ndarray, p: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Add ``strength * plasma`` then renormalise by ``max / (max + strength)``.

    Rescaled: the fractal is generated on a 32 px map (ImageNet-C: 256) and cropped to
    28, so its blobs have the same size relative to the image; ``(strength, decay)``
    are ImageNet-C's, slightly gentler at severity 1-2.
    """
    strength, decay = p
    fractal = _plasma(rng, x.shape[0], 32, decay)[:, :SIZE, :SIZE]
    peak = x.max(axis=(1, 2), keepdims=True)
    return (x + strength * fractal) * peak / (peak + strength)


def _pixelate_matrix(cells: int) -> np.ndarray:
    """Box (area-average) downsampling matrix ``(cells, 28)``."""
    edges = np.linspace(0.0, SIZE, cells + 1)
    pix = np.arange(SIZE)[None, :]
    lo = np.maximum(edges[:-1, None], pix)
    hi = np.minimum(edges[1:, None], pix + 1)
    return np.clip(hi - lo, 0.0, None) * (cells / SIZE)


def _pixelate(x: np.ndarray, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Box-downsample to ``cells x cells`` then nearest-upsample to 28x28.

    ImageNet-C keeps 0.6..0.25 of the side; here 21..9 cells of 28 (0.75..0.32),
    because a digit is only ~20 px tall.
    """
    down = _pixelate_matrix(cells)
    small = down @ x @ down.T
    idx = np.minimum(((np.arange(SIZE) + 0.5) * cells / SIZE).astype(np.int64), cells - 1)
    return small[:, idx][:, :, idx]


def _jpeg(x: np.ndarray, quality: int, rng: np.random.Generator) -> np.ndarray:
    """Round-trip through Pillow's JPEG encoder at ``quality`` (ImageNet-C values)."""
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow ships with the 'sim' extra
        raise MissingDependency("Pillow is required for jpeg: pip install 'edgecl[zoo]'") from exc
    out = np.empty_like(x)
    for i, img in enumerate(np.round(x * 255.0).astype(np.uint8)):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        with Image.open(buf) as decoded:
            out[i] = np.asarray(decoded.convert("L"), dtype=np.float64) / 255.0
    return out


# ------------------------------------------------------------------------- geometric


def _elastic(x: np.ndarray, p: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Elastic distortion (Simard et al. 2003, as in MNIST-C's ``elastic_transform``):
    uniform(-1, 1) displacement fields smoothed by a gaussian of ``sigma`` px, times
    ``alpha``. Severity 4 is about Simard's (34, 4) for MNIST; 5 is stronger."""
    alpha, sigma = p
    field = rng.uniform(-1.0, 1.0, size=(x.shape[0], 2, SIZE, SIZE))
    field = ndimage.gaussian_filter(field, sigma=(0.0, 0.0, sigma, sigma), mode="reflect") * alpha
    return _warp(x, _GRID_Y + field[:, 0], _GRID_X + field[:, 1])


def _rotate(x: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """Rotation about the centre by ``degrees`` with a random sign (MNIST-C: 0.2..1 rad)."""
    theta = np.deg2rad(degrees) * _random_signs(rng, x.shape[0])
    c, s = np.cos(theta), np.sin(theta)
    return _affine(x, np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], 1))


def _shear(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Horizontal shear about the centre, ``col' = col + k * (row - centre)``, random sign.

    MNIST-C shears by 0.2..1 rad, which at 1 rad pushes most digits off the image;
    here the factor goes to 0.8 (about 39 degrees).
    """
    k = factor * _random_signs(rng, x.shape[0])
    one, zero = np.ones_like(k), np.zeros_like(k)
    return _affine(x, np.stack([np.stack([one, zero], -1), np.stack([-k, one], -1)], 1))


def _scale(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Zoom out by ``factor`` < 1 about the image centre (MNIST-C values)."""
    return _zoom(x, factor)


def _translate(x: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """Shift by ``shift`` px in a random direction (MNIST-C: 1..5 px on each axis)."""
    phi = rng.uniform(0.0, 2.0 * np.pi, size=x.shape[0])
    shifts = -shift * np.stack([np.sin(phi), np.cos(phi)], axis=1)
    eye = np.broadcast_to(np.eye(2), (x.shape[0], 2, 2))
    return _affine(x, eye, shifts)


# --------------------------------------------------------------------------- overlays


def _stripe(x: np.ndarray, p: tuple[int, float], rng: np.random.Generator) -> np.ndarray:
    """``count`` parallel full-length bright lines of ``width`` px, 6 px apart, at a random
    angle through the middle. (MNIST-C's ``stripe`` inverts the side bands; this one
    draws over the digit so that it has severities.)"""
    count, width = p
    n = x.shape[0]
    phi = rng.uniform(0.0, np.pi, size=(n, 1, 1))
    offset = rng.uniform(-3.0, 3.0, size=(n, 1, 1))
    across = (_GRID_Y - _CENTRE) * np.cos(phi) + (_GRID_X - _CENTRE) * np.sin(phi) - offset
    marks = [_stroke(np.abs(across - 6.0 * (k - (count - 1) / 2)), width) for k in range(count)]
    return x + np.max(marks, axis=0)


def _zigzag(x: np.ndarray, p: tuple[int, float], rng: np.random.Generator) -> np.ndarray:
    """``count`` zigzags (half-period 2 px, amplitude 2 px, as MNIST-C) of ``width`` px
    across the image at a random offset and slight tilt, horizontal or vertical."""
    count, width = p
    n, half_period, amp = x.shape[0], 2.0, 2.0
    marks = []
    for _ in range(count):
        rows, cols = _oriented_grid(rng, n)
        r0 = rng.uniform(4.0, 24.0, size=(n, 1, 1))
        tilt = np.arctan(rng.uniform(-5.0, 5.0, size=(n, 1, 1)) / 23.0)
        u = (cols - 2.0) * np.cos(tilt) + (rows - r0) * np.sin(tilt)
        v = (rows - r0) * np.cos(tilt) - (cols - 2.0) * np.sin(tilt)
        wave = amp * (2.0 / np.pi) * np.arcsin(np.sin(np.pi * u / (2.0 * half_period)))
        dist = np.abs(v - wave) / np.hypot(1.0, amp / half_period)
        dist = np.where((u >= 0.0) & (u <= 23.0 / np.cos(tilt)), dist, np.inf)
        marks.append(_stroke(dist, width))
    return x + np.max(marks, axis=0)


def _dotted_line(x: np.ndarray, p: tuple[int, float], rng: np.random.Generator) -> np.ndarray:
    """``count`` dotted lines edge to edge between random rows (MNIST-C), dots about 1.5 px
    wide every ``spacing`` px, horizontal or vertical."""
    count, spacing = p
    n = x.shape[0]
    marks = []
    for _ in range(count):
        rows, cols = _oriented_grid(rng, n)
        r0, r1 = rng.uniform(2.0, 26.0, size=(2, n, 1, 1))
        phase = rng.uniform(0.0, spacing, size=(n, 1, 1))
        length = np.hypot(SIZE - 1.0, r1 - r0)
        uy, ux = (r1 - r0) / length, (SIZE - 1.0) / length
        u = (rows - r0) * uy + cols * ux
        v = (rows - r0) * ux - cols * uy
        along = np.mod(u - phase, spacing)
        dist = np.hypot(v, np.minimum(along, spacing - along))
        dist = np.where((u >= 0.0) & (u <= length), dist, np.inf)
        marks.append(_stroke(dist, 1.5))
    return x + np.max(marks, axis=0)


def _inverse(x: np.ndarray, p: None, rng: np.random.Generator) -> np.ndarray:
    """``1 - x``; the same at every severity."""
    return 1.0 - x


# --------------------------------------------------------------------------- registry

_SPECS: tuple[CorruptionSpec, ...] = (
    CorruptionSpec("gaussian_noise", "noise", (0.08, 0.16, 0.26, 0.38, 0.5), _gaussian_noise),
    CorruptionSpec("shot_noise", "noise", (60.0, 25.0, 12.0, 5.0, 3.0), _shot_noise),
    CorruptionSpec("impulse_noise", "noise", (0.03, 0.06, 0.09, 0.17, 0.27), _impulse_noise),
    CorruptionSpec("speckle_noise", "noise", (0.2, 0.35, 0.5, 0.7, 1.0), _speckle_noise),
    CorruptionSpec(
        "defocus_blur",
        "blur",
        ((1.0, 0.3), (1.5, 0.4), (2.0, 0.5), (2.5, 0.5), (3.0, 0.5)),
        _defocus_blur,
        random=False,
    ),
    CorruptionSpec("motion_blur", "blur", (3.0, 4.5, 6.0, 8.0, 10.0), _motion_blur),
    CorruptionSpec("zoom_blur", "blur", (1.12, 1.2, 1.28, 1.34, 1.4), _zoom_blur, random=False),
    CorruptionSpec("gaussian_blur", "blur", (0.6, 0.8, 1.0, 1.25, 1.5), _gaussian_blur, False),
    CorruptionSpec("contrast", "photometric", (0.5, 0.38, 0.27, 0.18, 0.12), _contrast, False),
    CorruptionSpec("brightness", "photometric", (0.1, 0.2, 0.3, 0.4, 0.5), _brightness, False),
    CorruptionSpec(
        "fog",
        "photometric",
        ((1.0, 2.0), (1.5, 2.0), (2.0, 1.7), (2.5, 1.5), (3.0, 1.4)),
        _fog,
    ),
    CorruptionSpec("pixelate", "photometric", (21, 17, 14, 11, 9), _pixelate, random=False),
    CorruptionSpec("jpeg", "photometric", (25, 18, 15, 10, 7), _jpeg, random=False),
    CorruptionSpec(
        "elastic",
        "geometric",
        ((14.0, 4.0), (20.0, 4.0), (26.0, 4.0), (33.0, 4.0), (40.0, 4.0)),
        _elastic,
    ),
    CorruptionSpec("rotate", "geometric", (12.0, 24.0, 36.0, 48.0, 60.0), _rotate),
    CorruptionSpec("shear", "geometric", (0.2, 0.35, 0.5, 0.65, 0.8), _shear),
    CorruptionSpec("scale", "geometric", (0.9, 0.8, 0.7, 0.6, 0.5), _scale, random=False),
    CorruptionSpec("translate", "geometric", (1.2, 2.4, 3.6, 4.8, 6.0), _translate),
    CorruptionSpec(
        "stripe", "overlay", ((1, 1.5), (2, 1.5), (2, 2.0), (3, 2.0), (4, 2.0)), _stripe
    ),
    CorruptionSpec(
        "zigzag", "overlay", ((1, 1.0), (1, 1.5), (2, 1.0), (2, 1.5), (3, 1.5)), _zigzag
    ),
    CorruptionSpec(
        "dotted_line", "overlay", ((1, 3.0), (2, 3.0), (3, 3.0), (3, 2.2), (4, 2.0)), _dotted_line
    ),
    CorruptionSpec("inverse", "inverse", (None,) * 5, _inverse, random=False),
)

_REGISTRY: dict[str, CorruptionSpec] = {spec.name: spec for spec in _SPECS}

CORRUPTION_FAMILIES: dict[str, str] = {spec.name: spec.family for spec in _SPECS}


def list_corruptions() -> list[str]:
    """Names of all registered corruptions, sorted."""
    return sorted(_REGISTRY)


def _check_images(images: np.ndarray) -> np.ndarray:
    """Validate shape, dtype, finiteness and range; return a float64 ``(N, 28, 28)`` copy."""
    arr = np.asarray(images)
    if arr.dtype.kind != "f":
        raise InvalidInput(f"images must be a float array in [0, 1], got dtype {arr.dtype}")
    if arr.shape[-3:] != (1, SIZE, SIZE) or arr.ndim not in (3, 4):
        raise InvalidInput(
            f"images must have shape (N, 1, {SIZE}, {SIZE}) or (1, {SIZE}, {SIZE}), got {arr.shape}"
        )
    if arr.size and not np.isfinite(arr).all():
        raise InvalidInput("images contain NaN or infinite values")
    if arr.size and (arr.min() < -_RANGE_TOL or arr.max() > 1.0 + _RANGE_TOL):
        raise InvalidInput(
            f"images must lie in [0, 1], got values in [{arr.min():.4g}, {arr.max():.4g}]"
        )
    return np.clip(arr.reshape(-1, SIZE, SIZE).astype(np.float64), 0.0, 1.0)


def corrupt(
    images: np.ndarray,
    name: str,
    severity: int,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` to a batch of digits.

    Parameters
    ----------
    images : np.ndarray
        Float array ``(N, 1, 28, 28)`` or ``(1, 28, 28)`` with values in [0, 1].
    name : str
        One of :func:`list_corruptions`.
    severity : int
        1 (mild) to 5 (hard).
    rng : np.random.Generator or int or None
        Source of the per-image randomness (angles, signs, noise); an integer seed gives
        reproducible output.

    Returns
    -------
    np.ndarray
        A new float32 array of the input's shape, clipped to [0, 1].

    Raises
    ------
    ConfigError
        Unknown ``name``, severity outside 1..5 or an unusable ``rng``.
    InvalidInput
        Images of the wrong shape, dtype or range.
    """
    spec = _REGISTRY.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ConfigError(f"unknown corruption {name!r}; valid: {', '.join(list_corruptions())}")
    if (
        isinstance(severity, bool)
        or not isinstance(severity, int | np.integer)
        or int(severity) not in SEVERITIES
    ):
        raise ConfigError(f"severity must be an integer in 1..5, got {severity!r}")
    try:
        gen = np.random.default_rng(rng)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"rng must be a numpy Generator, an integer seed or None: {exc}") from exc
    shape = np.shape(images)
    x = _check_images(images)
    if x.shape[0] == 0:
        return np.zeros(shape, dtype=np.float32)
    out = spec.fn(x, spec.params[int(severity) - 1], gen)
    return np.clip(out, 0.0, 1.0).astype(np.float32).reshape(shape)
