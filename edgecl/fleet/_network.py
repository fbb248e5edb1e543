"""Network impairment for simulated devices: latency, bandwidth cap, offline windows.

:class:`ImpairedTransport` wraps a real transport (gRPC to the real service) and delays or
fails its calls as a :class:`NetworkProfile` says; the device's sync client sees exactly
what it would see on a bad network (``UNAVAILABLE`` while offline, then retries with
backoff) and keeps predicting meanwhile. It also counts the bytes that went up and down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from edgecl._exceptions import ConfigError
from edgecl.device import Transport, TransportError


@dataclass(frozen=True)
class NetworkProfile:
    """How one device's network behaves.

    Attributes
    ----------
    latency_s : float
        Added to every call (one way; a round trip pays it twice).
    bandwidth_bps : float
        Bytes per second up and down (0 = unlimited); a payload of ``n`` bytes takes
        ``n / bandwidth_bps`` seconds more.
    offline : tuple of (start_s, end_s)
        Windows, in seconds since the device started, during which every call fails with
        ``UNAVAILABLE`` (the device drops off and comes back).
    """

    latency_s: float = 0.0
    bandwidth_bps: float = 0.0
    offline: tuple[tuple[float, float], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.latency_s < 0 or self.bandwidth_bps < 0 or any(
                not 0 <= a < b for a, b in self.offline):
            raise ConfigError("latency and bandwidth must be >= 0, offline windows "
                              "(start, end) with 0 <= start < end")

    def is_offline(self, t: float) -> bool:
        """Whether the device is offline ``t`` seconds after it started."""
        return any(a <= t < b for a, b in self.offline)

    @property
    def offline_s(self) -> float:
        """Total seconds offline."""
        return float(sum(b - a for a, b in self.offline))


class ImpairedTransport:
    """A :class:`~edgecl.device.Transport` that impairs another one (see the module)."""

    def __init__(self, inner: Transport, profile: NetworkProfile,
                 started: float | None = None) -> None:
        self.inner, self.profile = inner, profile
        self.started = time.monotonic() if started is None else started
        self.bytes_up = self.bytes_down = 0
        self.failed_calls = 0
        self._lock = threading.Lock()

    def _gate(self, up: int = 0) -> None:
        if self.profile.is_offline(time.monotonic() - self.started):
            with self._lock:
                self.failed_calls += 1
            raise TransportError("UNAVAILABLE", "simulated: device offline")
        self._transfer(up, upward=True)

    def _transfer(self, n: int, upward: bool = False) -> None:
        """Pay latency and ``n / bandwidth`` seconds, count ``n`` bytes."""
        delay = self.profile.latency_s
        if self.profile.bandwidth_bps and n:
            delay += n / self.profile.bandwidth_bps
        if delay:
            time.sleep(delay)
        with self._lock:
            if upward:
                self.bytes_up += n
            else:
                self.bytes_down += n

    def register(self, device_id: str, enrollment_key: str, encoder_sha256: str,
                 group: str, *, current_token: str = "", proof: Any = None) -> Any:
        self._gate(len(device_id) + len(enrollment_key) + len(encoder_sha256) + len(group)
                   + len(current_token) + (0 if proof is None else 104))
        out = self.inner.register(device_id, enrollment_key, encoder_sha256, group,
                                  current_token=current_token, proof=proof)
        self._transfer(len(getattr(out, "token", "")))
        return out

    def upload(self, token: str, batches: list[list[Any]]) -> Any:
        size = sum(_sample_bytes(s) for batch in batches for s in batch)
        self._gate(size)
        out = self.inner.upload(token, batches)
        self._transfer(8 * len(out.acked_ids))
        return out

    def subscribe(self, token: str, after_version: int) -> Iterator[Any]:
        self._gate(len(token))
        for update in self.inner.subscribe(token, after_version):
            if self.profile.is_offline(time.monotonic() - self.started):
                with self._lock:
                    self.failed_calls += 1
                raise TransportError("UNAVAILABLE", "simulated: device went offline")
            self._transfer(_update_bytes(update))
            yield update

    def fetch(self, token: str, after_version: int) -> Any:
        self._gate(len(token))
        out = self.inner.fetch(token, after_version)
        if out is not None:
            self._transfer(_update_bytes(out))
        return out

    def report(self, token: str, state_version: int, stats: dict[str, float]) -> int:
        self._gate(len(token) + 16 * len(stats))
        return self.inner.report(token, state_version, stats)

    def send_report(self, token: str, status: Any) -> Any:
        self._gate(len(token) + 16 * len(status.stats) + 64 * len(status.events))
        return self.inner.send_report(token, status)

    def close(self) -> None:
        self.inner.close()


def _sample_bytes(sample: Any) -> int:
    n = 64  # ids, timestamps and the device's view of the sample
    for name in ("input", "features"):
        arr = getattr(sample, name, None)
        if arr is not None:
            n += int(arr.nbytes)
    return n


def _update_bytes(update: Any) -> int:
    return len(update.payload) + len(update.signature) + len(update.key_id)
