"""The device agent's configuration: ``device/device.toml`` (the sections below), with
``EDGECL_DEVICE_ENROLLMENT_KEY`` overriding ``[cloud] enrollment_key``."""

from __future__ import annotations

import math
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edgecl._exceptions import ConfigError

#: TOML section and key of each :class:`AgentConfig` field.
_KEYS = {
    "bundle": ("runtime", "bundle"), "threads": ("runtime", "threads"),
    "max_batch": ("runtime", "max_batch"),
    "adaptation": ("adaptation", "method"), "adaptation_dir": ("adaptation", "state_dir"),
    "server": ("cloud", "server"), "enrollment_key": ("cloud", "enrollment_key"),
    "device_id": ("cloud", "device_id"), "group": ("cloud", "group"),
    "public_key": ("cloud", "public_key"), "tls_ca": ("cloud", "tls_ca"),
    "sampling": ("sampling", "policy"), "budget": ("sampling", "budget"),
    "report_interval_s": ("reports", "interval_s"), "state_dir": ("state", "dir"),
    "source": ("source", "kind"), "source_path": ("source", "path"),
    "source_callable": ("source", "callable"), "source_after": ("source", "after"),
    "poll_s": ("source", "poll_s"), "flush_timeout_s": ("agent", "flush_timeout_s"),
}
SOURCES = ("directory", "stdin", "callable")


@dataclass(frozen=True)
class AgentConfig:
    """What ``edgecl device run`` runs; see ``device/device.toml`` for every key."""

    bundle: str = ""
    threads: int = 1
    max_batch: int = 64
    adaptation: str = ""
    adaptation_dir: str = ""
    server: str = ""
    enrollment_key: str = ""
    device_id: str = ""
    group: str = ""
    public_key: str = ""
    tls_ca: str = ""
    sampling: str = "uncertainty"
    budget: float = 0.05
    report_interval_s: float = 60.0
    state_dir: str = "~/.local/state/edgecl"
    source: str = "directory"
    source_path: str = ""
    source_callable: str = ""
    source_after: str = "move"
    poll_s: float = 1.0
    flush_timeout_s: float = 30.0

    @property
    def name(self) -> str:
        """The device id: ``[cloud] device_id``, else this machine's host name."""
        return self.device_id or socket.gethostname()

    def validate(self) -> AgentConfig:
        """This config, or :class:`ConfigError` naming the first problem."""
        if not self.bundle:
            raise ConfigError("[runtime] bundle is required (a bundle directory)")
        if self.source not in SOURCES:
            raise ConfigError(f"[source] kind must be one of {SOURCES}, got {self.source!r}")
        if self.source == "directory" and not self.source_path:
            raise ConfigError("[source] path is required for kind = \"directory\"")
        if self.source == "callable" and not self.source_callable:
            raise ConfigError("[source] callable is required for kind = \"callable\"")
        if not (0.0 < self.budget <= 1.0):
            raise ConfigError(f"[sampling] budget must be in (0, 1], got {self.budget}")
        for name in ("report_interval_s", "poll_s", "flush_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a number of seconds > 0, got {value}")
        if self.server and not (self.enrollment_key and self.public_key):
            raise ConfigError("[cloud] server needs enrollment_key (or "
                              "EDGECL_DEVICE_ENROLLMENT_KEY) and public_key (the service's "
                              "signing_key.pem.pub)")
        if self.threads < 1 or self.max_batch < 1:
            raise ConfigError("[runtime] threads and max_batch must be >= 1")
        return self


def load_agent_config(path: str | os.PathLike[str],
                      env: Mapping[str, str] | None = None) -> AgentConfig:
    """Read a device TOML file into a validated :class:`AgentConfig`; unknown sections or
    keys are :class:`ConfigError` (a typo must not silently run the defaults)."""
    try:
        data: dict[str, Any] = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"device config {path} not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"device config {path} is not valid TOML: {exc}") from exc
    by_place = {place: name for name, place in _KEYS.items()}
    types = {f.name: type(f.default) for f in fields(AgentConfig)}
    values: dict[str, Any] = {}
    for section, entries in data.items():
        if not isinstance(entries, dict):
            raise ConfigError(f"{path}: {section!r} must be a [section]")
        for key, value in entries.items():
            name = by_place.get((section, key))
            if name is None:
                known = sorted(f"{s}.{k}" for s, k in _KEYS.values())
                raise ConfigError(f"{path}: unknown key [{section}] {key}; known: {known}")
            want = types[name]
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, want) or isinstance(value, bool) != (want is bool):
                raise ConfigError(f"{path}: [{section}] {key} must be a {want.__name__}, "
                                  f"got {value!r}")
            values[name] = value
    key = (os.environ if env is None else env).get("EDGECL_DEVICE_ENROLLMENT_KEY")
    if key:
        values["enrollment_key"] = key
    base = Path(path).resolve().parent
    for name in ("bundle", "public_key", "tls_ca", "source_path"):  # relative to the file
        if values.get(name) and not Path(values[name]).expanduser().is_absolute():
            values[name] = str(base / values[name])
    return AgentConfig(**values).validate()
