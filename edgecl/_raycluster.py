"""Joining a Ray cluster, for the fleet simulator and the service's compute alike: fail
fast on an address nothing listens at, and one way to call ``ray.init``."""

from __future__ import annotations

import socket
from typing import Any

from edgecl._exceptions import ConfigError


def import_ray() -> Any:
    """The ``ray`` module (a clear message where it is not installed)."""
    try:
        import ray
    except ModuleNotFoundError as exc:  # the CLI turns this into "install edgecl[ray]"
        raise ModuleNotFoundError("ray is not installed: pip install 'edgecl[ray]'",
                                  name="ray") from exc
    return ray


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast on a cluster address nothing listens at (``ray.init`` would wait for
    minutes): a TCP connect to ``host:port`` (also ``ray://host:port``)."""
    if address is None or address in ("", "auto", "local"):
        return
    where = address.split("://", 1)[-1]
    host, sep, port = where.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"Ray address {address!r}: expected host:port, ray://host:port, "
                          "'auto' or 'local'")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r} ({exc}); start one "
                          "with 'ray start --head' or leave out the address for a local "
                          "one") from exc


def connect(address: str | None) -> Any:
    """``ray``, initialised on the cluster at ``address`` (None or "": a local one) unless
    this process is connected already."""
    ray = import_ray()
    if not ray.is_initialized():
        check_reachable(address)
        try:
            ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                     configure_logging=False,
                     runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: "
                              f"{exc}") from exc
    return ray
