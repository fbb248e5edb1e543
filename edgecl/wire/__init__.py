"""What travels between devices and the cloud, and the one module that encodes it.

Protobuf types stay behind this package: callers see numpy arrays and the frozen
dataclasses below. Imports grpc-free protobuf code only (fine on a device).
"""

from __future__ import annotations

from edgecl.wire._serde import (
    batch_to_proto,
    check_device_id,
    payload_from_bytes,
    payload_to_bytes,
    payload_version,
    registration_from_proto,
    report_reply_from_proto,
    report_to_proto,
    sample_from_proto,
    sample_to_proto,
    update_from_proto,
    update_to_proto,
    upload_result_from_proto,
)
from edgecl.wire._tensor import MAX_TENSOR_BYTES, tensor_from_proto, tensor_to_proto
from edgecl.wire._types import (
    REVERT_METRIC,
    UPDATE_PARTS,
    DeviceStatus,
    KeyEndorsement,
    Registration,
    RegistrationProof,
    ReportReply,
    SignedUpdate,
    UpdatePayload,
    UploadResult,
    WireSample,
    endorsement_message,
    registration_message,
)

__all__ = [
    "DeviceStatus",
    "KeyEndorsement",
    "MAX_TENSOR_BYTES",
    "REVERT_METRIC",
    "Registration",
    "RegistrationProof",
    "ReportReply",
    "SignedUpdate",
    "UPDATE_PARTS",
    "UpdatePayload",
    "UploadResult",
    "WireSample",
    "batch_to_proto",
    "check_device_id",
    "endorsement_message",
    "payload_from_bytes",
    "payload_to_bytes",
    "payload_version",
    "registration_from_proto",
    "registration_message",
    "report_reply_from_proto",
    "report_to_proto",
    "sample_from_proto",
    "sample_to_proto",
    "tensor_from_proto",
    "tensor_to_proto",
    "update_from_proto",
    "update_to_proto",
    "upload_result_from_proto",
]
