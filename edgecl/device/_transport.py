"""The device's side of the wire: a small transport contract and its gRPC implementation.

grpc is imported only when a :class:`GrpcTransport` is built, so ``import edgecl.device``
stays light. Every call has a deadline. Failures become :class:`TransportError` carrying
the gRPC status name, so the sync client decides (retry, re-register, drop) in one place.
A RESOURCE_EXHAUSTED refusal may carry the service's ``retry-after-ms`` hint (e.g. while its
labelling backlog is full): the error carries it as ``retry_after_s`` and the transport
sends no request of that method before it has passed (the outbox keeps the samples).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from edgecl._exceptions import ConfigError, EdgeclError
from edgecl.wire import (
    DeviceStatus,
    Registration,
    RegistrationProof,
    ReportReply,
    SignedUpdate,
    UploadResult,
    WireSample,
    batch_to_proto,
    registration_from_proto,
    report_reply_from_proto,
    report_to_proto,
    update_from_proto,
    upload_result_from_proto,
)

RETRYABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "UNKNOWN", "INTERNAL",
             "ABORTED", "CANCELLED"}
#: Trailing metadata key of the service's retry hint (milliseconds).
RETRY_AFTER_KEY = "retry-after-ms"
#: Longest retry hint honoured (s): a wrong or hostile hint cannot park a device for long.
MAX_RETRY_AFTER_S = 60.0


class TransportError(EdgeclError):
    """A failed call; ``code`` is the gRPC status name (e.g. ``"UNAVAILABLE"``)."""

    def __init__(self, code: str, details: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{code}: {details}")
        self.code, self.details, self.retry_after_s = code, details, retry_after_s

    @property
    def retryable(self) -> bool:
        """Whether trying again later may succeed."""
        return self.code in RETRYABLE


def retry_after_of(exc: Any) -> float | None:
    """The ``retry-after-ms`` hint of a failed gRPC call in seconds (capped), or None."""
    try:
        trailing = exc.trailing_metadata() or ()
    except Exception:  # not a call error (e.g. a channel failure without metadata)
        return None
    for key, value in trailing:
        if key == RETRY_AFTER_KEY:
            try:
                ms = float(value)
            except (TypeError, ValueError):
                return None
            return min(MAX_RETRY_AFTER_S, ms / 1000.0) if ms > 0 else None
    return None


class Transport(Protocol):
    """What the sync client needs from the network (gRPC here; a simulator may differ)."""

    def register(self, device_id: str, enrollment_key: str, encoder_sha256: str,
                 group: str, *, current_token: str = "",
                 proof: RegistrationProof | None = None) -> Registration:
        """Register; ``proof`` (signed by the device's own key) or ``current_token`` (the
        device's last token) proves a re-registration."""
        ...

    def upload(self, token: str, batches: list[list[WireSample]]) -> UploadResult: ...

    def subscribe(self, token: str, after_version: int) -> Iterator[SignedUpdate]: ...

    def fetch(self, token: str, after_version: int) -> SignedUpdate | None: ...

    def report(self, token: str, state_version: int, stats: dict[str, float]) -> int: ...

    def send_report(self, token: str, status: DeviceStatus) -> ReportReply:
        """A full report (stats, update events, applied config); optional: a transport
        without it sends :meth:`report` and gets no desired config."""
        ...

    def close(self) -> None: ...


#: Client keepalive: a ping after this long without traffic finds a dead replica or a
#: dropped connection (the service allows pings this often).
KEEPALIVE_MS, KEEPALIVE_TIMEOUT_MS = 60_000, 20_000


def channel_target(target: str | Sequence[str]) -> tuple[str, bool]:
    """The gRPC target of one address or several service replicas, and whether calls are
    balanced over several (``round_robin``). Several: a list, or one string of
    comma-separated ``host:port``; a gRPC target name (``dns:///edgecl.internal:50051``,
    every address the name resolves to, re-resolved as replicas come and go) is balanced
    too. Host names in a list are resolved once, here."""
    targets = ([t.strip() for t in target.split(",") if t.strip()] if isinstance(target, str)
               else [str(t).strip() for t in target])
    if not targets:
        raise ConfigError("no service address given")
    if len(targets) == 1:
        return targets[0], targets[0].startswith("dns:")
    addresses = []
    for t in targets:
        host, sep, port = t.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"service address {t!r}: write HOST:PORT")
        host = host.strip("[]")
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConfigError(f"service address {t!r}: cannot resolve ({exc})") from exc
        addresses.extend(f"[{i[4][0]}]:{port}" if ":" in i[4][0] else f"{i[4][0]}:{port}"
                         for i in infos if i[0] == socket.AF_INET or i[0] == socket.AF_INET6)
    unique = list(dict.fromkeys(addresses))
    family = "ipv6" if all(a.startswith("[") for a in unique) else "ipv4"
    if family == "ipv4":
        unique = [a for a in unique if not a.startswith("[")]
    return f"{family}:{','.join(unique)}", True


class GrpcTransport:
    """:class:`Transport` over a gRPC channel to ``target`` (TLS when ``root_cert`` given):
    one address, or several service replicas (see :func:`channel_target`) over which the
    calls are balanced and which fail over to each other."""

    def __init__(self, target: str | Sequence[str], *, root_cert: bytes | None = None,
                 deadline_s: float = 10.0, compress: bool = True,
                 max_message_bytes: int = 4 << 20) -> None:
        import grpc

        from edgecl._proto import edgecl_pb2, edgecl_pb2_grpc

        self._grpc, self._pb = grpc, edgecl_pb2
        target, balanced = channel_target(target)
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.enable_retries", 0),
                   ("grpc.keepalive_time_ms", KEEPALIVE_MS),
                   ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
                   ("grpc.http2.max_pings_without_data", 0)]  # also on a quiet stream
        if balanced:
            options.append(("grpc.lb_policy_name", "round_robin"))
        if root_cert is not None:
            self.channel = grpc.secure_channel(
                target, grpc.ssl_channel_credentials(root_certificates=root_cert), options)
        else:
            self.channel = grpc.insecure_channel(target, options)
        self.stub = edgecl_pb2_grpc.EdgeCloudStub(self.channel)
        self.deadline_s, self.compress = deadline_s, compress
        self._streams: list[Any] = []
        self._not_before: dict[str, float] = {}  # method -> monotonic time of its hint
        self._closed = threading.Event()

    def _error(self, exc: Any, method: str) -> TransportError:
        """The :class:`TransportError` of a failed call; remembers its retry hint."""
        hint = retry_after_of(exc) if exc.code().name == "RESOURCE_EXHAUSTED" else None
        if hint is not None:
            self._not_before[method] = time.monotonic() + hint
        return TransportError(exc.code().name, exc.details() or "", hint)

    def _honour_hint(self, method: str) -> None:
        """Wait out the service's last retry hint for ``method`` (a close ends the wait)."""
        wait = self._not_before.get(method, 0.0) - time.monotonic()
        if wait > 0 and self._closed.wait(wait):
            raise TransportError("CANCELLED", "transport closed")

    def _call(self, fn: Any, *args: Any, method: str = "", **kwargs: Any) -> Any:
        self._honour_hint(method)
        try:
            return fn(*args, timeout=self.deadline_s, **kwargs)
        except self._grpc.RpcError as exc:
            raise self._error(exc, method) from exc

    @staticmethod
    def _md(token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),)

    def register(self, device_id: str, enrollment_key: str, encoder_sha256: str,
                 group: str, *, current_token: str = "",
                 proof: RegistrationProof | None = None) -> Registration:
        req = self._pb.RegisterRequest(device_id=device_id, enrollment_key=enrollment_key,
                                       encoder_sha256=encoder_sha256, group=group)
        if proof is not None:
            req.device_public_key, req.proof_counter, req.proof_signature = (
                proof.public_key, proof.counter, proof.signature)
        md = self._md(current_token) if current_token else None  # proves a re-registration
        return registration_from_proto(self._call(self.stub.Register, req, method="register",
                                                  metadata=md))

    def upload(self, token: str, batches: list[list[WireSample]]) -> UploadResult:
        msgs = [batch_to_proto(b, compress=self.compress) for b in batches]
        return upload_result_from_proto(self._call(self.stub.Upload, iter(msgs),
                                                   method="upload", metadata=self._md(token)))

    def subscribe(self, token: str, after_version: int) -> Iterator[SignedUpdate]:
        self._honour_hint("subscribe")
        stream = self.stub.Subscribe(self._pb.SubscribeRequest(after_version=after_version),
                                     metadata=self._md(token))
        self._streams.append(stream)
        try:
            for msg in stream:
                yield update_from_proto(msg)
        except self._grpc.RpcError as exc:
            raise self._error(exc, "subscribe") from exc
        finally:
            self._streams.remove(stream)

    def fetch(self, token: str, after_version: int) -> SignedUpdate | None:
        try:
            msg = self._call(self.stub.FetchUpdate,
                             self._pb.FetchUpdateRequest(after_version=after_version),
                             method="fetch", metadata=self._md(token))
        except TransportError as exc:
            if exc.code == "NOT_FOUND":
                return None
            raise
        return update_from_proto(msg)

    def report(self, token: str, state_version: int, stats: dict[str, float]) -> int:
        req = self._pb.DeviceReport(state_version=state_version, stats=stats)
        return int(self._call(self.stub.Report, req, method="report",
                              metadata=self._md(token)).latest_version)

    def send_report(self, token: str, status: DeviceStatus) -> ReportReply:
        """Send a full report (stats, update events, applied config); the reply carries
        the desired config."""
        return report_reply_from_proto(self._call(self.stub.Report, report_to_proto(status),
                                                  method="report", metadata=self._md(token)))

    def close(self) -> None:
        """Cancel open streams, end waits for retry hints and close the channel."""
        self._closed.set()
        for stream in list(self._streams):
            stream.cancel()
        self.channel.close()
