"""The ``FleetAdmin`` gRPC service: the fleet as operators see and steer it.

Reads: devices (filtered by group and labels), one device with its update history and
reports, a target's updates and rejected candidates, a target's rollout. Writes (the
``operator`` role, see :mod:`edgecl.cloud._admin_auth`): a rollback publishes an earlier
version's content (or the bundle's own state) as the target's next version, signed like
every update, so the devices' rule that versions only increase holds; pins; rollout
policies and pause / resume / abort; desired device config. Every write is logged with
the operator's name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgecl._exceptions import InvalidInput
from edgecl._proto import admin_pb2, admin_pb2_grpc
from edgecl.cloud._admin_auth import current_operator
from edgecl.cloud._desired import check_desired_config
from edgecl.cloud._errors import FailedPrecondition, NotFound, grpc_errors
from edgecl.cloud._identity import Device
from edgecl.cloud._registry import Registry
from edgecl.cloud._registry_fleet import DeviceRecord, UpdateRecord
from edgecl.cloud._republish import republish
from edgecl.cloud._rollout import RolloutPolicy
from edgecl.cloud._signing import UpdateSigner
from edgecl.wire import payload_from_bytes

MAX_DEVICES = 1000
MAX_UPDATES = 100
MAX_REPORTS = 20
__all__ = ["AdminServicer"]
log = logging.getLogger("edgecl.cloud.admin")


def _limit(value: int, maximum: int) -> int:
    if value < 0:
        raise InvalidInput(f"limit must be >= 0, got {value}")
    return min(value or maximum, maximum)


class AdminServicer(admin_pb2_grpc.FleetAdminServicer):
    """Serves :mod:`edgecl.v1.FleetAdmin` from the registry; publishes rollbacks signed
    by ``signer``. ``devices`` is the EdgeCloud servicer (where a device's updates go,
    what it may be served); ``bundle_dir(encoder_sha256)`` finds the bundle of an encoder
    (for a rollback to the bundle's own state); ``devices_of(target)`` lists a target's
    devices."""

    def __init__(self, registry: Registry, signer: UpdateSigner, devices: Any,
                 bundle_dir: Callable[[str], Path],
                 devices_of: Callable[[str], list[str]]) -> None:
        self.registry, self.signer, self.devices = registry, signer, devices
        self.bundle_dir, self.devices_of = bundle_dir, devices_of

    def target_of(self, device: Device) -> str:
        """Where ``device``'s updates are published."""
        return str(self.devices.target_of(device))

    @staticmethod
    def _who() -> str:
        operator = current_operator.get()
        return operator.name if operator else ""

    # -- reads -------------------------------------------------------------------------
    def _info(self, record: DeviceRecord) -> admin_pb2.DeviceInfo:
        device = Device(record.device_id, record.encoder_sha256, record.group)
        target = self.target_of(device)
        reports = self.registry.reports_of(record.device_id, 1)
        cap = self.registry.served_cap(record.device_id, target)
        desired_rev, desired = self.registry.desired_for(record.device_id, record.group)
        reported_rev, reported = self.registry.reported_config(record.device_id)
        return admin_pb2.DeviceInfo(
            desired_config=desired, desired_revision=desired_rev,
            reported_config=reported, reported_revision=reported_rev,
            served_version=self.devices.servable(device, target),
            device_id=record.device_id, group=record.group, labels=record.labels,
            target=target, registered_ms=record.registered_ms,
            last_seen_ms=self.registry.last_seen_ms(record.device_id),
            reported_version=reports[0][1] if reports else -1,
            latest_version=self.registry.latest_version(target),
            samples=self.registry.sample_count(record.device_id),
            stats=reports[0][2] if reports else {},
            pinned_version=-1 if cap is None else cap)

    @grpc_errors
    def ListDevices(self, request: Any, context: Any) -> Any:
        limit = _limit(request.limit, MAX_DEVICES)
        wanted = dict(request.labels)
        records = [r for r in self.registry.device_records(request.group)
                   if all(r.labels.get(k) == v for k, v in wanted.items())]
        infos = sorted((self._info(r) for r in records),
                       key=lambda d: (-d.last_seen_ms, d.device_id))
        return admin_pb2.ListDevicesResponse(devices=infos[:limit])

    @grpc_errors
    def GetDevice(self, request: Any, context: Any) -> Any:
        record = self._record(request.device_id)
        info = self._info(record)
        updates = [self._update(u) for u in
                   self.registry.update_records(info.target, MAX_UPDATES)]
        reports = [admin_pb2.ReportInfo(received_ms=t, state_version=v, stats=s)
                   for t, v, s in self.registry.reports_of(record.device_id, MAX_REPORTS)]
        events = [admin_pb2.DeviceEvent(version=v, action=a, reason=r, time_ms=t)
                  for v, a, r, t in self.registry.events_of(record.device_id, MAX_UPDATES)]
        return admin_pb2.DeviceDetail(device=info, updates=updates, reports=reports,
                                      events=events)

    @grpc_errors
    def ListUpdates(self, request: Any, context: Any) -> Any:
        limit = _limit(request.limit, MAX_UPDATES)
        if not request.target:
            raise InvalidInput("target is required (a device id or a group)")
        updates = self.registry.update_records(request.target, limit)
        rejections = self.registry.rejection_records(request.target, limit)
        if not updates and not rejections and not self._known_target(request.target):
            raise NotFound(f"no device or group {request.target!r}")
        return admin_pb2.ListUpdatesResponse(
            updates=[self._update(u) for u in updates],
            rejections=[admin_pb2.Rejection(version=v, reason=r, created_ms=t)
                        for v, r, t in rejections])

    def _record(self, device_id: str) -> DeviceRecord:
        if not device_id:
            raise InvalidInput("device_id is required")
        found = self.registry.device_records(device_id=device_id)
        if not found:
            raise NotFound(f"no device {device_id!r}")
        return found[0]

    def _known_target(self, target: str) -> bool:
        """Whether some registered device's updates go to ``target`` (a device id, a
        group, or ``device/<id>``): only the devices that could be named by it are read."""
        names = {target, target.split("/", 1)[1] if target.startswith("device/") else target}
        candidates = [r for name in names for r in self.registry.device_records(device_id=name)]
        candidates += self.registry.device_records(group=target)
        return any(self.target_of(Device(r.device_id, r.encoder_sha256, r.group)) == target
                   for r in candidates)

    def _update(self, record: UpdateRecord) -> admin_pb2.UpdateInfo:
        payload = payload_from_bytes(self.registry.artifacts.get(record.artifact))
        rollout = self.registry.rollout(record.target, record.version)
        return admin_pb2.UpdateInfo(target=record.target, version=record.version,
                                    base_version=record.base_version,
                                    created_ms=record.created_ms, metrics=record.metrics,
                                    parts=sorted(payload.parts),
                                    rollout_state=rollout.state if rollout else "released")

    # -- writes ------------------------------------------------------------------------
    @grpc_errors
    def Rollback(self, request: Any, context: Any) -> Any:
        target, to = request.target, int(request.to_version)
        if not target:
            raise InvalidInput("target is required (a device id or a group)")
        version = republish(self.registry, self.signer, self.bundle_dir, target, to,
                            reason=f"rollback to v{to} by {self._who()}: "
                                   f"{request.reason[:300]}")
        log.warning("rollback published", extra={
            "operator": self._who(), "target": target, "to_version": to,
            "version": version, "reason": request.reason[:500]})
        record = self.registry.update_record(target, version)
        assert record is not None
        return self._update(record)

    @grpc_errors
    def Pin(self, request: Any, context: Any) -> Any:
        if bool(request.device_id) == bool(request.target):
            raise InvalidInput("name exactly one of device_id and target")
        if request.device_id:
            record = self._record(request.device_id)
            kind, name = "device", record.device_id
            target = self.target_of(Device(record.device_id, record.encoder_sha256,
                                           record.group))
        else:
            if not self._known_target(request.target):
                raise NotFound(f"no device or group {request.target!r}")
            kind, name = "target", request.target
            target = request.target
        who = self._who()
        if request.clear:
            self.registry.set_pin(kind, name, None, who)
            version = -1
        else:
            latest = self.registry.latest_version(target)
            version = int(request.version)
            if not 0 <= version <= latest:
                raise InvalidInput(f"version must be 0 to {latest} (the latest of "
                                   f"{target!r}), got {version}")
            self.registry.set_pin(kind, name, version, who)
        log.warning("pin set" if version >= 0 else "pin cleared", extra={
            "operator": who, "kind": kind, "pinned": name, "version": version,
            "reason": request.reason[:500]})
        return admin_pb2.PinInfo(kind=kind, name=name, version=version)

    # -- rollouts ------------------------------------------------------------------------
    def _target(self, target: str) -> str:
        if not target:
            raise InvalidInput("target is required (a device id or a group)")
        if not self._known_target(target):
            raise NotFound(f"no device or group {target!r}")
        return target

    @grpc_errors
    def SetRolloutPolicy(self, request: Any, context: Any) -> Any:
        if request.target:
            self._target(request.target)
        name = request.target or "the fleet"
        if request.clear:
            self.registry.set_rollout_policy(request.target, None, self._who())
            policy = RolloutPolicy.from_dict(self.registry.rollout_policy(request.target))
        else:
            if not request.HasField("policy"):
                raise InvalidInput("policy is required (or clear)")
            policy = _policy_from_proto(request.policy)
            self.registry.set_rollout_policy(request.target, policy.to_dict(), self._who())
        log.warning("rollout policy set" if not request.clear else "rollout policy cleared",
                    extra={"operator": self._who(), "target": name, "mode": policy.mode,
                           "reason": request.reason[:500]})
        return _policy_to_proto(policy)

    def _status(self, target: str) -> admin_pb2.RolloutStatus:
        row = self.registry.rollout(target)
        devices = self.devices_of(target)
        released = self.registry.released_version(target)
        if row is None:
            policy = RolloutPolicy.from_dict(self.registry.rollout_policy(target))
            return admin_pb2.RolloutStatus(target=target, state="released",
                                           policy=_policy_to_proto(policy),
                                           target_devices=len(devices))
        waves = [admin_pb2.RolloutWave(wave=w.wave, devices=w.devices, reported=w.reported,
                                       applied=w.applied, refused=w.refused,
                                       started_s=w.started_s)
                 for w in self.registry.waves_of(target, row.version)]
        return admin_pb2.RolloutStatus(
            target=target, version=row.version, state=row.state, reason=row.reason,
            policy=_policy_to_proto(RolloutPolicy.from_dict(row.policy)),
            waves=waves, target_devices=len(devices),
            released_version=released)

    @grpc_errors
    def GetRollout(self, request: Any, context: Any) -> Any:
        return self._status(self._target(request.target))

    def _act(self, request: Any, expected: tuple[str, ...], state: str, verb: str,
             **kwargs: Any) -> Any:
        target = self._target(request.target)
        row = self.registry.rollout(target)
        if row is None or row.state not in expected:
            now = f"v{row.version} is {row.state}" if row else "nothing is published"
            raise FailedPrecondition(f"{target!r} has no rollout to {verb} ({now}; {verb} "
                                     f"applies to {', '.join(expected)})")
        reason = f"{verb}d by {self._who()}: {request.reason[:300]}".rstrip(": ")
        if not self.registry.set_rollout_state(target, row.version, expected, state, reason,
                                               **kwargs):
            raise FailedPrecondition(f"the rollout of {target!r} changed meanwhile; retry")
        log.warning(f"rollout {verb}d", extra={"operator": self._who(), "target": target,
                                              "version": row.version,
                                              "reason": request.reason[:500]})
        return row

    @grpc_errors
    def PauseRollout(self, request: Any, context: Any) -> Any:
        self._act(request, ("rolling", "awaiting"), "paused", "pause")
        return self._status(request.target)

    @grpc_errors
    def ResumeRollout(self, request: Any, context: Any) -> Any:
        target = self._target(request.target)
        row = self.registry.rollout(target)
        policy = RolloutPolicy.from_dict(row.policy if row else {})
        if row is not None and policy.mode == "manual" and row.state in ("awaiting",
                                                                         "paused"):
            self._act(request, ("awaiting", "paused"), "released", "approve")
        else:  # a halted wave counts as approved: the next one starts at once
            self._act(request, ("paused", "halted"), "rolling", "resume",
                      approved_wave=row.wave if row and row.state == "halted" else None)
        return self._status(target)

    @grpc_errors
    def AbortRollout(self, request: Any, context: Any) -> Any:
        row = self._act(request, ("rolling", "paused", "halted", "awaiting"), "aborted",
                        "abort")
        if request.revert and self.registry.admitted(row.target, row.version):
            released = self.registry.released_version(row.target)
            republish(self.registry, self.signer, self.bundle_dir, row.target, released,
                      reason=f"revert of v{row.version}, aborted by {self._who()}")
        return self._status(request.target)

    # -- desired config ------------------------------------------------------------------
    @grpc_errors
    def SetDesiredConfig(self, request: Any, context: Any) -> Any:
        if bool(request.device_id) == bool(request.group):
            raise InvalidInput("name exactly one of device_id and group")
        if request.device_id:
            kind, name = "device", self._record(request.device_id).device_id
        else:
            if not self.registry.device_records(request.group):
                raise NotFound(f"no device in group {request.group!r}")
            kind, name = "group", request.group
        values = None if request.clear else check_desired_config(dict(request.values))
        revision = self.registry.set_desired_config(kind, name, values, self._who())
        log.warning("desired config set" if values is not None else "desired config cleared",
                    extra={"operator": self._who(), "kind": kind, "config_of": name,
                           "values": values, "revision": revision,
                           "reason": request.reason[:500]})
        return admin_pb2.DesiredConfigInfo(kind=kind, name=name, revision=revision,
                                           values=values or {})


def _policy_from_proto(msg: Any) -> RolloutPolicy:
    return RolloutPolicy(
        mode=msg.mode, canary_share=msg.canary_share, wave_share=msg.wave_share,
        wave_interval_s=msg.wave_interval_s, min_reported_share=msg.min_reported_share,
        max_rollback_rate=msg.max_rollback_rate, max_confidence_drop=msg.max_confidence_drop,
        max_ood_rise=msg.max_ood_rise, max_errors=int(msg.max_errors),
        gate_timeout_s=msg.gate_timeout_s, revert_on_failure=msg.revert_on_failure
    ).validate()


def _policy_to_proto(policy: RolloutPolicy) -> admin_pb2.RolloutPolicy:
    return admin_pb2.RolloutPolicy(**policy.to_dict())
