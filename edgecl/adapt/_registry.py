"""Registry of test-time adaptation methods."""

from __future__ import annotations

from typing import Any

from edgecl._exceptions import ConfigError
from edgecl.adapt._base import TestTimeAdapter

_ADAPTERS: dict[str, type[TestTimeAdapter]] = {}


def register_adapter(cls: type[TestTimeAdapter]) -> type[TestTimeAdapter]:
    """Register a :class:`TestTimeAdapter` subclass under its ``name`` (a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, TestTimeAdapter)):
        raise ConfigError(f"{cls!r} is not a TestTimeAdapter subclass")
    _ADAPTERS[cls.name] = cls
    return cls


def list_adapters() -> list[str]:
    """Names of the registered methods, sorted."""
    return sorted(_ADAPTERS)


def create_adapter(name: str, **hyperparameters: Any) -> TestTimeAdapter:
    """Build the method registered as ``name``."""
    cls = _ADAPTERS.get(name)
    if cls is None:
        raise ConfigError(f"unknown adaptation method {name!r}; known: {list_adapters()}")
    try:
        return cls(**hyperparameters)
    except TypeError as exc:
        raise ConfigError(f"bad hyperparameters for {name!r}: {exc}") from exc
