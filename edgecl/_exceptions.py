"""The one exception hierarchy of edgecl.

Every error the library raises on purpose derives from :class:`EdgeclError`.
Lower-level errors (onnxruntime, torch, OS) are wrapped with ``raise ... from exc``.

    EdgeclError
    ├── InvalidInput        bad images or arrays given to a public call (also a ValueError)
    ├── BundleError         a model bundle that is missing, corrupt, truncated or tampered
    ├── ExportError         an encoder that cannot be exported faithfully
    ├── ConfigError         bad configuration or arguments (also a ValueError)
    ├── StorageError        a local database or file that is corrupt, too new or failing
    ├── UpdateRejected      a model update that is tampered, replayed, incompatible or harmful
    └── MissingDependency   an optional extra is not installed (also an ImportError)
"""

from __future__ import annotations


class EdgeclError(Exception):
    """Base class of every error raised by edgecl."""


class InvalidInput(EdgeclError, ValueError):
    """Input that does not match the declared spec (shape, dtype, range, finiteness)."""


class BundleError(EdgeclError):
    """A model bundle that cannot be trusted or read; the message names file and reason."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message if path is None else f"{path}: {message}")
        self.path = path


class ExportError(EdgeclError):
    """Export refused: the exported encoder does not reproduce the torch model."""


class ConfigError(EdgeclError, ValueError):
    """Invalid configuration or arguments."""


class StorageError(EdgeclError):
    """A local store (outbox database, state file) is corrupt, too new, or failing."""


class UpdateRejected(EdgeclError):
    """A model update the device refuses; ``reason`` says why (the device keeps serving)."""

    def __init__(self, reason: str, *, version: int | None = None) -> None:
        super().__init__(reason if version is None else f"update v{version} rejected: {reason}")
        self.reason = reason
        self.version = version


class MissingDependency(EdgeclError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


def require(module: str, extra: str) -> object:
    """Import ``module`` or raise :class:`MissingDependency` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"{module!r} is required for this feature: pip install 'edgecl[{extra}]'"
        ) from exc
