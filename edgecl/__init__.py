"""edgecl: continual adaptation of vision models on edge devices.

Subpackages: :mod:`edgecl.device` (the torch-free runtime), :mod:`edgecl.bundle`
(model bundles), :mod:`edgecl.heads` (numpy heads), :mod:`edgecl.zoo` (reference data
and models).
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
]
