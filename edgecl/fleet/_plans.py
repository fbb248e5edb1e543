"""Fleet scenarios: what each simulated device sees, how fast, and over which network.

Every device gets its own stream (its own domain order, sample draws, label mix), pace and
:class:`NetworkProfile`, all derived from the fleet seed, so a simulation is reproducible.
Plans carry stream *arguments*, not arrays: a worker process rebuilds its devices' streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError
from edgecl.fleet._network import NetworkProfile

FLEET_SCENARIOS = ("continual", "gradual", "recurring", "label-shift", "open-set", "mixed",
                   "late-joiner")


@dataclass(frozen=True)
class Impairments:
    """Fleet-level network settings, turned into one :class:`NetworkProfile` per device.

    ``offline_fraction`` of the devices drop off once for ``offline_s`` seconds around the
    middle of their run; ``slow_fraction`` of them predict at ``slow_factor`` x the pace.
    """

    latency_ms: float = 0.0
    bandwidth_kbps: float = 0.0
    offline_fraction: float = 0.0
    offline_s: float = 10.0
    slow_fraction: float = 0.0
    slow_factor: float = 0.5

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.bandwidth_kbps < 0 or self.offline_s < 0 or \
                not 0 <= self.offline_fraction <= 1 or not 0 <= self.slow_fraction <= 1 or \
                not 0 < self.slow_factor <= 1:
            raise ConfigError("impairments: latency, bandwidth, offline_s >= 0; fractions in "
                              "[0, 1]; slow_factor in (0, 1]")


@dataclass(frozen=True)
class DevicePlan:
    """One device of a fleet: identity, group, stream arguments, pace and network."""

    device_id: str
    group: str
    scenario: str
    stream: dict[str, Any]
    samples: int
    pace: float
    network: NetworkProfile = field(default_factory=NetworkProfile)
    seed: int = 0
    slow: bool = False
    #: Simulated second at which the device joins the fleet (``late-joiner``).
    start_s: float = 0.0

    def build_stream(self) -> Any:
        """The device's :class:`~edgecl.zoo.streams.Stream`."""
        from edgecl.zoo.streams import create_stream

        fleet = self.scenario in ("mixed", "late-joiner")
        return create_stream("continual" if fleet else self.scenario, **self.stream)


def _stream_args(scenario: str, samples: int, rng: np.random.Generator, seed: int,
                 domains: int) -> dict[str, Any]:
    from edgecl.zoo.streams import DEFAULT_CORRUPTIONS

    pool = list(DEFAULT_CORRUPTIONS[:10])
    order = [str(c) for c in rng.permutation(pool)]
    if scenario in ("continual", "mixed", "late-joiner"):
        per = max(samples // (domains + 1), 1)
        return {"corruptions": order[:domains], "severity": 5, "samples_per_domain": per,
                "include_clean_first": True, "seed": seed}
    if scenario == "gradual":
        k = max(domains // 2, 1)
        return {"corruptions": order[:k], "samples_per_severity": max(samples // (9 * k), 1),
                "seed": seed}
    if scenario == "recurring":
        k = max(domains // 2, 2)
        return {"corruptions": order[:k], "cycles": 2, "severity": 5,
                "samples_per_domain": max(samples // (2 * k), 1), "seed": seed}
    if scenario == "label-shift":
        return {"windows": domains, "samples_per_window": max(samples // domains, 1),
                "dirichlet_alpha": 0.3, "corruption": order[0], "severity": 5, "seed": seed}
    if scenario == "open-set":
        return {"samples": samples, "novel_fraction": 0.3, "start": 0.5,
                "corruption": order[0], "severity": 3, "seed": seed}
    raise ConfigError(f"unknown fleet scenario {scenario!r}; use one of {FLEET_SCENARIOS}")


def fleet_plans(scenario: str, devices: int, *, samples: int, seed: int = 0,
                pace: float = 20.0, domains: int = 4, groups: int = 2,
                impairments: Impairments | None = None) -> list[DevicePlan]:
    """Plans for ``devices`` devices of ``samples`` samples each.

    ``mixed``: devices form ``groups`` groups (``group-<g>``, device ``i`` in group
    ``i % groups``); a group's devices share one domain order (a site, a camera model) and
    register with the group name, so the cloud can learn one update per group; each device
    still draws its own samples. ``late-joiner``: every device sees one site's domain
    order (no groups declared); the second half of the devices joins when the first half
    has finished its streams, so it enters domains the fleet has been through. Other
    scenarios: every device has its own order.
    """
    if devices < 1 or samples < 1 or pace <= 0 or domains < 1 or groups < 1:
        raise ConfigError("devices, samples, domains and groups must be >= 1, pace > 0")
    if scenario not in FLEET_SCENARIOS:
        raise ConfigError(f"unknown fleet scenario {scenario!r}; use one of {FLEET_SCENARIOS}")
    imp = impairments or Impairments()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    offline = set(rng.permutation(devices)[:round(imp.offline_fraction * devices)].tolist())
    slow = set(rng.permutation(devices)[:round(imp.slow_fraction * devices)].tolist())
    plans = []
    for i in range(devices):
        group = f"group-{i % groups}" if scenario == "mixed" else ""
        key = ([seed, i % groups] if scenario == "mixed" else [seed, 0]
               if scenario == "late-joiner" else [seed, 1000 + i])
        order_rng = np.random.default_rng(np.random.SeedSequence(key))
        args = _stream_args(scenario, samples, order_rng, seed * 1000 + i, domains)
        speed = pace * (imp.slow_factor if i in slow else 1.0)
        duration = samples / speed
        windows: tuple[tuple[float, float], ...] = ()
        joins = samples / pace if scenario == "late-joiner" and i >= (devices + 1) // 2 \
            else 0.0
        if i in offline and imp.offline_s > 0:
            start = joins + max(duration / 2 - imp.offline_s / 2, 0.0)
            windows = ((start, start + imp.offline_s),)
        network = NetworkProfile(latency_s=imp.latency_ms / 1000.0,
                                 bandwidth_bps=imp.bandwidth_kbps * 1000.0 / 8.0,
                                 offline=windows)
        plans.append(DevicePlan(f"d{i:03d}", group, scenario, args, samples, speed, network,
                                seed * 1000 + i, i in slow, start_s=joins))
    return plans
