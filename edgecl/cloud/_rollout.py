"""Staged rollouts: a canary share of a target's devices takes a new version first, then
waves at a rate, each gated on the health the devices report after applying it.

:class:`RolloutPolicy` says how; :func:`judge_gate` decides a gate from the devices'
:class:`~edgecl.cloud._registry_rollouts.DeviceHealth`; :class:`RolloutController`
moves every rolling rollout on each :meth:`~RolloutController.tick` (the server ticks it
every second; a virtual-clock simulation once per round). A failed gate halts the
rollout and, when the policy says so, reverts the devices that took the version (the
released version's content, published again as a new version).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from edgecl._exceptions import InvalidInput
from edgecl.cloud._registry_rollouts import DeviceHealth, RolloutRow

log = logging.getLogger("edgecl.cloud.rollout")
MODES = ("auto", "staged", "manual")


@dataclass(frozen=True)
class RolloutPolicy:
    """How a target's new versions reach its devices; see ``RolloutPolicy`` in
    ``proto/edgecl/v1/admin.proto`` for every field."""

    mode: str = "auto"
    canary_share: float = 0.1
    wave_share: float = 0.3
    wave_interval_s: float = 300.0
    min_reported_share: float = 0.8
    max_rollback_rate: float = 0.1
    max_confidence_drop: float = 0.25
    max_ood_rise: float = 0.25
    max_errors: int = 0
    gate_timeout_s: float = 3600.0
    revert_on_failure: bool = True

    def validate(self) -> RolloutPolicy:
        """This policy, or :class:`InvalidInput` naming the impossible number."""
        if self.mode not in MODES:
            raise InvalidInput(f"rollout mode must be one of {MODES}, got {self.mode!r}")
        for name in ("canary_share", "wave_share", "min_reported_share"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 < value <= 1.0):
                raise InvalidInput(f"{name} must be in (0, 1], got {value}")
        for name in ("max_rollback_rate", "max_confidence_drop", "max_ood_rise"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise InvalidInput(f"{name} must be in [0, 1], got {value}")
        for name in ("wave_interval_s", "gate_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise InvalidInput(f"{name} must be a number of seconds >= 0, got {value}")
        if self.gate_timeout_s < self.wave_interval_s:
            raise InvalidInput(f"gate_timeout_s ({self.gate_timeout_s}) must be at least "
                               f"wave_interval_s ({self.wave_interval_s})")
        if self.max_errors < 0:
            raise InvalidInput(f"max_errors must be >= 0, got {self.max_errors}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain values (stored with each rollout)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RolloutPolicy:
        """A policy from :meth:`to_dict`'s form; missing keys take the defaults, unknown
        keys are :class:`InvalidInput`."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidInput(f"unknown rollout policy keys {sorted(unknown)}; known: "
                               f"{sorted(known)}")
        return cls(**data).validate()


@dataclass(frozen=True)
class GateResult:
    """A gate's verdict ("pass", "fail" or "wait": too few reports) and its figures."""

    verdict: str
    admitted: int
    reported: int
    applied: int
    refused: int
    rollback_rate: float
    confidence_drop: float
    ood_rise: float
    errors: float
    reason: str


def _drop(health: list[DeviceHealth], key: str) -> float:
    """Mean rise of ``key`` from before to after over devices that have both (0: none)."""
    deltas = [h.after[key] - h.before[key] for h in health
              if key in h.after and key in h.before]
    return sum(deltas) / len(deltas) if deltas else 0.0


def _rise(health: list[DeviceHealth], control: dict[str, float], key: str) -> float:
    """Mean ``key`` of the devices running the version over the control group's (0: no
    device has it)."""
    values = [h.after[key] for h in health if key in h.after]
    return sum(values) / len(values) - control[key] if values else 0.0


def judge_gate(policy: RolloutPolicy, health: list[DeviceHealth],
               control: tuple[int, dict[str, float]] | None = None) -> GateResult:
    """Judge a wave's gate over every device admitted so far: "fail" once more refused
    or rolled the version back than ``max_rollback_rate`` of the reporting devices
    allows (or already of all admitted), or the applying devices' confidence fell,
    their OOD rate rose or their errors passed the thresholds; "wait" while fewer than
    ``min_reported_share`` reported; else "pass".

    Confidence and OOD rate are compared with ``control`` (``(devices, mean stats)`` of
    the target's devices without the version over the same time, see
    :meth:`~edgecl.cloud.Registry.control_stats`) when it has them, so that inputs that
    change for every device are not blamed on the version; without a control, a first
    wave compares with the same devices' reports before they took the version, and later
    waves (everyone has it) are judged on refusals and errors only."""
    admitted = len(health)
    reported = [h for h in health if h.outcome]
    applied = [h for h in reported if h.outcome == "applied"]
    refused = len(reported) - len(applied)
    rate = refused / len(reported) if reported else 0.0
    n_control, stats = control if control is not None else (0, {})
    if n_control and all(k in stats for k in ("confidence", "ood_rate")):
        conf_drop = -_rise(applied, stats, "confidence")
        ood_rise = _rise(applied, stats, "ood_rate")
        basis = f"vs {n_control} devices without it"
    elif len({h.wave for h in health}) > 1:  # judged against a control in earlier waves
        conf_drop = ood_rise = 0.0
        basis = "(no device left without it: judged in earlier waves)"
    else:
        conf_drop = -_drop(applied, "confidence")
        ood_rise = _drop(applied, "ood_rate")
        basis = "vs before"
    errors = sum(h.errors for h in applied)
    figures = (f"{len(reported)}/{admitted} reported, {refused} refused or rolled back "
               f"({rate:.0%}), confidence {-conf_drop:+.3f} and OOD rate {ood_rise:+.3f} "
               f"{basis}, {errors:g} errors")

    def result(verdict: str, why: str) -> GateResult:
        return GateResult(verdict, admitted, len(reported), len(applied), refused, rate,
                          conf_drop, ood_rise, errors, f"{why}: {figures}" if why else figures)

    if admitted and refused / admitted > policy.max_rollback_rate:
        return result("fail", f"rollback rate over {policy.max_rollback_rate:.0%}")
    if len(reported) < math.ceil(policy.min_reported_share * admitted - 1e-9):
        return result("wait", "")
    if rate > policy.max_rollback_rate:
        return result("fail", f"rollback rate over {policy.max_rollback_rate:.0%}")
    if conf_drop > policy.max_confidence_drop:
        return result("fail", f"confidence fell by more than {policy.max_confidence_drop}")
    if ood_rise > policy.max_ood_rise:
        return result("fail", f"OOD rate rose by more than {policy.max_ood_rise}")
    if errors > policy.max_errors:
        return result("fail", f"more than {policy.max_errors} errors")
    return result("pass", "")


def cohort_order(target: str, device_ids: list[str]) -> list[str]:
    """The order devices join a target's rollouts: by a hash of target and id, so the
    canary cohort is the same devices for every version, and not the first by name."""
    return sorted(device_ids, key=lambda d: hashlib.sha256(f"{target}|{d}".encode())
                  .hexdigest())


def cohort_size(devices: int, share: float) -> int:
    """Devices a cumulative ``share`` of ``devices`` makes (at least one)."""
    return min(devices, max(1, math.ceil(share * devices - 1e-9)))


class RolloutController:
    """Moves staged rollouts: admits the canary, judges each wave's gate, admits the next
    wave after ``wave_interval_s``, releases the version once every device took it, halts
    (and reverts) on a failed gate. ``devices_of(target)`` lists a target's device ids;
    ``revert(target, version, reason)`` publishes the released content again; ``clock()``
    is seconds (the server's clock: a simulation passes its virtual one)."""

    def __init__(self, registry: Any, devices_of: Callable[[str], list[str]],
                 revert: Callable[[str, int, str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry, self.devices_of, self.revert = registry, devices_of, revert
        self.clock = clock

    def tick(self) -> None:
        """Move every rolling rollout one step (a failure is logged, never raised)."""
        for row in self.registry.rollouts_in("rolling"):
            try:
                self._advance(row)
            except Exception:
                log.exception("rollout step failed", extra={"target": row.target,
                                                            "version": row.version})

    def _advance(self, row: RolloutRow) -> None:
        policy = RolloutPolicy.from_dict(row.policy)
        now = self.clock()
        devices = cohort_order(row.target, self.devices_of(row.target))
        admitted = {d for d, *_ in self.registry.admitted(row.target, row.version)}
        if not admitted:
            self._admit(row, devices[:cohort_size(len(devices), policy.canary_share)], 1, now)
            return
        gate = judge_gate(policy, self.registry.health_of(row.target, row.version),
                          self.registry.control_stats(row.target, row.version, devices))
        approved = row.wave <= row.approved_wave
        if gate.verdict == "fail" and not approved:
            self._halt(row, policy, f"wave {row.wave} gate failed: {gate.reason}")
            return
        if gate.verdict == "wait" and not approved:
            if now - row.wave_started_s > policy.gate_timeout_s:
                self._halt(row, policy, f"wave {row.wave}: too few health reports after "
                                        f"{policy.gate_timeout_s:g} s ({gate.reason})")
            return
        if not approved and now - row.wave_started_s < policy.wave_interval_s:
            return
        rest = [d for d in devices if d not in admitted]
        if not rest:
            if self.registry.set_rollout_state(row.target, row.version, ("rolling",),
                                               "released", f"every wave passed: "
                                                           f"{gate.reason}"):
                log.info("rollout released", extra={"target": row.target,
                                                    "version": row.version})
            return
        share = policy.canary_share + row.wave * policy.wave_share
        n = max(1, cohort_size(len(devices), share) - len(admitted))
        self._admit(row, rest[:n], row.wave + 1, now)

    def _admit(self, row: RolloutRow, device_ids: list[str], wave: int, now: float) -> None:
        if not device_ids:
            return
        if not self.registry.admit(row.target, row.version, device_ids, wave, now):
            return  # paused, aborted or superseded since this step read it
        log.info("rollout wave started", extra={"target": row.target, "version": row.version,
                                                "wave": wave, "devices": len(device_ids)})

    def _halt(self, row: RolloutRow, policy: RolloutPolicy, reason: str) -> None:
        """Halt on a failed gate: the rollout waits for an operator (resume or abort), or
        with ``revert_on_failure`` ends (aborted) and its devices get the released
        content back; the target's next versions start again from the canary."""
        revert = policy.revert_on_failure
        state = "aborted" if revert else "halted"
        if revert:
            reason += "; reverted: its devices get the released version's content back"
        if not self.registry.set_rollout_state(row.target, row.version, ("rolling",),
                                               state, reason):
            return
        log.warning("rollout halted", extra={"target": row.target, "version": row.version,
                                             "reason": reason, "revert": revert})
        if revert:
            self.revert(row.target, row.version, reason)
