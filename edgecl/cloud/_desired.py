"""Desired device config: what operators may set for a device or a group, checked before
it is stored (devices apply it without restart and report what they applied)."""

from __future__ import annotations

import math
import re

from edgecl._exceptions import InvalidInput

#: Keys an operator may set, and what each means on the device.
DESIRED_KEYS = {
    "budget": "share of predictions offered for upload (0 < fraction <= 1)",
    "sampling": "the sampling policy's name (e.g. uncertainty, random)",
    "adaptation": "test-time adaptation on or off",
    "adaptation_method": "the test-time adaptation method's name (e.g. align, lame)",
    "report_interval_s": "seconds between periodic reports (1 to 86400)",
}
_NAME = re.compile(r"^[a-z][a-z0-9_+-]{0,63}$")


def _number(key: str, value: str, low: float, high: float, *, open_low: bool) -> None:
    try:
        x = float(value)
    except ValueError:
        raise InvalidInput(f"{key} must be a number, got {value[:40]!r}") from None
    ok = math.isfinite(x) and (x > low if open_low else x >= low) and x <= high
    if not ok:
        bracket = "(" if open_low else "["
        raise InvalidInput(f"{key} must be in {bracket}{low:g}, {high:g}], got {value[:40]}")


def check_desired_config(values: dict[str, str]) -> dict[str, str]:
    """``values`` if every key is known and every value possible, else
    :class:`InvalidInput` naming the first problem."""
    if not values:
        raise InvalidInput(f"no values given; keys: {sorted(DESIRED_KEYS)}")
    for key, value in values.items():
        if key not in DESIRED_KEYS:
            raise InvalidInput(f"unknown config key {key[:40]!r}; known: {sorted(DESIRED_KEYS)}")
        if key == "budget":
            _number(key, value, 0.0, 1.0, open_low=True)
        elif key == "report_interval_s":
            _number(key, value, 1.0, 86400.0, open_low=False)
        elif key == "adaptation":
            if value not in ("on", "off"):
                raise InvalidInput(f"adaptation must be 'on' or 'off', got {value[:40]!r}")
        elif key == "adaptation_method":
            from edgecl.adapt import list_adapters

            if value not in list_adapters():
                raise InvalidInput(f"unknown adaptation method {value[:40]!r}; known: "
                                   f"{list_adapters()}")
        elif not _NAME.match(value):
            raise InvalidInput(f"{key} must be a policy name, got {value[:40]!r}")
    return dict(values)
