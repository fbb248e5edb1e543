"""The ``FleetAdmin`` gRPC service: the fleet as operators see and steer it.

Reads: devices (filtered by group and labels), one device with its update history and
reports, a target's updates and rejected candidates. Writes (the ``operator`` role, see
:mod:`edgecl.cloud._admin_auth`): a rollback publishes an earlier version's content (or
the bundle's own state) as the target's next version, signed like every update, so the
devices' rule that versions only increase holds. Every write is logged with the
operator's name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from edgecl._exceptions import InvalidInput
from edgecl._proto import admin_pb2, admin_pb2_grpc
from edgecl.cloud._admin_auth import current_operator
from edgecl.cloud._errors import FailedPrecondition, NotFound, grpc_errors
from edgecl.cloud._identity import Device
from edgecl.cloud._learner import BaseState
from edgecl.cloud._registry import Registry
from edgecl.cloud._registry_fleet import DeviceRecord, UpdateRecord
from edgecl.cloud._signing import UpdateSigner
from edgecl.wire import UpdatePayload, payload_from_bytes

MAX_DEVICES = 1000
MAX_UPDATES = 100
MAX_REPORTS = 20
#: Metric of a rollback update: the version whose content it publishes again.
ROLLBACK_METRIC = "rollback_of"
log = logging.getLogger("edgecl.cloud.admin")


def _limit(value: int, maximum: int) -> int:
    if value < 0:
        raise InvalidInput(f"limit must be >= 0, got {value}")
    return min(value or maximum, maximum)


class AdminServicer(admin_pb2_grpc.FleetAdminServicer):
    """Serves :mod:`edgecl.v1.FleetAdmin` from the registry; publishes rollbacks signed
    by ``signer``. ``target_of(device)`` names where a device's updates go;
    ``bundle_dir(encoder_sha256)`` finds the bundle of an encoder (for a rollback to the
    bundle's own state)."""

    def __init__(self, registry: Registry, signer: UpdateSigner,
                 target_of: Callable[[Device], str],
                 bundle_dir: Callable[[str], Any]) -> None:
        self.registry, self.signer = registry, signer
        self.target_of, self.bundle_dir = target_of, bundle_dir

    # -- reads -------------------------------------------------------------------------
    def _info(self, record: DeviceRecord) -> admin_pb2.DeviceInfo:
        target = self.target_of(Device(record.device_id, record.encoder_sha256, record.group))
        reports = self.registry.reports_of(record.device_id, 1)
        cap = self.registry.served_cap(record.device_id, target)
        return admin_pb2.DeviceInfo(
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
        return admin_pb2.DeviceDetail(device=info, updates=updates, reports=reports)

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
        return any(self.target_of(Device(r.device_id, r.encoder_sha256, r.group)) == target
                   for r in self.registry.device_records())

    def _update(self, record: UpdateRecord) -> admin_pb2.UpdateInfo:
        payload = payload_from_bytes(self.registry.artifacts.get(record.artifact))
        return admin_pb2.UpdateInfo(target=record.target, version=record.version,
                                    base_version=record.base_version,
                                    created_ms=record.created_ms, metrics=record.metrics,
                                    parts=sorted(payload.parts))

    # -- writes ------------------------------------------------------------------------
    @grpc_errors
    def Rollback(self, request: Any, context: Any) -> Any:
        target, to = request.target, int(request.to_version)
        if not target:
            raise InvalidInput("target is required (a device id or a group)")
        records = self.registry.update_records(target, 1)
        if not records:
            raise NotFound(f"nothing was published for {target!r}: nothing to roll back")
        latest = records[0]
        if not 0 <= to < latest.version:
            raise InvalidInput(f"to_version must be an earlier version of {target!r}: "
                               f"0 (the bundle's own state) to {latest.version - 1}, got {to}")
        newest = payload_from_bytes(self.registry.artifacts.get(latest.artifact))
        if to == 0:
            try:
                bundle_dir = self.bundle_dir(latest.encoder_sha256)
            except KeyError:
                raise FailedPrecondition(f"{target!r} runs encoder {latest.encoder_sha256[:12]}"
                                         f"..., which this service no longer serves") from None
            bundle = BaseState.from_bundle(bundle_dir)
            parts = {"head.weight": bundle.head_weight, "head.bias": bundle.head_bias}
            encoder = latest.encoder_sha256
        else:
            old = self.registry.update_record(target, to)
            if old is None:
                raise NotFound(f"{target!r} has no version {to}")
            payload = payload_from_bytes(self.registry.artifacts.get(old.artifact))
            parts, encoder = dict(payload.parts), payload.encoder_sha256
        operator = current_operator.get()
        payload = UpdatePayload(
            version=latest.version + 1, base_version=latest.version, encoder_sha256=encoder,
            parts=parts, metrics={ROLLBACK_METRIC: float(to)},
            created_ms=int(time.time() * 1000), device_id=newest.device_id,
            group=newest.group)
        self.registry.publish(target, self.signer.sign(payload), payload)
        log.warning("rollback published", extra={
            "operator": operator.name if operator else "", "target": target,
            "to_version": to, "version": payload.version, "reason": request.reason[:500]})
        record = self.registry.update_records(target, 1)[0]
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
        operator = current_operator.get()
        who = operator.name if operator else ""
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
