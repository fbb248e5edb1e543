"""Tests of edgecl.zoo.corruptions: the contract, determinism, severity and definitions."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from edgecl._exceptions import ConfigError, InvalidInput
from edgecl.zoo.corruptions import (
    _REGISTRY,
    CORRUPTION_FAMILIES,
    corrupt,
    list_corruptions,
)
from edgecl.zoo.data import load_mnist

NAMES = list_corruptions()
FAMILIES = {"noise", "blur", "photometric", "geometric", "overlay", "inverse"}


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_mnist().test.images[:64]


def _param(name: str, severity: int) -> Any:
    return _REGISTRY[name].params[severity - 1]


def _grey(n: int = 128, value: float = 0.5) -> np.ndarray:
    return np.full((n, 1, 28, 28), value, dtype=np.float32)


def _impulse(n: int = 1) -> np.ndarray:
    x = np.zeros((n, 1, 28, 28), dtype=np.float32)
    x[:, 0, 14, 14] = 1.0
    return x


def _mass(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1).sum(axis=1)


def _com(x: np.ndarray) -> np.ndarray:
    """Centre of mass (row, col) per image."""
    yy, xx = np.mgrid[0:28, 0:28]
    m = _mass(x)
    img = x[:, 0]
    return np.stack([(img * yy).sum((1, 2)) / m, (img * xx).sum((1, 2)) / m], axis=1)


def _moments(img: np.ndarray) -> np.ndarray:
    """Second central moments [[var_row, cov], [cov, var_col]] of one 28x28 image."""
    yy, xx = np.mgrid[0:28, 0:28]
    w = img / img.sum()
    cy, cx = (w * yy).sum(), (w * xx).sum()
    vyy = (w * (yy - cy) ** 2).sum()
    vxx = (w * (xx - cx) ** 2).sum()
    vxy = (w * (yy - cy) * (xx - cx)).sum()
    return np.array([[vyy, vxy], [vxy, vxx]])


def _tv(x: np.ndarray) -> np.ndarray:
    """Total variation per image."""
    img = x[:, 0].astype(np.float64)
    return np.abs(np.diff(img, axis=1)).sum((1, 2)) + np.abs(np.diff(img, axis=2)).sum((1, 2))


def _clipped_std(sigma: float, half: float) -> float:
    """Std of ``clip(sigma * Z, -half, half)`` for standard normal Z."""
    a = half / sigma
    tail = 0.5 * math.erfc(a / math.sqrt(2.0))
    pdf = math.exp(-a * a / 2.0) / math.sqrt(2.0 * math.pi)
    return sigma * math.sqrt(1.0 - 2.0 * tail - 2.0 * a * pdf + 2.0 * a * a * tail)


# ---------------------------------------------------------------- registry and contract


def test_registry() -> None:
    assert len(NAMES) >= 15
    assert NAMES == sorted(NAMES)
    assert set(CORRUPTION_FAMILIES) == set(NAMES)
    assert set(CORRUPTION_FAMILIES.values()) <= FAMILIES
    for name in NAMES:
        assert len(_REGISTRY[name].params) == 5


@pytest.mark.parametrize("name", NAMES)
def test_output_contract(name: str, digits: np.ndarray) -> None:
    before = digits.copy()
    for severity in (1, 5):
        out = corrupt(digits, name, severity, rng=0)
        assert out.shape == digits.shape and out.dtype == np.float32
        assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
        assert not np.shares_memory(out, digits)
        np.testing.assert_array_equal(digits, before)
    single = digits[3].copy()
    out1 = corrupt(single, name, 3, rng=1)
    assert out1.shape == (1, 28, 28) and out1.dtype == np.float32
    np.testing.assert_array_equal(single, digits[3])
    as64 = corrupt(digits[:4].astype(np.float64), name, 2, rng=5)
    np.testing.assert_allclose(as64, corrupt(digits[:4], name, 2, rng=5), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_determinism(name: str, digits: np.ndarray) -> None:
    x = digits[:16]
    a = corrupt(x, name, 4, rng=123)
    np.testing.assert_array_equal(a, corrupt(x, name, 4, rng=123))
    np.testing.assert_array_equal(
        corrupt(x, name, 4, rng=np.random.default_rng(7)),
        corrupt(x, name, 4, rng=np.random.default_rng(7)),
    )
    other = corrupt(x, name, 4, rng=124)
    if _REGISTRY[name].random:
        assert not np.array_equal(a, other)
    else:
        np.testing.assert_array_equal(a, other)


@pytest.mark.parametrize("name", NAMES)
def test_severity_monotonic(name: str, digits: np.ndarray) -> None:
    diffs = [float(np.abs(corrupt(digits, name, s, rng=0) - digits).mean()) for s in range(1, 6)]
    if name == "inverse":
        assert max(diffs) - min(diffs) < 1e-7
        return
    assert all(b >= a - 1e-7 for a, b in itertools.pairwise(diffs)), diffs
    assert diffs[4] > diffs[0], diffs


def test_empty_batch() -> None:
    out = corrupt(np.zeros((0, 1, 28, 28), np.float32), "rotate", 2, rng=0)
    assert out.shape == (0, 1, 28, 28) and out.dtype == np.float32


# ------------------------------------------------------------------------------ errors


def test_unknown_name() -> None:
    with pytest.raises(ConfigError, match="gaussian_noise") as info:
        corrupt(_grey(1), "snow", 1)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("severity", [0, 6, -1, 2.0, True, "3", None])
def test_bad_severity(severity: object) -> None:
    with pytest.raises(ConfigError, match=r"1\.\.5"):
        corrupt(_grey(1), "contrast", severity)  # type: ignore[arg-type]


def test_numpy_integer_severity() -> None:
    out = corrupt(_grey(1), "brightness", np.int64(2))
    np.testing.assert_allclose(out, 0.7, atol=1e-6)


@pytest.mark.parametrize(
    "shape", [(28, 28), (4, 28, 28), (4, 3, 28, 28), (4, 1, 32, 32), (2, 1, 1, 28, 28)]
)
def test_bad_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInput, match="shape"):
        corrupt(np.zeros(shape, np.float32), "rotate", 1)


def test_bad_values() -> None:
    with pytest.raises(InvalidInput, match="float"):
        corrupt(np.zeros((1, 1, 28, 28), np.uint8), "rotate", 1)
    nan = _grey(1)
    nan[0, 0, 3, 3] = np.nan
    with pytest.raises(InvalidInput, match="NaN"):
        corrupt(nan, "rotate", 1)
    with pytest.raises(InvalidInput, match=r"\[0, 1\]"):
        corrupt(_grey(1, 255.0), "rotate", 1)


def test_bad_rng() -> None:
    with pytest.raises(ConfigError, match="rng"):
        corrupt(_grey(1), "rotate", 1, rng="seed")  # type: ignore[arg-type]


# ------------------------------------------------------------------- definitions: noise


def _check_gaussian_noise(digits: np.ndarray) -> None:
    for s in range(1, 6):
        sigma = _param("gaussian_noise", s)
        res = corrupt(_grey(), "gaussian_noise", s, rng=s) - 0.5
        assert abs(res.mean()) < 0.005
        assert res.std() == pytest.approx(_clipped_std(sigma, 0.5), rel=0.03)


def _check_shot_noise(digits: np.ndarray) -> None:
    for s in range(1, 6):
        photons = _param("shot_noise", s)
        out = corrupt(_grey(), "shot_noise", s, rng=s).astype(np.float64)
        np.testing.assert_allclose(out * photons, np.round(out * photons), atol=1e-3)
        if s <= 3:  # clipping at 1 is negligible
            assert out.mean() == pytest.approx(0.5, abs=0.005)
            assert out.var() == pytest.approx(0.5 / photons, rel=0.05)
    np.testing.assert_array_equal(corrupt(_grey(4, 0.0), "shot_noise", 5, rng=0), 0.0)


def _check_impulse_noise(digits: np.ndarray) -> None:
    for s in range(1, 6):
        amount = _param("impulse_noise", s)
        out = corrupt(_grey(), "impulse_noise", s, rng=s)
        assert set(np.unique(out)) <= {0.0, 0.5, 1.0}
        assert (out == 0.0).mean() == pytest.approx(amount / 2, abs=0.005)
        assert (out == 1.0).mean() == pytest.approx(amount / 2, abs=0.005)


def _check_speckle_noise(digits: np.ndarray) -> None:
    for s in range(1, 6):
        sigma = _param("speckle_noise", s)
        res = corrupt(_grey(), "speckle_noise", s, rng=s) - 0.5
        assert res.std() == pytest.approx(_clipped_std(0.5 * sigma, 0.5), rel=0.03)
    out = corrupt(digits, "speckle_noise", 5, rng=0)
    np.testing.assert_array_equal(out[digits == 0.0], 0.0)  # multiplicative


# -------------------------------------------------------------------- definitions: blur


def _check_blur_common(name: str, digits: np.ndarray) -> None:
    for s in (1, 5):
        out = corrupt(digits, name, s, rng=0)
        assert (_tv(out) < _tv(digits)).all()
        assert ((out > 0.9).sum((1, 2, 3)) < (digits > 0.9).sum((1, 2, 3))).all()


def _check_gaussian_blur(digits: np.ndarray) -> None:
    _check_blur_common("gaussian_blur", digits)
    for s in range(1, 6):
        sigma = _param("gaussian_blur", s)
        resp = corrupt(_impulse(), "gaussian_blur", s)[0, 0].astype(np.float64)
        assert resp.sum() == pytest.approx(1.0, abs=1e-4)
        var = _moments(resp)
        assert var[0, 0] == pytest.approx(sigma**2, rel=0.05)
        assert var[1, 1] == pytest.approx(sigma**2, rel=0.05)


def _check_defocus_blur(digits: np.ndarray) -> None:
    _check_blur_common("defocus_blur", digits)
    yy, xx = np.mgrid[0:28, 0:28]
    radius_of = np.hypot(yy - 14, xx - 14)
    for s in range(1, 6):
        radius = _param("defocus_blur", s)[0]
        resp = corrupt(_impulse(), "defocus_blur", s)[0, 0]
        assert resp.sum() == pytest.approx(1.0, abs=1e-4)
        np.testing.assert_allclose(resp, resp.T, atol=1e-7)  # a disk: symmetric
        np.testing.assert_allclose(resp[1:, 1:], resp[1:, 1:][::-1, ::-1], atol=1e-7)
        support = radius_of[resp > 0.05 * resp.max()]
        assert radius - 0.5 <= support.max() <= radius + 1.5


def _check_motion_blur(digits: np.ndarray) -> None:
    _check_blur_common("motion_blur", digits)
    length = _param("motion_blur", 5)
    resp = corrupt(_impulse(32), "motion_blur", 5, rng=3)[:, 0].astype(np.float64)
    angles = []
    for r in resp:
        assert r.sum() == pytest.approx(1.0, abs=1e-4)
        evals, evecs = np.linalg.eigh(_moments(r))
        assert evals[0] < 0.35  # thin line
        assert 0.7 * length**2 / 12 < evals[1] < 1.4 * length**2 / 12
        major = evecs[:, 1]
        angles.append(np.degrees(np.arctan(abs(major[0]) / max(abs(major[1]), 1e-12))))
    assert max(angles) <= 46.0  # angle drawn in [-45, 45] degrees
    assert np.std(angles) > 5.0  # and drawn per image


def _check_zoom_blur(digits: np.ndarray) -> None:
    # Zooming in lengthens the strokes, so total variation need not drop; sharpness does.
    for s in (1, 5):
        out = corrupt(digits, "zoom_blur", s)
        assert (out > 0.9).sum() < 0.9 * (digits > 0.9).sum()
    # A point at the centre stays put; a point off-centre smears along the radius.
    x = np.zeros((1, 1, 28, 28), np.float32)
    x[0, 0, 13:15, 22] = 1.0  # on the horizontal through the centre (row 13.5)
    out = corrupt(x, "zoom_blur", 5)[0, 0]
    assert (out[13:15, 22:] > 0).sum() >= 6  # pushed outwards along the row
    assert out[:12].max() == 0.0 and out[16:].max() == 0.0


# ------------------------------------------------------------- definitions: photometric


def _check_contrast(digits: np.ndarray) -> None:
    for s in range(1, 6):
        factor = _param("contrast", s)
        out = corrupt(digits, "contrast", s).astype(np.float64)
        d = digits.astype(np.float64)
        np.testing.assert_allclose(out.mean((1, 2, 3)), d.mean((1, 2, 3)), atol=1e-5)
        np.testing.assert_allclose(out.std((1, 2, 3)), factor * d.std((1, 2, 3)), atol=1e-5)


def _check_brightness(digits: np.ndarray) -> None:
    for s in range(1, 6):
        delta = _param("brightness", s)
        out = corrupt(digits, "brightness", s)
        np.testing.assert_allclose(out, np.clip(digits + delta, 0, 1), atol=1e-6)
        assert (out.mean((1, 2, 3)) > digits.mean((1, 2, 3))).all()


def _check_fog(digits: np.ndarray) -> None:
    for s in (1, 5):
        strength = _param("fog", s)[0]
        out = corrupt(digits, "fog", s, rng=s).astype(np.float64)
        d = digits.astype(np.float64)
        peak = d.max(axis=(1, 2, 3), keepdims=True)
        assert (out.max(axis=(1, 2, 3)) <= peak[:, 0, 0, 0] + 1e-6).all()
        # Undo the renormalisation: what was added is strength * a fractal in [0, 1].
        fractal = (out * (peak + strength) / peak - d) / strength
        assert fractal.min() > -1e-4 and fractal.max() < 1 + 1e-4
        spread = fractal.max(axis=(1, 2, 3)) - fractal.min(axis=(1, 2, 3))
        assert (spread > 0.5).all()
        assert out[d == 0].mean() > 0.1  # the background is fogged


def _check_pixelate(digits: np.ndarray) -> None:
    for s in range(1, 6):
        cells = _param("pixelate", s)
        out = corrupt(digits, "pixelate", s)
        for axis in (2, 3):
            changes = np.any(np.diff(out, axis=axis) != 0, axis=tuple({0, 1, 2, 3} - {axis}))
            assert np.count_nonzero(changes) <= cells - 1
        np.testing.assert_allclose(out.mean(), digits.mean(), rtol=0.1)


def _check_jpeg(digits: np.ndarray) -> None:
    for s in (1, 5):
        out = corrupt(digits, "jpeg", s)
        assert not np.array_equal(out, digits)
        assert np.abs(out - digits).mean() < 0.06
        np.testing.assert_allclose(out * 255, np.round(out * 255), atol=1e-3)


# -------------------------------------------------------------- definitions: geometric


def _check_rotate(digits: np.ndarray) -> None:
    degrees = _param("rotate", 5)
    out = corrupt(digits, "rotate", 5, rng=2)
    np.testing.assert_allclose(_mass(out), _mass(digits), rtol=0.08)
    signs = []
    for clean, rot in zip(digits[:, 0], out[:, 0]):
        corr = [
            np.corrcoef(ndimage.rotate(rot, a, reshape=False, order=1).ravel(), clean.ravel())[0, 1]
            for a in (degrees, -degrees)
        ]
        assert max(corr) > 0.8
        signs.append(int(np.argmax(corr)))
    assert 0 < sum(signs) < len(signs)  # both directions occur


def _check_shear(digits: np.ndarray) -> None:
    factor = _param("shear", 2)
    out = corrupt(digits, "shear", 2, rng=4)
    np.testing.assert_allclose(_mass(out), _mass(digits), rtol=0.05)
    ks = []
    for clean, sheared in zip(digits[:, 0], out[:, 0]):
        before, after = _moments(clean), _moments(sheared)
        ks.append((after[0, 1] - before[0, 1]) / before[0, 0])  # d cov(row, col) / var(row)
    ks_arr = np.array(ks)
    np.testing.assert_allclose(np.abs(ks_arr), factor, rtol=0.15)
    assert (ks_arr > 0).any() and (ks_arr < 0).any()


def _check_scale(digits: np.ndarray) -> None:
    for s in (1, 5):
        factor = _param("scale", s)
        out = corrupt(digits, "scale", s)
        np.testing.assert_allclose(_mass(out), factor**2 * _mass(digits), rtol=0.05)
        np.testing.assert_allclose(_com(out) - 13.5, factor * (_com(digits) - 13.5), atol=0.2)


def _check_translate(digits: np.ndarray) -> None:
    shift = _param("translate", 2)
    out = corrupt(digits, "translate", 2, rng=6)
    moved = _com(out) - _com(digits)
    distance = np.hypot(moved[:, 0], moved[:, 1])
    assert np.median(distance) == pytest.approx(shift, abs=0.02)
    assert (np.abs(distance - shift) < 0.1).mean() > 0.9  # the rest lost a bit off the edge
    directions = np.arctan2(moved[:, 0], moved[:, 1])
    assert np.ptp(directions) > np.pi  # random directions


def _check_elastic(digits: np.ndarray) -> None:
    out = corrupt(digits, "elastic", 5, rng=8)
    assert _mass(out).mean() == pytest.approx(_mass(digits).mean(), rel=0.1)
    # Bilinear warping reproduces a linear ramp exactly, so warping the ramp ``col / 27``
    # reveals the column displacement field: gaussian-smoothed uniform(-1, 1) noise times
    # alpha, whose std is about alpha / (sigma * sqrt(12 * pi)).
    alpha, sigma = _param("elastic", 5)
    ramp = np.broadcast_to(np.arange(28, dtype=np.float32) / 27, (32, 1, 28, 28)).copy()
    field = (corrupt(ramp, "elastic", 5, rng=9) - ramp)[:, 0, 8:20, 8:20] * 27
    assert abs(field.mean()) < 0.3
    assert field.std() == pytest.approx(alpha / (sigma * math.sqrt(12 * math.pi)), rel=0.25)
    neighbours = np.corrcoef(field[:, :, 1:].ravel(), field[:, :, :-1].ravel())[0, 1]
    assert neighbours > 0.9  # smooth, not per-pixel jitter
    flat = corrupt(_grey(8), "elastic", 5, rng=9)[:, 0, 6:22, 6:22]
    np.testing.assert_allclose(flat, 0.5, atol=1e-6)


# ------------------------------------------------------------- definitions: overlays


def _check_overlay(name: str, digits: np.ndarray) -> None:
    for s in (1, 5):
        out = corrupt(digits, name, s, rng=s)
        assert (out >= digits - 1e-7).all()  # drawn on top, nothing removed
        new_bright = (out > 0.5) & (digits < 0.1)
        assert (new_bright.sum((1, 2, 3)) > 0).mean() > 0.9
    few = (corrupt(digits, name, 1, rng=0) > 0.5).sum()
    many = (corrupt(digits, name, 5, rng=0) > 0.5).sum()
    assert many > few


def _check_inverse(digits: np.ndarray) -> None:
    for s in range(1, 6):
        np.testing.assert_allclose(corrupt(digits, "inverse", s), 1.0 - digits, atol=1e-7)


CHECKS: dict[str, Callable[[np.ndarray], None]] = {
    "gaussian_noise": _check_gaussian_noise,
    "shot_noise": _check_shot_noise,
    "impulse_noise": _check_impulse_noise,
    "speckle_noise": _check_speckle_noise,
    "gaussian_blur": _check_gaussian_blur,
    "defocus_blur": _check_defocus_blur,
    "motion_blur": _check_motion_blur,
    "zoom_blur": _check_zoom_blur,
    "contrast": _check_contrast,
    "brightness": _check_brightness,
    "fog": _check_fog,
    "pixelate": _check_pixelate,
    "jpeg": _check_jpeg,
    "rotate": _check_rotate,
    "shear": _check_shear,
    "scale": _check_scale,
    "translate": _check_translate,
    "elastic": _check_elastic,
    "stripe": lambda d: _check_overlay("stripe", d),
    "zigzag": lambda d: _check_overlay("zigzag", d),
    "dotted_line": lambda d: _check_overlay("dotted_line", d),
    "inverse": _check_inverse,
}


@pytest.mark.parametrize("name", NAMES)
def test_definition(name: str, digits: np.ndarray) -> None:
    assert name in CHECKS, f"no definition check for {name}"
    CHECKS[name](digits)
