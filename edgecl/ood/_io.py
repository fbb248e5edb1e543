"""Fitted detectors on disk: one ``.npz`` (no pickle), tied to one encoder.

Layout: the array ``__edgecl_ood__`` holds JSON metadata (format version, the encoder's
sha256, per detector its registered name, hyperparameters and array names, and a sha256 of
all arrays); detector ``key``'s array ``a`` is stored as ``key/a``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from edgecl._exceptions import BundleError, ConfigError
from edgecl.bundle import atomic_write_bytes
from edgecl.ood._base import Detector
from edgecl.ood._registry import detector_class

FORMAT = "edgecl.ood.detectors"
VERSION = 1
_META = "__edgecl_ood__"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_sha(encoder_sha256: Any) -> str:
    if not isinstance(encoder_sha256, str) or not _SHA256.fullmatch(encoder_sha256):
        raise ConfigError(f"encoder_sha256 must be 64 lowercase hex digits, got "
                          f"{encoder_sha256!r}")
    return encoder_sha256


def _digest(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_detectors(path: str | os.PathLike[str], detectors: Mapping[str, Detector], *,
                   encoder_sha256: str) -> None:
    """Write fitted ``detectors`` (keyed by any name) to one ``.npz``, atomically.

    ``encoder_sha256`` (e.g. ``bundle.encoder_sha256``) ties the file to the encoder whose
    features the detectors were fitted on; :func:`load_detectors` refuses any other.

    Raises
    ------
    ConfigError
        No detectors, a bad key (empty, containing ``/``, starting with ``__``), an unfitted
        detector, or a malformed ``encoder_sha256``.
    """
    sha = _check_sha(encoder_sha256)
    if not detectors:
        raise ConfigError("no detectors to save")
    arrays: dict[str, np.ndarray] = {}
    entries: dict[str, Any] = {}
    for key, det in detectors.items():
        if not isinstance(key, str) or not key or "/" in key or key.startswith("__"):
            raise ConfigError(f"bad detector key {key!r}: non-empty, no '/', no leading '__'")
        if not isinstance(det, Detector):
            raise ConfigError(f"{key!r} is not a Detector: {type(det).__name__}")
        state = det.state()
        entries[key] = {"name": det.name, "hyperparameters": det.hyperparameters(),
                        "arrays": sorted(state)}
        arrays.update({f"{key}/{name}": np.asarray(a) for name, a in state.items()})
    meta = {"format": FORMAT, "version": VERSION, "encoder_sha256": sha,
            "detectors": entries, "arrays_sha256": _digest(arrays)}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays, **{_META: np.array(json.dumps(meta))})
    atomic_write_bytes(path, buffer.getvalue())


def _read(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise BundleError("detector file not found", path=path) from exc
    except Exception as exc:  # not a zip, truncated header, ...: numpy raises many kinds
        raise BundleError(f"not a readable detector file ({exc})", path=path) from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise BundleError("not a detector file (a bare .npy array)", path=path)
    try:
        with loaded:
            if _META not in loaded.files:
                raise BundleError("not an edgecl detector file (no metadata)", path=path)
            meta = json.loads(str(loaded[_META][()]))
            arrays = {k: loaded[k] for k in loaded.files if k != _META}
    except BundleError:
        raise
    except Exception as exc:  # CRC errors, truncated members, zlib errors, bad JSON
        raise BundleError(f"corrupt or truncated detector file ({exc})", path=path) from exc
    if not isinstance(meta, dict):
        raise BundleError("detector metadata is not a JSON object", path=path)
    return meta, arrays


def load_detectors(path: str | os.PathLike[str], *, encoder_sha256: str,
                   names: Collection[str] | None = None) -> dict[str, Detector]:
    """Read the detectors :func:`save_detectors` wrote, for the encoder ``encoder_sha256``.

    The whole file is verified; with ``names`` only those detectors are restored (absent
    names are skipped), which keeps a device from building detectors it will not use.

    Raises
    ------
    BundleError
        Naming the file: missing, corrupt or truncated; made for another encoder; an unknown
        format version or detector name; arrays that do not fit their detector.
    """
    sha = _check_sha(encoder_sha256)
    where = os.fspath(path)
    meta, arrays = _read(where)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise BundleError(f"unsupported detector file format {meta.get('format')!r} version "
                          f"{meta.get('version')!r} (expected {FORMAT!r} {VERSION})", path=where)
    if meta.get("encoder_sha256") != sha:
        theirs = str(meta.get("encoder_sha256"))[:12]
        raise BundleError(f"detectors were fitted for encoder {theirs}..., not this encoder "
                          f"{sha[:12]}...; refit them", path=where)
    if meta.get("arrays_sha256") != _digest(arrays):
        raise BundleError("detector arrays do not match their recorded sha256 (corrupt file)",
                          path=where)
    entries = meta.get("detectors")
    if not isinstance(entries, dict) or not entries:
        raise BundleError("detector file lists no detectors", path=where)
    out: dict[str, Detector] = {}
    for key, entry in entries.items():
        if names is not None and key not in names:
            continue
        try:
            cls = detector_class(entry["name"])
        except ConfigError as exc:
            raise BundleError(f"detector {key!r}: {exc}", path=where) from exc
        except (KeyError, TypeError) as exc:
            raise BundleError(f"detector {key!r}: malformed entry", path=where) from exc
        try:
            state = {name: arrays[f"{key}/{name}"] for name in entry["arrays"]}
            out[key] = cls.from_state(state, **entry["hyperparameters"])
        except (KeyError, TypeError, ConfigError) as exc:
            raise BundleError(f"detector {key!r} ({entry['name']}) cannot be restored: {exc}",
                              path=where) from exc
    return out
