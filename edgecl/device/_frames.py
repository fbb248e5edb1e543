"""Where a device agent's frames come from: a directory watched for new ``.npy``/``.npz``
files, standard input (a stream of ``.npy`` records), or a Python callable.

Every source yields float32 batches ``(N, C, H, W)``; a single frame ``(C, H, W)`` is a
batch of one. A file that cannot be read is logged and skipped (moved to ``rejected/``
in a watched directory), never fatal.
"""

from __future__ import annotations

import importlib
import io
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from edgecl._exceptions import ConfigError

log = logging.getLogger("edgecl.device")
SUFFIXES = (".npy", ".npz")
#: Keys of an ``.npz`` file read as frames (the first one present), else its only array.
NPZ_KEYS = ("images", "frames", "x")


def as_batch(array: Any) -> np.ndarray:
    """``array`` as a float32 batch; :class:`ValueError` for anything but 3 or 4 dims."""
    a = np.asarray(array, dtype=np.float32)
    if a.ndim == 3:
        return a[None]
    if a.ndim != 4:
        raise ValueError(f"frames must be (C, H, W) or (N, C, H, W), got shape {a.shape}")
    return a


def read_frames(path: Path) -> np.ndarray:
    """The frames of one ``.npy`` or ``.npz`` file (no pickles)."""
    if path.suffix == ".npy":
        return as_batch(np.load(path, allow_pickle=False))
    with np.load(path, allow_pickle=False) as data:
        names = list(data.files)
        key = next((k for k in NPZ_KEYS if k in names), names[0] if len(names) == 1 else None)
        if key is None:
            raise ValueError(f"an .npz needs one array or one named {NPZ_KEYS}, has {names}")
        return as_batch(data[key])


def directory_frames(path: str | Path, stop: threading.Event, *, poll_s: float = 1.0,
                     after: str = "move") -> Iterator[np.ndarray]:
    """Frames of files appearing in ``path``, oldest name first, until ``stop``; each file
    read is then moved to ``processed/`` (``after="move"``), deleted (``"delete"``) or
    left (``"keep"``: remembered for this run only). Files still being written should be
    created under another name and renamed in (the usual spool rule)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ConfigError(f"frames directory {root} does not exist")
    if after not in ("move", "delete", "keep"):
        raise ConfigError(f"source.after must be move, delete or keep, got {after!r}")
    seen: set[str] = set()
    for sub in ("processed", "rejected"):
        if after == "move" or sub == "rejected":
            (root / sub).mkdir(exist_ok=True)
    while not stop.is_set():
        new = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in SUFFIXES
                     and p.name not in seen)
        for p in new:
            if stop.is_set():
                return
            try:
                frames = read_frames(p)
            except (ValueError, OSError, EOFError) as exc:
                log.warning("skipping an unreadable frames file", extra={"path": str(p),
                                                                        "error": str(exc)})
                p.replace(root / "rejected" / p.name)
                continue
            if after == "move":
                p.replace(root / "processed" / p.name)
            elif after == "delete":
                p.unlink(missing_ok=True)
            else:
                seen.add(p.name)
            yield frames
        if not new:
            stop.wait(poll_s)


def stream_frames(stream: BinaryIO | None = None) -> Iterator[np.ndarray]:
    """Frames of ``.npy`` records written one after another (default: standard input),
    until end of file; a bad record ends the stream (its framing is lost)."""
    src = stream if stream is not None else sys.stdin.buffer
    buffered = src if hasattr(src, "peek") else io.BufferedReader(src)  # type: ignore[arg-type]
    while True:
        if not buffered.peek(1)[:1]:  # type: ignore[attr-defined]
            return
        try:
            yield as_batch(np.load(buffered, allow_pickle=False))
        except (ValueError, EOFError, OSError) as exc:
            log.warning("bad .npy record on the frames stream; stopping it",
                        extra={"error": str(exc)})
            return


def callable_frames(spec: str) -> Iterator[np.ndarray]:
    """Frames from ``package.module:function``, called once with no arguments; it returns
    an iterable of frames or batches."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ConfigError(f"source.callable must be 'package.module:function', got {spec!r}")
    try:
        fn: Callable[[], Any] = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load frames callable {spec!r}: {exc}") from exc
    for item in fn():
        yield as_batch(item)
