"""Checking a signed update before anything of it is used: signature, key, payload.

Nothing of an update is decoded before its signature is verified: the payload bytes are
untrusted until then, and every failure is an :class:`UpdateRejected`.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgecl._exceptions import ConfigError, InvalidInput, UpdateRejected, require
from edgecl.wire import SignedUpdate, UpdatePayload, payload_from_bytes

MAX_UPDATE_BYTES = 16 << 20


class UpdateVerifier:
    """Verifies updates against the cloud's Ed25519 public key (provisioned on the device).

    ``public_key`` is the raw 32-byte key, or a path to a file holding it (the service
    writes ``<signing key>.pub``).
    """

    def __init__(self, public_key: bytes | str | os.PathLike[str]) -> None:
        if not isinstance(public_key, bytes):
            public_key = Path(public_key).read_bytes()
        if len(public_key) != 32:
            raise ConfigError(f"an Ed25519 public key has 32 bytes, got {len(public_key)}")
        ed = require("cryptography.hazmat.primitives.asymmetric.ed25519", "device")
        self._key = ed.Ed25519PublicKey.from_public_bytes(public_key)  # type: ignore[attr-defined]
        from hashlib import sha256

        self.key_id = sha256(public_key).hexdigest()[:16]

    def verify(self, update: SignedUpdate) -> UpdatePayload:
        """The payload of ``update`` if its signature is valid, else :class:`UpdateRejected`."""
        exceptions = require("cryptography.exceptions", "device")
        if len(update.payload) > MAX_UPDATE_BYTES:
            raise UpdateRejected(f"payload of {len(update.payload)} bytes exceeds "
                                 f"{MAX_UPDATE_BYTES}")
        if update.key_id != self.key_id:
            raise UpdateRejected(f"signed by unknown key {str(update.key_id)[:40]!r} "
                                 f"(this device trusts {self.key_id})")
        try:
            self._key.verify(bytes(update.signature), bytes(update.payload))
        except (exceptions.InvalidSignature, TypeError, ValueError) as exc:  # type: ignore[attr-defined]
            raise UpdateRejected("bad signature: the update was tampered with or signed "
                                 "by another key") from exc
        try:
            return payload_from_bytes(update.payload)
        except Exception as exc:  # signed but undecodable (a buggy job): refused, not raised
            detail = str(exc) if isinstance(exc, InvalidInput) else repr(exc)
            rejected = UpdateRejected(f"malformed payload: {detail}")
            rejected.kind = "malformed"  # type: ignore[attr-defined]
            raise rejected from exc
