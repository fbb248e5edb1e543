"""Checking a signed update before anything of it is used: signature, key, payload.

Nothing of an update is decoded before its signature is verified: the payload bytes are
untrusted until then, and every failure is an :class:`UpdateRejected`.

A device trusts a small set of the service's signing keys (the ones it was provisioned
with). When the service rotates its key, every update it sends carries the rotation
chain: each new key endorsed by the key before it. The verifier follows that chain from a
key it trusts to the update's key, and from then on trusts the new key too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from hashlib import sha256
from pathlib import Path

from edgecl._exceptions import ConfigError, InvalidInput, UpdateRejected, require
from edgecl.wire import SignedUpdate, UpdatePayload, endorsement_message, payload_from_bytes

MAX_UPDATE_BYTES = 16 << 20
#: Most signing keys a device trusts at once: the provisioned ones are always kept; keys
#: learned from rotations beyond this bound are forgotten oldest first.
MAX_TRUSTED_KEYS = 8

KeySource = bytes | str | os.PathLike[str]


def _raw_key(source: KeySource) -> bytes:
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    if len(raw) != 32:
        raise ConfigError(f"an Ed25519 public key has 32 bytes, got {len(raw)}")
    return raw


def _key_id(raw: bytes) -> str:
    return sha256(raw).hexdigest()[:16]


class UpdateVerifier:
    """Verifies updates against the cloud's Ed25519 public key(s) provisioned on the device.

    ``public_key`` is a raw 32-byte key or a path to a file holding one (the service writes
    ``<signing key>.pub``), or a list of them (a device provisioned across a rotation).
    Keys endorsed by a trusted key (the service's rotations) become trusted as updates
    signed by them verify; :attr:`trusted_key_ids` lists the current set.
    """

    def __init__(self, public_key: KeySource | Iterable[KeySource]) -> None:
        sources = ([public_key] if isinstance(public_key, (bytes, str, os.PathLike))
                   else list(public_key))
        if not sources:
            raise ConfigError("UpdateVerifier needs at least one public key")
        self._ed = require("cryptography.hazmat.primitives.asymmetric.ed25519", "device")
        self._exceptions = require("cryptography.exceptions", "device")
        self._lock = threading.Lock()
        self._provisioned: dict[str, object] = {}
        for raw in map(_raw_key, sources):
            self._provisioned[_key_id(raw)] = self._load(raw)
        self._learned: dict[str, object] = {}  # insertion order = oldest first
        self.key_id = next(iter(self._provisioned))  # the first provisioned key

    def _load(self, raw: bytes) -> object:
        return self._ed.Ed25519PublicKey.from_public_bytes(raw)  # type: ignore[attr-defined]

    @property
    def trusted_key_ids(self) -> list[str]:
        """Ids of the keys trusted now: provisioned first, then learned from rotations."""
        with self._lock:
            return [*self._provisioned, *self._learned]

    def _trusted(self) -> dict[str, object]:
        with self._lock:
            return {**self._provisioned, **self._learned}

    def _valid(self, key: object, signature: bytes, message: bytes) -> bool:
        try:
            key.verify(bytes(signature), bytes(message))  # type: ignore[attr-defined]
            return True
        except (self._exceptions.InvalidSignature, TypeError, ValueError):  # type: ignore[attr-defined]
            return False

    def _follow_chain(self, update: SignedUpdate, trusted: dict[str, object]
                      ) -> dict[str, object]:
        """Keys the update's endorsements add to ``trusted`` (each endorsed by a key
        already trusted or added before it); invalid endorsements are skipped."""
        added: dict[str, object] = {}
        progress = True
        while progress and update.key_id not in trusted and update.key_id not in added:
            progress = False
            for e in update.endorsements:
                if len(e.public_key) != 32:
                    continue
                new_id = _key_id(e.public_key)
                endorser = added.get(e.endorser_key_id) or trusted.get(e.endorser_key_id)
                if new_id in trusted or new_id in added or endorser is None:
                    continue
                if self._valid(endorser, e.signature, endorsement_message(e.public_key)):
                    added[new_id] = self._load(e.public_key)
                    progress = True
        return added

    def _learn(self, keys: dict[str, object]) -> None:
        with self._lock:
            self._learned.update(keys)
            while self._learned and len(self._provisioned) + len(self._learned) > \
                    MAX_TRUSTED_KEYS:
                del self._learned[next(iter(self._learned))]

    def verify(self, update: SignedUpdate) -> UpdatePayload:
        """The payload of ``update`` if its signature is valid, else :class:`UpdateRejected`."""
        if len(update.payload) > MAX_UPDATE_BYTES:
            raise UpdateRejected(f"payload of {len(update.payload)} bytes exceeds "
                                 f"{MAX_UPDATE_BYTES}")
        trusted = self._trusted()
        added = {} if update.key_id in trusted else self._follow_chain(update, trusted)
        key = trusted.get(update.key_id) or added.get(update.key_id)
        if key is None:
            raise UpdateRejected(f"signed by unknown key {str(update.key_id)[:40]!r} "
                                 f"(this device trusts {', '.join(trusted)})")
        if not self._valid(key, update.signature, update.payload):
            raise UpdateRejected("bad signature: the update was tampered with or signed "
                                 "by another key")
        if added:  # trusted only once an update signed by the new key verified
            self._learn(added)
        try:
            return payload_from_bytes(update.payload)
        except Exception as exc:  # signed but undecodable (a buggy job): refused, not raised
            detail = str(exc) if isinstance(exc, InvalidInput) else repr(exc)
            rejected = UpdateRejected(f"malformed payload: {detail}")
            rejected.kind = "malformed"  # type: ignore[attr-defined]
            raise rejected from exc
