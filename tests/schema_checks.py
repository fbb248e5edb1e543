"""Shared checks of the typed results against their published JSON Schemas.

The tests that already run an evaluation, a benchmark or a simulation call
:func:`check_result` (or :func:`check_json` on a command's JSON output) on what they got,
so every schema is checked against real output without running anything twice.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Collection
from typing import Any

from jsonschema import Draft202012Validator

from edgecl._result import JsonResult, schema

Path = tuple[str | int, ...]


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """The validator of the published schema ``name`` (checked to be a valid schema)."""
    spec = schema(name)
    Draft202012Validator.check_schema(spec)
    return Draft202012Validator(spec)


def check_result(result: JsonResult, *fixed: Path, optional: Collection[str] = ()
                 ) -> dict[str, Any]:
    """Check ``result``: ``to_json()`` round-trips to ``to_dict()``, which matches the
    result's schema (see :func:`check_json`); returns ``to_dict()``."""
    data = result.to_dict()
    assert json.loads(result.to_json()) == data
    assert json.loads(result.to_json(indent=None)) == data
    assert "\n" not in result.to_json(indent=None)
    check_json(result.SCHEMA, data, *fixed, optional=optional)
    return data


def check_json(name: str, data: dict[str, Any], *fixed: Path,
               optional: Collection[str] = ()) -> None:
    """``data`` matches schema ``name``, and the schema rejects it once any key of the top
    level or of the objects at the ``fixed`` paths is renamed, or removed (unless it is
    one of ``optional``)."""
    v = validator(name)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in v.iter_errors(data)]
    assert not errors, errors[:5]
    for path in ((), *fixed):
        for key in list(_at(data, path)):
            def rename(obj: dict[str, Any], key: str = key) -> None:
                obj[f"{key}_renamed"] = obj.pop(key)

            assert not v.is_valid(_changed(data, path, rename)), (name, path, key, "renamed")
            if key not in optional:
                removed = _changed(data, path, lambda obj, key=key: obj.pop(key))
                assert not v.is_valid(removed), (name, path, key, "removed")


def _at(data: Any, path: Path) -> dict[str, Any]:
    for part in path:
        data = data[part]
    assert isinstance(data, dict), path
    return data


def _changed(data: dict[str, Any], path: Path, change: Callable[[dict[str, Any]], Any]
             ) -> dict[str, Any]:
    out = copy.deepcopy(data)
    change(_at(out, path))
    return out
