"""ModelBundle: load and verify a bundle directory; write one from parts."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgecl._exceptions import BundleError, ConfigError
from edgecl.bundle._files import fsync_dir, sha256_file
from edgecl.bundle._manifest import (
    ENCODER_ONNX,
    ENCODER_PT2,
    HEADS,
    MANIFEST,
    InputSpec,
    Manifest,
    parse_manifest,
)
from edgecl.bundle._probe import (
    PROBE_FILE,
    probe_to_bytes,
    read_probe,
    synthetic_probe,
    update_bounds,
)
from edgecl.heads import Head, head_from_spec

_HEAD_PREFIX = "head/"
MAX_MANIFEST_BYTES = 4 << 20


@dataclass(frozen=True)
class ModelBundle:
    """A verified bundle directory: manifest, encoder files and the initial head."""

    path: Path
    manifest: Manifest
    head: Head

    @property
    def input_spec(self) -> InputSpec:
        """The input spec every predict call is validated against."""
        return self.manifest.input

    @property
    def encoder_onnx(self) -> Path:
        """Path of the ONNX encoder (what the device runs)."""
        return self.path / ENCODER_ONNX

    @property
    def encoder_pt2(self) -> Path:
        """Path of the torch.export mirror of the same encoder (what the cloud differentiates)."""
        return self.path / ENCODER_PT2

    @property
    def encoder_sha256(self) -> str:
        """sha256 of ``encoder.onnx``: the identity of the encoder."""
        return self.manifest.encoder_sha256

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names, in head output order."""
        return self.manifest.class_names

    def probe_inputs(self) -> np.ndarray:
        """The fixed inputs every candidate update is tried on: the shipped ``probe.npz``,
        else a deterministic synthetic probe from the input spec."""
        shipped = read_probe(self.path, self.manifest)
        return shipped if shipped is not None else synthetic_probe(self.input_spec)

    def update_bounds(self) -> dict[str, float]:
        """Largest absolute value per update part the manifest declares (others: the
        default, :data:`edgecl.bundle.DEFAULT_UPDATE_BOUND`)."""
        return update_bounds(self.manifest)


def load_bundle(path: str | os.PathLike[str], *, verify_hashes: bool = True) -> ModelBundle:
    """Load a bundle directory, verifying schema, sizes and sha256 of every file.

    Raises :class:`~edgecl.BundleError` naming the file and the reason when anything is
    missing, truncated, corrupt or tampered.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError("not a bundle directory", path=str(root))
    mpath = root / MANIFEST
    try:
        if mpath.stat().st_size > MAX_MANIFEST_BYTES:
            raise BundleError(f"larger than {MAX_MANIFEST_BYTES} bytes", path=str(mpath))
        text = mpath.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError("missing manifest.json", path=str(mpath)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"unreadable ({exc})", path=str(mpath)) from exc
    manifest = parse_manifest(text, str(mpath))
    for name, entry in manifest.files.items():
        _verify_file(root / name, entry, check_hash=verify_hashes)
    head = _load_head(root / HEADS, manifest)
    return ModelBundle(path=root, manifest=manifest, head=head)


def _verify_file(path: Path, entry: dict[str, Any], *, check_hash: bool) -> None:
    if not path.is_file():
        raise BundleError("missing file listed in the manifest", path=str(path))
    size = path.stat().st_size
    if size != entry["bytes"]:
        reason = "truncated" if size < entry["bytes"] else "size changed"
        raise BundleError(f"{reason}: manifest says {entry['bytes']} bytes, found {size}",
                          path=str(path))
    if check_hash and sha256_file(path) != entry["sha256"]:
        raise BundleError("sha256 mismatch: the file is corrupt or was tampered with",
                          path=str(path))


def _load_head(path: Path, manifest: Manifest) -> Head:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k[len(_HEAD_PREFIX):]: npz[k] for k in npz.files
                      if k.startswith(_HEAD_PREFIX)}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BundleError(f"cannot read head arrays ({exc})", path=str(path)) from exc
    try:
        head = head_from_spec(manifest.head, arrays)
    except ConfigError as exc:
        raise BundleError(f"head does not match the manifest: {exc}", path=str(path)) from exc
    if head.feature_dim != manifest.feature_dim or head.num_classes != manifest.num_classes:
        raise BundleError(
            f"head is {head.feature_dim}->{head.num_classes}, manifest says "
            f"{manifest.feature_dim}->{manifest.num_classes}", path=str(path))
    return head


def write_bundle(
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    encoder_onnx: bytes,
    encoder_pt2: bytes,
    head: Head,
    input_spec: InputSpec,
    class_names: tuple[str, ...],
    export_check: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
    probe: np.ndarray | None = None,
) -> ModelBundle:
    """Write a complete bundle atomically (a temp folder renamed into place) and load it.

    ``probe``: in-distribution inputs ``(N, C, H, W)`` written as ``probe.npz``, on which
    devices try every candidate update.
    """
    from edgecl import __version__

    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; pass overwrite=True to replace it")
    if head.num_classes != len(class_names):
        raise ConfigError(f"head has {head.num_classes} classes, {len(class_names)} names given")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        (tmp / ENCODER_ONNX).write_bytes(encoder_onnx)
        (tmp / ENCODER_PT2).write_bytes(encoder_pt2)
        with open(tmp / HEADS, "wb") as f:
            np.savez(f, **{_HEAD_PREFIX + k: v for k, v in head.arrays().items()})
        names: tuple[str, ...] = (ENCODER_ONNX, ENCODER_PT2, HEADS)
        if probe is not None:
            (tmp / PROBE_FILE).write_bytes(probe_to_bytes(probe, input_spec))
            names += (PROBE_FILE,)
        files = {
            fname: {"sha256": sha256_file(tmp / fname), "bytes": (tmp / fname).stat().st_size}
            for fname in names
        }
        manifest = Manifest(
            name=name,
            input=input_spec,
            feature_dim=head.feature_dim,
            class_names=tuple(class_names),
            head=head.spec(),
            files=files,
            encoder_sha256=files[ENCODER_ONNX]["sha256"],
            created_by=f"edgecl {__version__}",
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            export_check=export_check or {},
            extra=extra or {},
        )
        _commit_dir(tmp, out, manifest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return load_bundle(out)


def add_bundle_files(bundle_dir: str | os.PathLike[str], files: dict[str, bytes]) -> ModelBundle:
    """Add or replace optional files (e.g. ``ood.npz``) in a bundle, re-hashing the manifest.

    The bundle is verified first; the change is made in a copy that replaces the folder
    with renames, so a crash leaves either the old or the new bundle, never a mix.
    """
    for name in files:
        if name in (MANIFEST, ENCODER_ONNX, ENCODER_PT2, HEADS):
            raise ConfigError(f"{name} is a core bundle file; export a new bundle instead")
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ConfigError(f"{name!r} is not a plain file name")
    bundle = load_bundle(bundle_dir)
    out = bundle.path
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        shutil.copytree(out, tmp, dirs_exist_ok=True)
        entries = dict(bundle.manifest.files)
        for name, data in files.items():
            (tmp / name).write_bytes(data)
            entries[name] = {"sha256": sha256_file(tmp / name), "bytes": len(data)}
        _commit_dir(tmp, out, dataclasses.replace(bundle.manifest, files=entries))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return load_bundle(out)


def _commit_dir(tmp: Path, out: Path, manifest: Manifest) -> None:
    """Write the manifest into ``tmp``, fsync everything, and swap ``tmp`` into ``out``."""
    (tmp / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    for fname in (*manifest.files, MANIFEST):
        with open(tmp / fname, "rb") as f:
            os.fsync(f.fileno())
    if out.exists():
        old = out.with_name(f".{out.name}-old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    fsync_dir(out.parent)
