"""The device's side of the wire: a small transport contract and its gRPC implementation.

grpc is imported only when a :class:`GrpcTransport` is built, so ``import edgecl.device``
stays light. Every call has a deadline. Failures become :class:`TransportError` carrying
the gRPC status name, so the sync client decides (retry, re-register, drop) in one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from edgecl._exceptions import EdgeclError
from edgecl.wire import (
    Registration,
    SignedUpdate,
    UploadResult,
    WireSample,
    batch_to_proto,
    registration_from_proto,
    update_from_proto,
    upload_result_from_proto,
)

RETRYABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "UNKNOWN", "INTERNAL",
             "ABORTED", "CANCELLED"}


class TransportError(EdgeclError):
    """A failed call; ``code`` is the gRPC status name (e.g. ``"UNAVAILABLE"``)."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code, self.details = code, details

    @property
    def retryable(self) -> bool:
        """Whether trying again later may succeed."""
        return self.code in RETRYABLE


class Transport(Protocol):
    """What the sync client needs from the network (gRPC here; a simulator may differ)."""

    def register(self, device_id: str, enrollment_key: str, encoder_sha256: str,
                 group: str) -> Registration: ...

    def upload(self, token: str, batches: list[list[WireSample]]) -> UploadResult: ...

    def subscribe(self, token: str, after_version: int) -> Iterator[SignedUpdate]: ...

    def fetch(self, token: str, after_version: int) -> SignedUpdate | None: ...

    def report(self, token: str, state_version: int, stats: dict[str, float]) -> int: ...

    def close(self) -> None: ...


class GrpcTransport:
    """:class:`Transport` over a gRPC channel to ``target`` (TLS when ``root_cert`` given)."""

    def __init__(self, target: str, *, root_cert: bytes | None = None,
                 deadline_s: float = 10.0, compress: bool = True,
                 max_message_bytes: int = 4 << 20) -> None:
        import grpc

        from edgecl._proto import edgecl_pb2, edgecl_pb2_grpc

        self._grpc, self._pb = grpc, edgecl_pb2
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.enable_retries", 0)]
        if root_cert is not None:
            self.channel = grpc.secure_channel(
                target, grpc.ssl_channel_credentials(root_certificates=root_cert), options)
        else:
            self.channel = grpc.insecure_channel(target, options)
        self.stub = edgecl_pb2_grpc.EdgeCloudStub(self.channel)
        self.deadline_s, self.compress = deadline_s, compress
        self._streams: list[Any] = []

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, timeout=self.deadline_s, **kwargs)
        except self._grpc.RpcError as exc:
            raise TransportError(exc.code().name, exc.details() or "") from exc

    @staticmethod
    def _md(token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),)

    def register(self, device_id: str, enrollment_key: str, encoder_sha256: str,
                 group: str) -> Registration:
        req = self._pb.RegisterRequest(device_id=device_id, enrollment_key=enrollment_key,
                                       encoder_sha256=encoder_sha256, group=group)
        return registration_from_proto(self._call(self.stub.Register, req))

    def upload(self, token: str, batches: list[list[WireSample]]) -> UploadResult:
        msgs = [batch_to_proto(b, compress=self.compress) for b in batches]
        return upload_result_from_proto(self._call(self.stub.Upload, iter(msgs),
                                                   metadata=self._md(token)))

    def subscribe(self, token: str, after_version: int) -> Iterator[SignedUpdate]:
        stream = self.stub.Subscribe(self._pb.SubscribeRequest(after_version=after_version),
                                     metadata=self._md(token))
        self._streams.append(stream)
        try:
            for msg in stream:
                yield update_from_proto(msg)
        except self._grpc.RpcError as exc:
            raise TransportError(exc.code().name, exc.details() or "") from exc
        finally:
            self._streams.remove(stream)

    def fetch(self, token: str, after_version: int) -> SignedUpdate | None:
        try:
            msg = self._call(self.stub.FetchUpdate,
                             self._pb.FetchUpdateRequest(after_version=after_version),
                             metadata=self._md(token))
        except TransportError as exc:
            if exc.code == "NOT_FOUND":
                return None
            raise
        return update_from_proto(msg)

    def report(self, token: str, state_version: int, stats: dict[str, float]) -> int:
        req = self._pb.DeviceReport(state_version=state_version, stats=stats)
        return int(self._call(self.stub.Report, req, metadata=self._md(token)).latest_version)

    def close(self) -> None:
        """Cancel open streams and close the channel."""
        for stream in list(self._streams):
            stream.cancel()
        self.channel.close()
