"""The EdgeCloud servicer: thin RPC methods over the registry, teacher and learning.

Protocol messages stop here: requests are decoded with :mod:`edgecl.wire`, domain errors
become gRPC statuses through :func:`~edgecl.cloud._errors.grpc_errors`.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
from typing import Any

import numpy as np

from edgecl._exceptions import InvalidInput
from edgecl._proto import edgecl_pb2 as pb
from edgecl._proto import edgecl_pb2_grpc as pb_grpc
from edgecl.bundle import ModelBundle
from edgecl.cloud._auth import current_device
from edgecl.cloud._errors import (
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    grpc_errors,
)
from edgecl.cloud._registry import Device, Registry
from edgecl.wire import check_device_id, sample_from_proto, update_to_proto

log = logging.getLogger("edgecl.cloud")
_RANGE_SLACK = 1e-4


class EdgeCloudServicer(pb_grpc.EdgeCloudServicer):
    """Implements ``edgecl.v1.EdgeCloud``; see ``proto/edgecl/v1/edgecl.proto``."""

    def __init__(self, registry: Registry, bundles: dict[str, ModelBundle], *,
                 enrollment_key: str, max_batch_samples: int, max_message_bytes: int,
                 group_by: str = "device", metrics: Any = None) -> None:
        self.registry, self.bundles = registry, bundles
        self._key = enrollment_key.encode()
        self.max_batch_samples, self.max_message_bytes = max_batch_samples, max_message_bytes
        self.group_by, self.metrics = group_by, metrics
        self.stopping = threading.Event()

    # -- helpers -----------------------------------------------------------------------
    def target_of(self, device: Device) -> str:
        """Where a device's updates are published: its group or itself."""
        return device.group if self.group_by == "group" and device.group else device.device_id

    @staticmethod
    def _device(claimed: str = "") -> Device:
        device = current_device.get()
        if device is None:
            raise Unauthenticated("not authenticated")
        if claimed and claimed != device.device_id:
            raise PermissionDenied(f"device {device.device_id} may not act for {claimed!r}")
        return device

    # -- RPCs --------------------------------------------------------------------------
    @grpc_errors
    def Register(self, request: Any, context: Any) -> Any:
        if not hmac.compare_digest(request.enrollment_key.encode(), self._key):
            raise Unauthenticated("wrong enrollment key")
        device_id = check_device_id(request.device_id)
        bundle = self.bundles.get(request.encoder_sha256)
        if bundle is None:
            raise FailedPrecondition(f"this service does not serve encoder "
                                     f"{request.encoder_sha256[:12]!r}; it serves "
                                     f"{sorted(s[:12] for s in self.bundles)}")
        if request.group:
            check_device_id(request.group)
        token = secrets.token_urlsafe(32)
        self.registry.register(device_id, token, request.encoder_sha256, request.group,
                               dict(request.labels))
        device = Device(device_id, request.encoder_sha256, request.group)
        if self.metrics is not None:
            self.metrics.devices.set(self.registry.device_count())
        log.info("registered device", extra={"device": device_id, "group": request.group})
        return pb.RegisterResponse(
            token=token, input_shape=list(bundle.input_spec.shape),
            feature_dim=bundle.manifest.feature_dim,
            latest_version=self.registry.latest_version(self.target_of(device)),
            max_message_bytes=self.max_message_bytes, max_batch_samples=self.max_batch_samples)

    @grpc_errors
    def Upload(self, request_iterator: Any, context: Any) -> Any:
        device = self._device()
        bundle = self.bundles[device.encoder_sha256]
        spec = bundle.input_spec
        lo, hi = spec.value_range
        accepted = duplicates = 0
        acked: list[str] = []
        for batch in request_iterator:
            device = self._device(batch.device_id)
            if len(batch.samples) > self.max_batch_samples:
                raise InvalidInput(f"batch of {len(batch.samples)} samples exceeds "
                                   f"max_batch_samples={self.max_batch_samples}")
            samples = []
            for msg in batch.samples:
                s = sample_from_proto(msg)
                if s.input is None:
                    raise InvalidInput(f"sample {s.sample_id} has no input")
                if s.input.dtype != np.float32 or s.input.shape != tuple(spec.shape):
                    raise InvalidInput(f"sample {s.sample_id}: input must be float32 "
                                       f"{tuple(spec.shape)} like the registered bundle, got "
                                       f"{s.input.dtype} {s.input.shape}")
                if s.input.min() < lo - _RANGE_SLACK or s.input.max() > hi + _RANGE_SLACK:
                    raise InvalidInput(f"sample {s.sample_id}: values outside the bundle's "
                                       f"range [{lo:g}, {hi:g}]")
                if s.features is not None and s.features.shape != (bundle.manifest.feature_dim,):
                    raise InvalidInput(f"sample {s.sample_id}: features must have shape "
                                       f"({bundle.manifest.feature_dim},), got "
                                       f"{s.features.shape}")
                samples.append(s)
            if len({s.sample_id for s in samples}) != len(samples):
                raise InvalidInput("a batch repeats a sample_id")
            new, dup = self.registry.add_samples(device.device_id, samples)
            accepted, duplicates = accepted + new, duplicates + dup
            acked.extend(s.sample_id for s in samples)
            if self.metrics is not None:
                self.metrics.uploaded.inc(new)
                self.metrics.duplicates.inc(dup)
        return pb.UploadAck(accepted=accepted, duplicates=duplicates, acked_ids=acked)

    @grpc_errors
    def Subscribe(self, request: Any, context: Any) -> Any:
        device = self._device(request.device_id)
        target = self.target_of(device)
        after = int(request.after_version)
        while context.is_active() and not self.stopping.is_set():
            updates = self.registry.updates_after(target, after)
            for stored in updates:
                yield update_to_proto(stored.update)
                after = stored.version
            if not updates:
                self.registry.wait_changed(0.25)

    @grpc_errors
    def FetchUpdate(self, request: Any, context: Any) -> Any:
        device = self._device(request.device_id)
        target = self.target_of(device)
        latest = self.registry.latest_version(target)
        if latest <= request.after_version:
            raise NotFound(f"no update after version {request.after_version} "
                           f"(latest is {latest})")
        stored = self.registry.updates_after(target, latest - 1, limit=1)
        return update_to_proto(stored[0].update)

    @grpc_errors
    def Report(self, request: Any, context: Any) -> Any:
        device = self._device(request.device_id)
        stats = {k: float(v) for k, v in request.stats.items() if np.isfinite(v)}
        self.registry.add_report(device.device_id, int(request.state_version), stats)
        return pb.ReportAck(latest_version=self.registry.latest_version(self.target_of(device)))
