"""Model bundles: the unit that export writes and both device and cloud load.

A bundle is a directory with ``manifest.json``, ``encoder.onnx`` (what the device runs),
``encoder.pt2`` (the same encoder as a torch.export program, for the cloud) and
``heads.npz`` (and optionally ``probe.npz``, the inputs devices try updates on).
:func:`load_bundle` verifies schema, sizes and sha256 of every file.
:func:`export_bundle` needs ``edgecl[cloud]`` (torch); importing this package does not.
"""

from __future__ import annotations

from typing import Any

from edgecl.bundle._bundle import ModelBundle, add_bundle_files, load_bundle, write_bundle
from edgecl.bundle._files import atomic_write_bytes, sha256_file
from edgecl.bundle._manifest import SCHEMA_VERSION, InputSpec, Manifest
from edgecl.bundle._probe import DEFAULT_UPDATE_BOUND, PROBE_FILE, bound_of, synthetic_probe
from edgecl.bundle._stats import STATS_FILE, FeatureStats, read_feature_stats

__all__ = [
    "DEFAULT_UPDATE_BOUND",
    "FeatureStats",
    "InputSpec",
    "Manifest",
    "ModelBundle",
    "PROBE_FILE",
    "SCHEMA_VERSION",
    "STATS_FILE",
    "add_bundle_files",
    "atomic_write_bytes",
    "bound_of",
    "export_bundle",
    "load_bundle",
    "read_feature_stats",
    "sha256_file",
    "synthetic_probe",
    "write_bundle",
]


def __getattr__(name: str) -> Any:
    if name == "export_bundle":  # imported lazily: it pulls in torch
        from edgecl.bundle._export import export_bundle

        return export_bundle
    raise AttributeError(f"module 'edgecl.bundle' has no attribute {name!r}")
