"""The one place that converts between ``edgecl.v1`` messages and edgecl types.

Every ``*_from_proto`` validates what it reads and raises :class:`InvalidInput` with the
field name, so servers can map it to ``INVALID_ARGUMENT`` and keep serving.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from edgecl._exceptions import InvalidInput
from edgecl._proto import edgecl_pb2 as pb
from edgecl.wire._tensor import MAX_TENSOR_BYTES, tensor_from_proto, tensor_to_proto
from edgecl.wire._types import (
    UPDATE_PARTS,
    DeviceStatus,
    KeyEndorsement,
    Registration,
    ReportReply,
    SignedUpdate,
    UpdatePayload,
    UploadResult,
    WireSample,
)

MAX_ID_CHARS = 128


def _check_id(value: str, what: str) -> str:
    if not value or len(value) > MAX_ID_CHARS:
        raise InvalidInput(f"{what} must have 1-{MAX_ID_CHARS} characters, got {len(value)}")
    if not all(c.isascii() and (c.isalnum() or c in "._:-") for c in value):
        raise InvalidInput(f"{what} {value[:40]!r} may use only [A-Za-z0-9._:-]")
    return value


def sample_to_proto(sample: WireSample, *, compress: bool = False) -> Any:
    """Encode one :class:`WireSample`."""
    msg = pb.Sample(sample_id=sample.sample_id, timestamp_ms=int(sample.timestamp_ms),
                    priority=float(sample.priority), device_label=int(sample.device_label),
                    device_entropy=float(sample.device_entropy),
                    ood_score=float(sample.ood_score), state_version=int(sample.state_version),
                    segment=int(sample.segment), explored=bool(sample.explored))
    if sample.input is not None:
        tensor_to_proto(sample.input, compress=compress, out=msg.input)
    if sample.features is not None:
        tensor_to_proto(sample.features, compress=compress, out=msg.features)
    return msg


def sample_from_proto(msg: Any, *, max_bytes: int = MAX_TENSOR_BYTES) -> WireSample:
    """Decode and validate one ``Sample`` (ids, finite tensors)."""
    sid = _check_id(msg.sample_id, "sample_id")
    arrays: dict[str, np.ndarray | None] = {}
    for name in ("input", "features"):
        if not msg.HasField(name):
            arrays[name] = None
            continue
        arr = tensor_from_proto(getattr(msg, name), name=f"sample {sid} {name}",
                                max_bytes=max_bytes)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InvalidInput(f"sample {sid} {name} contains NaN or inf")
        arrays[name] = arr
    return WireSample(sample_id=sid, timestamp_ms=int(msg.timestamp_ms),
                      input=arrays["input"], features=arrays["features"],
                      priority=float(msg.priority), device_label=int(msg.device_label),
                      device_entropy=float(msg.device_entropy), ood_score=float(msg.ood_score),
                      state_version=int(msg.state_version), segment=int(msg.segment),
                      explored=bool(msg.explored))


def batch_to_proto(samples: list[WireSample], *, compress: bool = False) -> Any:
    """A ``SampleBatch`` of ``samples``."""
    return pb.SampleBatch(samples=[sample_to_proto(s, compress=compress) for s in samples])


def payload_to_bytes(payload: UpdatePayload, *, compress: bool = True,
                     fp16: bool = True) -> bytes:
    """Serialize an :class:`UpdatePayload` (float parts as fp16 unless ``fp16=False``)."""
    msg = pb.UpdatePayload(version=payload.version, base_version=payload.base_version,
                           encoder_sha256=payload.encoder_sha256,
                           created_ms=int(payload.created_ms), device_id=payload.device_id,
                           group=payload.group)
    for name in sorted(payload.parts):
        if name not in UPDATE_PARTS:
            raise InvalidInput(f"unknown update part {name!r}; expected one of {UPDATE_PARTS}")
        arr = np.asarray(payload.parts[name])
        if fp16 and arr.dtype.kind == "f":
            arr = arr.astype(np.float16)
        tensor_to_proto(arr, compress=compress, out=msg.parts.add(name=name).tensor)
    for key in sorted(payload.metrics):
        msg.metrics[key] = float(payload.metrics[key])
    return msg.SerializeToString(deterministic=True)


def _parse_payload(data: bytes) -> Any:
    msg = pb.UpdatePayload()
    try:
        msg.ParseFromString(bytes(data))
    except (DecodeError, ValueError, TypeError, RecursionError) as exc:
        raise InvalidInput(f"update payload is not a valid UpdatePayload ({exc})") from exc
    return msg


def payload_version(data: bytes) -> int:
    """The ``version`` field of serialized payload bytes, parsing nothing else
    (:class:`InvalidInput` if they are not an ``UpdatePayload``). Trust it only after the
    signature over ``data`` was verified."""
    return int(_parse_payload(data).version)


def _part_array(part: Any) -> np.ndarray:
    """Decode one part; any failure of an untrusted tensor is :class:`InvalidInput`."""
    try:
        return tensor_from_proto(part.tensor, name=f"update part {part.name}")
    except InvalidInput:
        raise
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:
        raise InvalidInput(f"update part {part.name} cannot be decoded ({exc})") from exc


def payload_from_bytes(data: bytes) -> UpdatePayload:
    """Parse and validate serialized payload bytes; float parts come back as float32.

    Anything wrong with the bytes raises :class:`InvalidInput`, never another error.
    """
    msg = _parse_payload(data)
    parts: dict[str, np.ndarray] = {}
    for part in msg.parts:
        if part.name not in UPDATE_PARTS or part.name in parts:
            raise InvalidInput(f"update has an unknown or repeated part {part.name[:40]!r}")
        arr = _part_array(part)
        if arr.dtype.kind != "f":
            raise InvalidInput(f"update part {part.name} must be floating point")
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise InvalidInput(f"update part {part.name} contains NaN or inf")
        parts[part.name] = arr
    metrics = {k: float(v) for k, v in msg.metrics.items() if math.isfinite(v)}
    return UpdatePayload(version=int(msg.version), base_version=int(msg.base_version),
                         encoder_sha256=msg.encoder_sha256, parts=parts, metrics=metrics,
                         created_ms=int(msg.created_ms), device_id=msg.device_id,
                         group=msg.group)


#: Most key endorsements one update may carry (the service keeps its last rotations).
MAX_ENDORSEMENTS = 16


def update_to_proto(update: SignedUpdate) -> Any:
    """The ``Update`` message of a signed update."""
    return pb.Update(payload=update.payload, signature=update.signature, key_id=update.key_id,
                     endorsements=[pb.KeyEndorsement(public_key=e.public_key,
                                                     endorser_key_id=e.endorser_key_id,
                                                     signature=e.signature)
                                   for e in update.endorsements])


def update_from_proto(msg: Any) -> SignedUpdate:
    """A :class:`SignedUpdate` from an ``Update`` message (verify it before use); at most
    :data:`MAX_ENDORSEMENTS` endorsements are kept (the newest)."""
    endorsements = tuple(KeyEndorsement(bytes(e.public_key), str(e.endorser_key_id),
                                        bytes(e.signature))
                         for e in list(msg.endorsements)[-MAX_ENDORSEMENTS:])
    return SignedUpdate(payload=bytes(msg.payload), signature=bytes(msg.signature),
                        key_id=msg.key_id, endorsements=endorsements)


def registration_from_proto(msg: Any) -> Registration:
    """A :class:`Registration` from a ``RegisterResponse``."""
    return Registration(token=msg.token, input_shape=tuple(int(d) for d in msg.input_shape),
                        feature_dim=int(msg.feature_dim), latest_version=int(msg.latest_version),
                        max_message_bytes=int(msg.max_message_bytes),
                        max_batch_samples=int(msg.max_batch_samples))


def upload_result_from_proto(msg: Any) -> UploadResult:
    """An :class:`UploadResult` from an ``UploadAck``."""
    return UploadResult(accepted=int(msg.accepted), duplicates=int(msg.duplicates),
                        acked_ids=tuple(msg.acked_ids))


def check_device_id(device_id: str) -> str:
    """``device_id`` if it is a valid id, else :class:`InvalidInput`."""
    return _check_id(device_id, "device_id")


def report_to_proto(status: DeviceStatus) -> Any:
    """The ``DeviceReport`` message of a :class:`DeviceStatus`."""
    return pb.DeviceReport(
        timestamp_ms=int(time.time() * 1000), state_version=int(status.state_version),
        stats=status.stats, config_revision=int(status.config_revision),
        config=status.config,
        events=[pb.UpdateEvent(version=v, action=a, reason=r, time_ms=t)
                for v, a, r, t in status.events])


def report_reply_from_proto(msg: Any) -> ReportReply:
    """A :class:`ReportReply` from a ``ReportAck`` message."""
    return ReportReply(int(msg.latest_version), int(msg.desired.revision),
                       dict(msg.desired.values))
