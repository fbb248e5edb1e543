"""Registry of head kinds: ``create_head``, ``list_heads``, ``head_from_spec``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.heads._base import Head
from edgecl.heads._cosine import CosineHead
from edgecl.heads._linear import LinearHead

_HEADS: dict[str, type[Head]] = {}


def register_head(cls: type[Head]) -> type[Head]:
    """Register a :class:`Head` subclass under its ``kind`` (usable as a decorator)."""
    _HEADS[cls.kind] = cls
    return cls


def list_heads() -> list[str]:
    """Names of the registered head kinds."""
    return sorted(_HEADS)


def create_head(kind: str, **params: Any) -> Head:
    """Build a head of ``kind`` from its arrays and hyperparameters."""
    try:
        cls = _HEADS[kind]
    except KeyError:
        raise ConfigError(f"unknown head kind {kind!r}; known: {list_heads()}") from None
    return cls(**params)


def head_from_spec(spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Head:
    """Rebuild a head from a manifest ``spec`` and its stored arrays, checking dimensions."""
    params = {k: v for k, v in spec.items() if k not in ("type", "feature_dim", "num_classes")}
    try:
        head = create_head(str(spec["type"]), **dict(arrays), **params)
    except TypeError as exc:
        raise ConfigError(f"head arrays/spec do not fit {spec.get('type')!r}: {exc}") from exc
    for key in ("feature_dim", "num_classes"):
        if key in spec and int(spec[key]) != getattr(head, key):
            raise ConfigError(f"head {key} is {getattr(head, key)}, spec says {spec[key]}")
    return head


register_head(LinearHead)
register_head(CosineHead)
