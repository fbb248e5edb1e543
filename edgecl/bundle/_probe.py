"""What a device may accept as an update: value bounds per part and a fixed probe set.

A bundle can ship ``probe.npz`` (a few dozen in-distribution inputs, written at export
from ``real_inputs``): a device tries every candidate update on it, so even a fresh device
with no recent inputs can tell a collapsed or non-finite candidate from a sane one. A
bundle without one gets a deterministic synthetic probe from its input spec
(:func:`synthetic_probe`).

Value bounds: the manifest may declare ``extra["update_bounds"]`` (part name -> largest
absolute value); parts it does not name get :data:`DEFAULT_UPDATE_BOUND`.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np

from edgecl._exceptions import BundleError, ConfigError
from edgecl.bundle._manifest import InputSpec, Manifest

PROBE_FILE = "probe.npz"
#: Largest absolute value of any update part a bundle does not bound itself.
DEFAULT_UPDATE_BOUND = 1e3
#: ``Manifest.extra`` key of the per-part bounds.
BOUNDS_KEY = "update_bounds"
MAX_PROBE = 256
_KEY = "inputs"


def update_bounds(manifest: Manifest) -> dict[str, float]:
    """Part name -> largest accepted absolute value (declared, else the default)."""
    declared = manifest.extra.get(BOUNDS_KEY) or {}
    if not isinstance(declared, dict):
        raise BundleError(f"extra.{BOUNDS_KEY} must map part names to numbers")
    out: dict[str, float] = {}
    for name, bound in declared.items():
        value = float(bound)
        if not np.isfinite(value) or value <= 0:
            raise BundleError(f"extra.{BOUNDS_KEY}[{name!r}] must be finite and > 0")
        out[str(name)] = value
    return out


def bound_of(bounds: dict[str, float], part: str) -> float:
    """The bound of ``part`` (the default where ``bounds`` names none)."""
    return bounds.get(part, DEFAULT_UPDATE_BOUND)


def probe_to_bytes(inputs: np.ndarray, spec: InputSpec) -> bytes:
    """``probe.npz`` content of ``inputs`` ``(N, *spec.shape)``, N in 1..MAX_PROBE."""
    x = np.asarray(inputs, dtype=np.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != spec.shape or not 0 < len(x) <= MAX_PROBE:
        raise ConfigError(f"probe inputs must be (1..{MAX_PROBE}, {spec.shape}), got {x.shape}")
    lo, hi = spec.value_range
    if not np.isfinite(x).all() or x.min() < lo or x.max() > hi:
        raise ConfigError(f"probe inputs must be finite and within [{lo:g}, {hi:g}]")
    buf = io.BytesIO()
    np.savez(buf, **{_KEY: x})
    return buf.getvalue()


def read_probe(bundle_path: Any, manifest: Manifest) -> np.ndarray | None:
    """The shipped probe inputs of a (verified) bundle, or None if it ships none."""
    if PROBE_FILE not in manifest.files:
        return None
    path = bundle_path / PROBE_FILE
    try:
        with np.load(path, allow_pickle=False) as npz:
            x = np.asarray(npz[_KEY], dtype=np.float32)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BundleError(f"cannot read the probe ({exc})", path=str(path)) from exc
    if x.ndim != 4 or tuple(x.shape[1:]) != manifest.input.shape or len(x) == 0 \
            or not np.isfinite(x).all():
        raise BundleError(f"probe has shape {x.shape}, inputs are {manifest.input.shape}",
                          path=str(path))
    return x[:MAX_PROBE]


def synthetic_probe(spec: InputSpec, n: int = 48, seed: int = 0) -> np.ndarray:
    """A deterministic probe from the input spec alone: smooth random blobs and edges
    between the ends of the value range (no data needed, same on every device)."""
    rng = np.random.default_rng(seed)
    c, h, w = spec.shape
    lo, hi = spec.value_range
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    out = np.empty((n, c, h, w), np.float32)
    for i in range(n):
        img = np.zeros((h, w))
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.random(), rng.random(), 0.05 + 0.3 * rng.random()
            img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        img = img / max(img.max(), 1e-6) * rng.random() + 0.1 * rng.random((h, w))
        img = np.clip(img, 0.0, 1.0)
        out[i] = lo + (hi - lo) * np.broadcast_to(img, (c, h, w))
    return out
