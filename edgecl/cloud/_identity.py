"""Who a device is: its record, its bearer token, its own key, and the rule that decides
whether a registration of an existing device id is that device.

A device may register with its own Ed25519 key (the :class:`~edgecl.device.SyncClient`
always does). The service stores the public key at the device's first registration; from
then on only a registration signed by that key, with a counter above the last one it
accepted (no replays), re-registers the id. A device registered without a key re-registers
by presenting its current bearer token. An operator's release lets anyone with the
enrollment key take the id again (a replaced device); a revocation lets no one.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import NamedTuple

from edgecl._exceptions import require
from edgecl.cloud._errors import PermissionDenied, Unauthenticated
from edgecl.wire import RegistrationProof, registration_message

#: Lifetime of a bearer token unless the service says otherwise (``[auth] token_ttl_s``).
DEFAULT_TOKEN_TTL_S = 30 * 24 * 3600.0
#: ``devices.token_sha256`` of a device an operator revoked (no token matches it; a
#: re-registration is refused until :meth:`Registry.release_device`) or released (its next
#: registration with the enrollment key alone is accepted). Never a sha256 hex digest.
REVOKED, RELEASED = "revoked:", "released:"
#: Prefix of the update target of a device without a group under ``group_by = "group"``:
#: "/" is never part of a group name, so a group can never name a device's target.
DEVICE_TARGET = "device/"


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return int(time.time() * 1000)


def token_hash(token: str) -> str:
    """sha256 of a bearer token (only hashes are stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Device:
    """A registered device."""

    device_id: str
    encoder_sha256: str
    group: str


class Identity(NamedTuple):
    """A token's device and when the token expires (epoch ms; None: never)."""

    device: Device
    expires_ms: int | None

    def expired(self) -> bool:
        """Whether the token is past its lifetime."""
        return self.expires_ms is not None and now_ms() >= self.expires_ms


class StoredCredentials(NamedTuple):
    """What the registry holds to recognise a device: its token hash (or a marker), its
    public key (None: registered without one) and the last registration counter."""

    token_sha256: str
    device_key: bytes | None
    proof_counter: int


def device_target(device_id: str) -> str:
    """The update target of a device without a group under ``group_by = "group"``."""
    return DEVICE_TARGET + device_id


def verify_registration(device_id: str, encoder_sha256: str, group: str,
                        proof: RegistrationProof) -> None:
    """:class:`Unauthenticated` unless ``proof`` is signed by the key it carries."""
    ed = require("cryptography.hazmat.primitives.asymmetric.ed25519", "cloud")
    exceptions = require("cryptography.exceptions", "cloud")
    if len(proof.public_key) != 32 or len(proof.signature) != 64 or proof.counter <= 0:
        raise Unauthenticated("a device key is 32 bytes with a 64-byte signature and a "
                              "positive proof_counter")
    message = registration_message(device_id, encoder_sha256, group, proof.counter,
                                   proof.public_key)
    try:
        ed.Ed25519PublicKey.from_public_bytes(proof.public_key).verify(  # type: ignore[attr-defined]
            proof.signature, message)
    except (exceptions.InvalidSignature, ValueError) as exc:  # type: ignore[attr-defined]
        raise Unauthenticated("the registration is not signed by the device key it "
                              "carries") from exc


def check_reregistration(device_id: str, stored: StoredCredentials | None, *, token: str,
                         proof: RegistrationProof | None) -> None:
    """:class:`PermissionDenied` unless a registration of ``device_id`` may proceed:
    the id is new or released, or the caller proves it is the device (its own key with a
    fresh counter when it has one, else its current token). ``proof`` must already be
    verified (:func:`verify_registration`)."""
    if stored is None or stored.token_sha256 == RELEASED + device_id:
        return
    release = f"Registry.release_device({device_id!r})"
    if stored.token_sha256 == REVOKED + device_id:
        raise PermissionDenied(f"device {device_id!r} was revoked; it registers again only "
                               f"after an operator's {release}")
    if stored.device_key:
        if proof is None or proof.public_key != stored.device_key:
            raise PermissionDenied(f"device {device_id!r} exists and registered with its own "
                                   f"key: re-register signed by that key, or (key lost) "
                                   f"after an operator's {release}")
        if proof.counter <= stored.proof_counter:
            raise PermissionDenied(f"device {device_id!r}: proof_counter {proof.counter} is "
                                   f"not above the last accepted ({stored.proof_counter}); "
                                   f"a replayed registration")
        return
    if not token or stored.token_sha256 != token_hash(token):
        raise PermissionDenied(f"device {device_id!r} exists: re-register with its current "
                               f"bearer token, or (token lost) after an operator's {release}")
