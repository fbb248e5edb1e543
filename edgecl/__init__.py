"""edgecl: continual adaptation of vision models on edge devices.

Subpackages: :mod:`edgecl.device` (the torch-free runtime), :mod:`edgecl.cloud` (the
teacher service), :mod:`edgecl.fleet` (the fleet simulator), :mod:`edgecl.bundle` (model
bundles), :mod:`edgecl.heads` (numpy heads), :mod:`edgecl.ood` (OOD and drift detectors),
:mod:`edgecl.adapt` (test-time adaptation), :mod:`edgecl.wire` (update payloads),
:mod:`edgecl.zoo` (reference data and models), :mod:`edgecl.eval` and :mod:`edgecl.bench`
(evaluations and benchmarks). :func:`default_home` is the cache root.
"""

from __future__ import annotations

from edgecl._exceptions import (
    BundleError,
    ConfigError,
    EdgeclError,
    ExportError,
    InvalidInput,
    MissingDependency,
    StorageError,
    UpdateRejected,
)
from edgecl._home import default_home

__version__ = "0.1.0"

__all__ = [
    "BundleError",
    "ConfigError",
    "EdgeclError",
    "ExportError",
    "InvalidInput",
    "MissingDependency",
    "StorageError",
    "UpdateRejected",
    "__version__",
    "default_home",
]
