"""Typed results with a published JSON Schema: the base of the evaluation, benchmark and
simulation results.

A result is a (frozen) dataclass that also derives from :class:`JsonResult`; nested parts
are plain dataclasses. :meth:`JsonResult.to_dict` turns it into the JSON-ready dict that
``edgecl ... --json`` prints, and :func:`schema` loads the JSON Schema (draft 2020-12) it
matches, from ``edgecl/schemas/<name>.schema.json``. Two kinds of field metadata shape the
dict:

- :data:`OMIT_NONE`: the key is left out while the value is None (present in some runs).
- :func:`flat`: the entries of a mapping or dataclass are merged into the enclosing object,
  each under ``key.format(name)`` (e.g. ``severity_{}``); nothing while it is None.

>>> from dataclasses import dataclass, field
>>> @dataclass(frozen=True)
... class Point(JsonResult):
...     SCHEMA = "point"
...     x: float
...     extra: dict[str, int] | None = field(default=None, metadata=flat("n_{}"))
...     note: str | None = field(default=None, metadata=OMIT_NONE)
>>> Point(1.0, {"a": 2}).to_dict()
{'x': 1.0, 'n_a': 2}
>>> Point(0.5, note="hi").to_json(indent=None)
'{"note": "hi", "x": 0.5}'
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from edgecl._exceptions import ConfigError

__all__ = ["FLAT", "OMIT_NONE", "JsonResult", "flat", "schema", "schema_names", "to_plain"]

_HOW = "edgecl.json"  # field metadata key: "omit_none", or ("flat", key format)

#: Field metadata: the key is left out of the JSON while the value is None.
OMIT_NONE: Mapping[str, Any] = MappingProxyType({_HOW: "omit_none"})


def flat(key: str = "{}") -> Mapping[str, Any]:
    """Field metadata: the field's entries are merged into the enclosing JSON object, each
    under ``key.format(name)``; a None value adds nothing."""
    return MappingProxyType({_HOW: ("flat", key)})


#: :func:`flat` with the entries under their own names.
FLAT = flat()


def to_plain(value: Any) -> Any:
    """``value`` as JSON-ready Python: dataclasses and mappings to dicts (string keys),
    tuples and arrays to lists, numpy scalars to Python numbers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            how = f.metadata.get(_HOW)
            if how is None:
                out[f.name] = to_plain(v)
            elif v is None:
                continue
            elif how == "omit_none":
                out[f.name] = to_plain(v)
            else:
                items = v if isinstance(v, Mapping) else to_plain(v)
                out.update((how[1].format(k), to_plain(x)) for k, x in items.items())
        return out
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class JsonResult:
    """Mixin of the result dataclasses: JSON output in the shape of a published schema."""

    __slots__ = ()
    #: Name of the JSON Schema the result matches: ``edgecl/schemas/<SCHEMA>.schema.json``.
    SCHEMA: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict (what ``--json`` prints): plain dicts, lists and numbers."""
        return to_plain(self)

    def to_json(self, indent: int | None = 2) -> str:
        """The result as JSON text, keys sorted."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema (draft 2020-12) of this result type."""
        return schema(cls.SCHEMA)


def schema(name: str) -> dict[str, Any]:
    """The published JSON Schema ``edgecl/schemas/<name>.schema.json`` (e.g. ``eval-ood``)."""
    path = resources.files("edgecl").joinpath("schemas", f"{name}.schema.json")
    if not path.is_file():
        raise ConfigError(f"no result schema {name!r}; known: {schema_names()}")
    return json.loads(path.read_text(encoding="utf-8"))


def schema_names() -> list[str]:
    """Names of the published result schemas."""
    folder = resources.files("edgecl").joinpath("schemas")
    suffix = ".schema.json"
    return sorted(p.name[:-len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix))
