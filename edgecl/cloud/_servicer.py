"""The EdgeCloud servicer: thin RPC methods over the registry, teacher and learning.

Protocol messages stop here: requests are decoded with :mod:`edgecl.wire`, domain errors
become gRPC statuses through :func:`~edgecl.cloud._errors.grpc_errors`.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from typing import Any

import numpy as np

from edgecl._proto import edgecl_pb2 as pb
from edgecl._proto import edgecl_pb2_grpc as pb_grpc
from edgecl.bundle import ModelBundle
from edgecl.cloud._auth import TokenBucket, current_device
from edgecl.cloud._errors import (
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    grpc_errors,
)
from edgecl.cloud._handlers import StreamSlots, check_batch_size, check_samples
from edgecl.cloud._registry import Device, Registry
from edgecl.wire import check_device_id, sample_from_proto, update_to_proto

log = logging.getLogger("edgecl.cloud")
#: Wrong enrollment keys tolerated per client address: a burst, then one per 10 s.
ENROLL_FAILURE_BURST, ENROLL_FAILURE_RATE = 10.0, 0.1


class EdgeCloudServicer(pb_grpc.EdgeCloudServicer):
    """Implements ``edgecl.v1.EdgeCloud``; see ``proto/edgecl/v1/edgecl.proto``."""

    def __init__(self, registry: Registry, bundles: dict[str, ModelBundle], *,
                 enrollment_key: str, max_batch_samples: int, max_message_bytes: int,
                 group_by: str = "device", metrics: Any = None, max_streams: int = 48,
                 stream_max_s: float = 300.0) -> None:
        self.registry, self.bundles = registry, bundles
        self._key = enrollment_key.encode()
        self.max_batch_samples, self.max_message_bytes = max_batch_samples, max_message_bytes
        self.group_by, self.metrics = group_by, metrics
        self.streams, self.stream_max_s = StreamSlots(max_streams), float(stream_max_s)
        self._enroll_failures = TokenBucket(ENROLL_FAILURE_RATE, ENROLL_FAILURE_BURST)
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

    def _bundle(self, device: Device) -> ModelBundle:
        bundle = self.bundles.get(device.encoder_sha256)
        if bundle is None:
            raise FailedPrecondition(f"device {device.device_id} registered with encoder "
                                     f"{device.encoder_sha256[:12]!r}, which this service no "
                                     f"longer serves; register again with a served bundle")
        return bundle

    # -- RPCs --------------------------------------------------------------------------
    @grpc_errors
    def Register(self, request: Any, context: Any) -> Any:
        # Open method (no token). Re-registering a device id issues a new token and
        # revokes the old one (only the token's sha256 is stored).
        peer = (context.peer() or "").rsplit(":", 1)[0]
        if self._enroll_failures.peek(peer) < 1.0:
            raise RateLimited("too many wrong enrollment keys from this address; retry later")
        if not hmac.compare_digest(request.enrollment_key.encode(), self._key):
            self._enroll_failures.take(peer)
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
        bundle = self._bundle(self._device())
        accepted = duplicates = 0
        acked: list[str] = []
        for batch in request_iterator:
            device = self._device(batch.device_id)
            check_batch_size(len(batch.samples), self.max_batch_samples)  # before decoding
            samples = [sample_from_proto(msg) for msg in batch.samples]
            check_samples(samples, bundle, max_batch_samples=self.max_batch_samples)
            new, dup = self.registry.add_samples(device.device_id, samples)  # committed
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
        slot = self.streams.acquire()
        context.add_callback(slot.release)  # on cancel, deadline or end
        try:
            # The stream ends cleanly after stream_max_s (the device resubscribes from its
            # version), on server stop, and within 0.25 s of a client cancel.
            ends = time.monotonic() + self.stream_max_s
            while (context.is_active() and not self.stopping.is_set()
                   and time.monotonic() < ends):
                updates = self.registry.updates_after(target, after)
                for stored in updates:
                    yield update_to_proto(stored.update)
                    after = stored.version
                if not updates:
                    self.registry.wait_changed(0.25)
        finally:
            slot.release()

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
