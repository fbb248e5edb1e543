"""Plain types that travel between device and cloud (no protobuf in sight)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

#: Names of update parts, after the ModelState fields they replace.
UPDATE_PARTS = ("prompt", "filter", "adapter.down", "adapter.up", "head.weight", "head.bias",
                "norm.scale", "norm.shift")


@dataclass(frozen=True)
class WireSample:
    """One uploaded sample.

    Attributes
    ----------
    sample_id : str
        Unique per device: the idempotency key of an upload.
    timestamp_ms : int
        When the device saw it (Unix epoch, ms).
    input : ndarray or None
        The raw input ``(C, H, W)``; needed for teacher labelling.
    features : ndarray or None
        Encoder features ``(D,)`` as the device computed them.
    priority, device_label, device_entropy, ood_score, state_version, segment
        The device's view of the sample (``device_label`` -1 and ``ood_score`` NaN when
        unknown; ``segment``: index of the device's drift segment).
    explored : bool
        The device drew the sample at random, not for its uncertainty (an unbiased draw).
    """

    sample_id: str
    timestamp_ms: int = 0
    input: np.ndarray | None = None
    features: np.ndarray | None = None
    priority: float = 0.0
    device_label: int = -1
    device_entropy: float = float("nan")
    ood_score: float = float("nan")
    state_version: int = 0
    segment: int = 0
    explored: bool = False


#: ``UpdatePayload.metrics`` key set to 1 on an update that restores the bundle's own state
#: (the cloud found the device's state worse than the bundle's on its current domain).
REVERT_METRIC = "revert"


@dataclass(frozen=True)
class UpdatePayload:
    """The signed content of an update: learned parts plus where they apply.

    ``parts`` maps names from :data:`UPDATE_PARTS` to arrays; an update describes a whole
    state: absent parts are the bundle's own (not the device's current value). A
    ``metrics`` entry :data:`REVERT_METRIC` of 1 marks an update that restores the
    bundle's state.
    """

    version: int
    base_version: int
    encoder_sha256: str
    parts: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    created_ms: int = 0
    device_id: str = ""
    group: str = ""

    def replace(self, **changes: object) -> UpdatePayload:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class KeyEndorsement:
    """A new signing key of the service (raw 32-byte Ed25519 public key), signed by the key
    it replaces (see :func:`endorsement_message`)."""

    public_key: bytes
    endorser_key_id: str
    signature: bytes


@dataclass(frozen=True)
class SignedUpdate:
    """An update as shipped: serialized payload bytes, their signature and the key id,
    with the service's key rotations (oldest first) so a device can follow them."""

    payload: bytes
    signature: bytes
    key_id: str
    endorsements: tuple[KeyEndorsement, ...] = ()


#: Domain separators of what devices and the service sign besides update payloads.
ENDORSEMENT_CONTEXT = b"edgecl-key-endorsement/v1\0"
REGISTRATION_CONTEXT = b"edgecl-register/v1\0"


def endorsement_message(public_key: bytes) -> bytes:
    """The bytes a signing key signs to endorse its successor ``public_key``."""
    return ENDORSEMENT_CONTEXT + bytes(public_key)


def registration_message(device_id: str, encoder_sha256: str, group: str, counter: int,
                         public_key: bytes) -> bytes:
    """The bytes a device signs with its own key to prove a registration is its own."""
    fields = [device_id.encode(), encoder_sha256.encode(), group.encode(),
              str(int(counter)).encode(), bytes(public_key).hex().encode()]
    return REGISTRATION_CONTEXT + b"\0".join(fields)


@dataclass(frozen=True)
class RegistrationProof:
    """A device's proof that a registration is its own: its Ed25519 public key (raw 32
    bytes), a counter above its last registration's, and its signature over
    :func:`registration_message`."""

    public_key: bytes
    counter: int
    signature: bytes


@dataclass(frozen=True)
class Registration:
    """What a device learns when it registers."""

    token: str
    input_shape: tuple[int, ...]
    feature_dim: int
    latest_version: int
    max_message_bytes: int
    max_batch_samples: int


@dataclass(frozen=True)
class UploadResult:
    """The server's answer to one upload: counts and every durably stored id."""

    accepted: int
    duplicates: int
    acked_ids: tuple[str, ...]


@dataclass(frozen=True)
class DeviceStatus:
    """One device report: the state version it serves, its ``stats``, what happened to
    updates since the last report (``events``: ``(version, action, reason, time_ms)``)
    and the desired-config revision and values it applied."""

    state_version: int
    stats: dict[str, float]
    events: tuple[tuple[int, str, str, int], ...] = ()
    config_revision: int = 0
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportReply:
    """The service's answer to a report: the newest version the device may be served and
    the config an operator wants it to run (revision 0: none)."""

    latest_version: int
    desired_revision: int = 0
    desired: dict[str, str] = field(default_factory=dict)
