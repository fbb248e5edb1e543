"""The bundle manifest: input spec, head spec, file hashes; parsing and validation."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from edgecl._exceptions import BundleError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
ENCODER_ONNX = "encoder.onnx"
ENCODER_PT2 = "encoder.pt2"
HEADS = "heads.npz"
REQUIRED_FILES = (ENCODER_ONNX, ENCODER_PT2, HEADS)
_DTYPES = ("float32",)
_LAYOUTS = ("NCHW",)


@dataclass(frozen=True)
class InputSpec:
    """What one input sample must look like.

    ``shape`` is per sample (no batch axis). ``mean``/``std`` (one value per channel)
    describe the normalisation that the encoder graph applies itself: callers pass raw
    values in ``value_range``, and prompts live in that same raw input space.
    """

    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: str = "NCHW"
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    normalisation: str = "in_graph"

    def describe(self) -> str:
        """A one-line human description, used in error messages."""
        lo, hi = self.value_range
        dims = ", ".join(str(d) for d in self.shape)
        return (
            f"{self.dtype} {self.layout} batch (N, {dims}) or one sample ({dims}), "
            f"finite values in [{lo:g}, {hi:g}]"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["value_range"] = list(self.value_range)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        """Parse and validate the JSON form (raises ``ValueError`` / ``KeyError``)."""
        spec = cls(
            shape=tuple(int(v) for v in d["shape"]),
            dtype=str(d["dtype"]),
            layout=str(d["layout"]),
            value_range=(float(d["value_range"][0]), float(d["value_range"][1])),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            normalisation=str(d.get("normalisation", "in_graph")),
        )
        if spec.dtype not in _DTYPES or spec.layout not in _LAYOUTS:
            raise ValueError(f"unsupported dtype/layout {spec.dtype}/{spec.layout}")
        if len(spec.shape) != 3 or min(spec.shape) < 1:
            raise ValueError(f"input shape must be (C, H, W) with positive sizes: {spec.shape}")
        if not spec.value_range[0] < spec.value_range[1]:
            raise ValueError(f"empty value range {spec.value_range}")
        if len(spec.mean) not in (1, spec.shape[0]) or len(spec.std) != len(spec.mean):
            raise ValueError("mean/std need one value, or one per channel")
        if min(spec.std) <= 0:
            raise ValueError("std must be positive")
        return spec


@dataclass(frozen=True)
class Manifest:
    """Everything a device needs to know about a bundle, plus the hashes that protect it."""

    name: str
    input: InputSpec
    feature_dim: int
    class_names: tuple[str, ...]
    head: dict[str, Any]
    files: dict[str, dict[str, Any]]
    encoder_sha256: str
    created_by: str = ""
    created_at: str = ""
    export_check: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def num_classes(self) -> int:
        """Number of classes the head predicts."""
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, with a ``digest`` over its canonical encoding."""
        d: dict[str, Any] = {
            "schema_version": self.schema_version,
            "name": self.name,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "input": self.input.to_dict(),
            "feature_dim": self.feature_dim,
            "class_names": list(self.class_names),
            "head": self.head,
            "prompt": {"shape": list(self.input.shape), "space": "input"},
            "encoder_sha256": self.encoder_sha256,
            "files": self.files,
            "export_check": self.export_check,
            "extra": self.extra,
        }
        d["digest"] = canonical_digest(d)
        return d

    def to_json(self) -> str:
        """Pretty JSON text as written to ``manifest.json``."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


def canonical_digest(d: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``d`` without its ``digest`` key."""
    body = {k: v for k, v in d.items() if k != "digest"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def parse_manifest(text: str, path: str) -> Manifest:
    """Parse and validate ``manifest.json`` text; any problem raises :class:`BundleError`."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"not valid JSON ({exc})", path=path) from exc
    if not isinstance(d, dict):
        raise BundleError("manifest is not a JSON object", path=path)
    version = d.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"unsupported schema_version {version!r} (this edgecl reads {SCHEMA_VERSION})",
            path=path,
        )
    if d.get("digest") != canonical_digest(d):
        raise BundleError("manifest digest mismatch (edited or corrupt)", path=path)
    try:
        files = {str(k): dict(v) for k, v in d["files"].items()}
        for name, entry in files.items():
            if "/" in name or "\\" in name or name.startswith("."):
                raise ValueError(f"file name {name!r} is not a plain file name")
            if not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("bytes"), int):
                raise ValueError(f"files[{name!r}] needs sha256 and bytes")
        missing = [f for f in REQUIRED_FILES if f not in files]
        if missing:
            raise ValueError(f"files lacks {missing}")
        manifest = Manifest(
            name=str(d["name"]),
            input=InputSpec.from_dict(d["input"]),
            feature_dim=int(d["feature_dim"]),
            class_names=tuple(str(c) for c in d["class_names"]),
            head=dict(d["head"]),
            files=files,
            encoder_sha256=str(d["encoder_sha256"]),
            created_by=str(d.get("created_by", "")),
            created_at=str(d.get("created_at", "")),
            export_check=dict(d.get("export_check", {})),
            extra=dict(d.get("extra", {})),
        )
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise BundleError(f"invalid manifest: {exc!r}", path=path) from exc
    if manifest.encoder_sha256 != files[ENCODER_ONNX]["sha256"]:
        raise BundleError("encoder_sha256 does not match files['encoder.onnx']", path=path)
    if manifest.feature_dim < 1 or manifest.num_classes < 1:
        raise BundleError("feature_dim and class_names must be non-empty", path=path)
    return manifest
