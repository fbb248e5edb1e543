"""The EdgeCloud servicer: thin RPC methods over the registry, teacher and learning.

Protocol messages stop here: requests are decoded with :mod:`edgecl.wire`, domain errors
become gRPC statuses through :func:`~edgecl.cloud._errors.grpc_errors`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn

from edgecl._exceptions import InvalidInput
from edgecl._proto import edgecl_pb2 as pb
from edgecl._proto import edgecl_pb2_grpc as pb_grpc
from edgecl.bundle import ModelBundle
from edgecl.cloud._auth import TokenBucket, current_device, hint_retry, presented_token
from edgecl.cloud._errors import (
    FailedPrecondition,
    NotFound,
    Overloaded,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    Unauthenticated,
    grpc_errors,
)
from edgecl.cloud._handlers import StreamSlots, check_batch_size, check_samples
from edgecl.cloud._identity import (
    DEFAULT_TOKEN_TTL_S,
    Device,
    device_target,
    verify_registration,
)
from edgecl.cloud._registry import Registry
from edgecl.cloud._rpc_server import UpdateNotifier
from edgecl.cloud._signing import UpdateSigner
from edgecl.wire import (
    RegistrationProof,
    SignedUpdate,
    check_device_id,
    sample_from_proto,
    update_to_proto,
)

log = logging.getLogger("edgecl.cloud")
#: Failed registrations (wrong enrollment key, token or device key) tolerated per client
#: address and device id: a burst, then one per 10 s. Keyed on the pair, so an attacker
#: behind a shared NAT does not lock out the other devices behind it...
ENROLL_FAILURE_BURST, ENROLL_FAILURE_RATE = 10.0, 0.1
#: ...and per client address over all device ids, a ceiling far above what one NAT's
#: devices fail legitimately, against guessing with ever new ids.
ADDRESS_FAILURE_BURST, ADDRESS_FAILURE_RATE = 500.0, 2.0
#: Retry hint bounds (s) for uploads refused at the backlog bound; UNKNOWN_RATE_HINT_S
#: while the labelling rate is not known yet (or labelling is paused).
MIN_HINT_S, MAX_HINT_S, UNKNOWN_RATE_HINT_S = 0.25, 30.0, 1.0
#: Retry hint (s) for a device at its storage bound (its samples are being labelled).
QUOTA_RETRY_S = 5.0
#: Seconds an idle Subscribe stream waits for a wake-up before it reads the registry
#: anyway (a safety net: publications, rollout steps and pins wake it at once; 1,000
#: streams then cost about 33 reads a second).
RECHECK_S = 30.0
#: Update events one report may carry, and the actions they may name.
MAX_REPORT_EVENTS = 64
EVENT_ACTIONS = ("applied", "rejected", "rolled_back", "reverted")


class Backlog:
    """The bound on unlabelled samples: uploads past ``limit`` are refused, never stored.

    ``count()`` (the registry's unlabelled count) is read at most every ``ttl`` seconds;
    between reads the samples stored here are added and labelling is ignored, so the value
    only over-estimates and the bound holds exactly. ``rate()`` is the labelling rate
    (samples/s) behind the retry hint.
    """

    def __init__(self, count: Callable[[], int], limit: int, rate: Callable[[], float],
                 ttl: float = 0.2) -> None:
        self._count, self.limit, self._rate, self.ttl = count, int(limit), rate, ttl
        self._lock = threading.Lock()
        self._value, self._read_at = 0, -math.inf

    def _current(self) -> int:
        if time.monotonic() - self._read_at > self.ttl:
            self._value, self._read_at = int(self._count()), time.monotonic()
        return self._value

    def retry_after(self, n: int) -> float:
        """Seconds until ``n`` more samples may fit, from the labelling rate."""
        rate, excess = float(self._rate()), self._value + n - self.limit
        if rate <= 0.0:
            return UNKNOWN_RATE_HINT_S
        return min(MAX_HINT_S, max(MIN_HINT_S, excess / rate))

    def check(self, n: int) -> float:
        """0.0 when ``n`` more samples fit now, else the retry hint in seconds."""
        with self._lock:
            return 0.0 if self._current() + n <= self.limit else self.retry_after(n)

    def store(self, n: int, add: Callable[[], tuple[int, int]]) -> tuple[int, int]:
        """Run ``add`` (storing ``n`` samples) if they fit, else :class:`Overloaded`."""
        with self._lock:
            if self._current() + n > self.limit:
                raise Overloaded(f"{self._value} samples wait for labelling (limit "
                                 f"{self.limit}); retry later")
            new, dup = add()
            self._value += new
            return new, dup


class EdgeCloudServicer(pb_grpc.EdgeCloudServicer):
    """Implements ``edgecl.v1.EdgeCloud``; see ``proto/edgecl/v1/edgecl.proto``."""

    def __init__(self, registry: Registry, bundles: dict[str, ModelBundle], *,
                 enrollment_key: str, max_batch_samples: int, max_message_bytes: int,
                 group_by: str = "device", metrics: Any = None, max_streams: int = 48,
                 stream_max_s: float = 300.0, samples: TokenBucket | None = None,
                 backlog: Backlog | None = None, max_report_keys: int = 64,
                 max_report_key_chars: int = 64,
                 token_ttl_s: float = DEFAULT_TOKEN_TTL_S,
                 signer: UpdateSigner | None = None) -> None:
        self.registry, self.bundles = registry, bundles
        self.signer = signer  # None: updates go out as stored (no key rotation)
        self._key = enrollment_key.encode()
        self.max_batch_samples, self.max_message_bytes = max_batch_samples, max_message_bytes
        self.group_by, self.metrics = group_by, metrics
        self.streams, self.stream_max_s = StreamSlots(max_streams), float(stream_max_s)
        self._enroll_failures = TokenBucket(ENROLL_FAILURE_RATE, ENROLL_FAILURE_BURST)
        self._address_failures = TokenBucket(ADDRESS_FAILURE_RATE, ADDRESS_FAILURE_BURST)
        self.samples, self.backlog = samples, backlog  # None: unbounded (embedding, tests)
        self.max_report_keys, self.max_report_key_chars = max_report_keys, max_report_key_chars
        self.token_ttl_s = float(token_ttl_s)
        self.stopping = threading.Event()
        #: Bumped when what devices may be served changes; wakes Subscribe streams.
        self.notifier = UpdateNotifier()

    # -- helpers -----------------------------------------------------------------------
    def target_of(self, device: Device) -> str:
        """Where a device's updates are published: its id, or with ``group_by = "group"``
        its group, or (no group) ``device/<id>``: group and device targets never collide."""
        if self.group_by != "group":
            return device.device_id
        return device.group or device_target(device.device_id)

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

    def _outgoing(self, update: SignedUpdate) -> Any:
        """The ``Update`` message of a stored update: under the current signing key, with
        the key rotation chain (devices that trust an older key follow it)."""
        return update_to_proto(update if self.signer is None else
                               self.signer.for_sending(update))

    def _refuse(self, context: Any, reason: str, seconds: float, exc: Exception) -> NoReturn:
        """Count a refusal for load, hint the retry, raise ``exc`` (RESOURCE_EXHAUSTED)."""
        if self.metrics is not None:
            self.metrics.refused.labels(reason).inc()
        hint_retry(context, seconds)
        raise exc

    def _admit(self, device_id: str, n: int, context: Any) -> None:
        """Refuse a batch of ``n`` samples past the backlog bound or the device's samples/s
        bucket (checked before decoding; nothing of a refused batch is stored)."""
        if self.backlog is not None and (wait := self.backlog.check(n)):
            self._refuse(context, "backlog", wait, Overloaded(
                f"the labelling backlog is full ({self.backlog.limit} samples); retry later"))
        if self.samples is not None and not self.samples.take(device_id, n):
            self._refuse(context, "sample_rate", self.samples.wait_s(device_id, n), RateLimited(
                f"device {device_id} is over its sample rate ({self.samples.rate:g} "
                f"samples/s, burst {self.samples.burst:g})"))

    def _store(self, device_id: str, samples: list[Any], context: Any) -> tuple[int, int]:
        """Commit ``samples`` inside the backlog bound and the device's storage bound."""
        def add() -> tuple[int, int]:
            return self.registry.add_samples(device_id, samples)

        try:
            if self.backlog is None:
                return add()
            return self.backlog.store(len(samples), add)
        except QuotaExceeded as exc:
            self._refuse(context, "quota", QUOTA_RETRY_S, exc)
        except Overloaded as exc:
            assert self.backlog is not None
            self._refuse(context, "backlog", self.backlog.retry_after(len(samples)), exc)

    def _check_report(self, stats: Any) -> dict[str, float]:
        """A report's stats, or :class:`InvalidInput` beyond the bounds."""
        if len(stats) > self.max_report_keys:
            raise InvalidInput(f"a report holds at most {self.max_report_keys} stats, got "
                               f"{len(stats)}")
        out: dict[str, float] = {}
        for key, value in stats.items():
            if not key or len(key) > self.max_report_key_chars:
                raise InvalidInput(f"report stat names must have 1 to "
                                   f"{self.max_report_key_chars} characters, got {len(key)}")
            if not math.isfinite(value):
                raise InvalidInput(f"report stat {key[:self.max_report_key_chars]!r} is not "
                                   f"finite ({value})")
            out[key] = float(value)
        return out

    # -- RPCs --------------------------------------------------------------------------
    def _failed_registration(self, peer: str, device_id: str) -> None:
        """Count a failed registration against the caller's address and claimed id."""
        self._enroll_failures.take(f"{peer}|{device_id}")
        self._address_failures.take(peer)

    def _check_throttle(self, peer: str, device_id: str) -> None:
        if (self._enroll_failures.peek(f"{peer}|{device_id}") < 1.0
                or self._address_failures.peek(peer) < 1.0):
            raise RateLimited("too many failed registrations from this address; retry later")

    @grpc_errors
    def Register(self, request: Any, context: Any) -> Any:
        # Open method (no token needed). Re-registering an existing device id needs the
        # device's own key (when it registered with one), else its current token (expired
        # or not) in the authorization metadata, or an operator's Registry.release_device;
        # it issues a new token and revokes the old one (only the token's sha256 is stored).
        peer = (context.peer() or "").rsplit(":", 1)[0]
        device_id = check_device_id(request.device_id)
        self._check_throttle(peer, device_id)
        if not hmac.compare_digest(request.enrollment_key.encode(), self._key):
            self._failed_registration(peer, device_id)
            raise Unauthenticated("wrong enrollment key")
        bundle = self.bundles.get(request.encoder_sha256)
        if bundle is None:
            raise FailedPrecondition(f"this service does not serve encoder "
                                     f"{request.encoder_sha256[:12]!r}; it serves "
                                     f"{sorted(s[:12] for s in self.bundles)}")
        if request.group:
            check_device_id(request.group)
        proof = None
        if request.device_public_key or request.proof_signature:
            proof = RegistrationProof(bytes(request.device_public_key),
                                      int(request.proof_counter),
                                      bytes(request.proof_signature))
        token = secrets.token_urlsafe(32)
        try:
            if proof is not None:
                verify_registration(device_id, request.encoder_sha256, request.group, proof)
            self.registry.register(device_id, token, request.encoder_sha256, request.group,
                                   dict(request.labels), proof=presented_token(context),
                                   device_proof=proof, ttl_s=self.token_ttl_s)
        except (PermissionDenied, Unauthenticated):
            self._failed_registration(peer, device_id)  # guessing costs like a wrong key
            raise
        device = Device(device_id, request.encoder_sha256, request.group)
        if self.metrics is not None:
            self.metrics.devices.set(self.registry.device_count())
        log.info("registered device", extra={"device": device_id, "group": request.group,
                                             "device_key": proof is not None})
        return pb.RegisterResponse(
            token=token, input_shape=list(bundle.input_spec.shape),
            feature_dim=bundle.manifest.feature_dim,
            latest_version=self.servable(device),
            max_message_bytes=self.max_message_bytes, max_batch_samples=self.max_batch_samples)

    @grpc_errors
    def Upload(self, request_iterator: Any, context: Any) -> Any:
        bundle = self._bundle(self._device())
        accepted = duplicates = 0
        acked: list[str] = []
        for batch in request_iterator:
            device = self._device(batch.device_id)
            check_batch_size(len(batch.samples), self.max_batch_samples)  # before decoding
            self._admit(device.device_id, len(batch.samples), context)
            samples = [sample_from_proto(msg, max_bytes=self.max_message_bytes)
                       for msg in batch.samples]
            check_samples(samples, bundle, max_batch_samples=self.max_batch_samples)
            new, dup = self._store(device.device_id, samples, context)  # committed
            accepted, duplicates = accepted + new, duplicates + dup
            acked.extend(s.sample_id for s in samples)
            if self.metrics is not None:
                self.metrics.uploaded.inc(new)
                self.metrics.duplicates.inc(dup)
        return pb.UploadAck(accepted=accepted, duplicates=duplicates, acked_ids=acked)

    @grpc_errors
    async def Subscribe(self, request: Any, context: Any) -> Any:
        """Runs on the event loop: an open stream holds no thread. It reads the registry
        (off the loop) when :attr:`notifier` says something servable changed, and every
        :data:`RECHECK_S` in any case."""
        device = self._device(request.device_id)
        target = self.target_of(device)
        after = _after_version(request)
        slot = self.streams.acquire()
        context.add_done_callback(lambda _: slot.release())  # on cancel, deadline or end
        loop = asyncio.get_running_loop()

        def servable(after: int) -> list[Any]:
            # what this device may be served: released or admitted, under its pins
            return self.registry.updates_after(
                target, after, device_id=device.device_id,
                cap=self.registry.served_cap(device.device_id, target))

        try:
            await context.send_initial_metadata(())  # the client knows it is subscribed
            # The stream ends cleanly after stream_max_s (the device resubscribes from its
            # version), on server stop, and at once on a client cancel.
            ends = loop.time() + self.stream_max_s
            while not self.stopping.is_set() and not context.done() and loop.time() < ends:
                seen = self.notifier.generation
                updates = await loop.run_in_executor(None, servable, after)
                for stored in updates:
                    yield self._outgoing(stored.update)
                    after = stored.version
                if not updates:
                    await self.notifier.wait(seen, max(0.0, min(RECHECK_S,
                                                                ends - loop.time())))
        finally:
            slot.release()

    @grpc_errors
    def FetchUpdate(self, request: Any, context: Any) -> Any:
        device = self._device(request.device_id)
        target = self.target_of(device)
        after = _after_version(request)
        latest = self.servable(device, target)
        if latest <= after:
            raise NotFound(f"no update after version {request.after_version} "
                           f"(latest is {latest})")
        stored = self.registry.updates_after(target, after, limit=1, newest_first=True,
                                             device_id=device.device_id, cap=latest)
        if not stored:
            raise NotFound(f"no update after version {request.after_version}")
        return self._outgoing(stored[0].update)

    def servable(self, device: Device, target: str | None = None) -> int:
        """The newest version ``device`` may be served: its target's latest, or lower
        while a staged rollout has not reached it or an operator pinned it."""
        target = self.target_of(device) if target is None else target
        served = min(self.registry.latest_version(target),
                     self.registry.rollout_cap(device.device_id, target))
        cap = self.registry.served_cap(device.device_id, target)
        return served if cap is None else min(served, cap)

    def _check_events(self, events: Any) -> list[tuple[int, str, str, int]]:
        """A report's update events, or :class:`InvalidInput` beyond the bounds."""
        if len(events) > MAX_REPORT_EVENTS:
            raise InvalidInput(f"a report holds at most {MAX_REPORT_EVENTS} update events, "
                               f"got {len(events)}")
        out = []
        for e in events:
            if e.action not in EVENT_ACTIONS or e.version < 0:
                raise InvalidInput(f"update events need a version >= 0 and an action of "
                                   f"{EVENT_ACTIONS}, got v{e.version} {e.action[:32]!r}")
            out.append((int(e.version), e.action, e.reason[:500], int(e.time_ms)))
        return out

    def _check_config(self, config: Any) -> dict[str, str]:
        """A report's applied config, or :class:`InvalidInput` beyond the bounds."""
        if len(config) > self.max_report_keys:
            raise InvalidInput(f"a report's config holds at most {self.max_report_keys} "
                               f"values, got {len(config)}")
        for key, value in config.items():
            if not key or len(key) > self.max_report_key_chars or len(value) > 256:
                raise InvalidInput(f"config names need 1 to {self.max_report_key_chars} "
                                   f"characters and values at most 256")
        return dict(config)

    @grpc_errors
    def Report(self, request: Any, context: Any) -> Any:
        device = self._device(request.device_id)
        stats = self._check_report(request.stats)
        events = self._check_events(request.events)
        config = self._check_config(request.config)
        applied = (int(request.config_revision), config) if (
            request.config_revision or config) else None
        self.registry.add_report(device.device_id, int(request.state_version), stats,
                                 events, applied)
        revision, values = self.registry.desired_for(device.device_id, device.group)
        return pb.ReportAck(latest_version=self.servable(device),
                            desired=pb.DesiredConfig(revision=revision, values=values))


def _after_version(request: Any) -> int:
    """The request's ``after_version``: a version the device holds, so never negative."""
    after = int(request.after_version)
    if after < 0:
        raise InvalidInput(f"after_version must be >= 0, got {after}")
    return after
