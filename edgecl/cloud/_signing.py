"""Ed25519 signing of updates (the cloud holds the private key, devices the public one),
and rotation of that key.

Rotation (:func:`rotate_signing_key`, ``edgecl keys rotate``) makes a new key current, keeps
the old private key as ``<key>.<key id>.retired`` (never used again) and appends to
``<key>.chain`` an endorsement: the new public key signed by the old key. The service
sends that chain with every update, so devices provisioned with an older key follow it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from edgecl._exceptions import ConfigError, require
from edgecl.bundle._files import atomic_write_bytes, write_private_key
from edgecl.wire import (
    KeyEndorsement,
    SignedUpdate,
    UpdatePayload,
    endorsement_message,
    payload_to_bytes,
)

#: Rotations the service keeps in its chain (a device more rotations behind needs the
#: current public key provisioned again).
MAX_CHAIN = 8


def key_id(public_key: bytes) -> str:
    """Short id of a raw 32-byte Ed25519 public key: first 16 hex chars of its sha256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


class UpdateSigner:
    """Signs serialized update payloads with an Ed25519 private key.

    Examples
    --------
    >>> signer = UpdateSigner.generate()
    >>> len(signer.public_key)
    32
    >>> signed = signer.sign_bytes(b"payload")
    >>> signed.key_id == key_id(signer.public_key)
    True
    """

    def __init__(self, private_key: object,
                 endorsements: tuple[KeyEndorsement, ...] = ()) -> None:
        self._key = private_key
        #: The rotation chain (oldest first) that ends at this key; sent with updates.
        self.endorsements = tuple(endorsements)
        serialization = require("cryptography.hazmat.primitives.serialization", "cloud")
        self.public_key: bytes = private_key.public_key().public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)  # type: ignore[attr-defined]
        self.key_id = key_id(self.public_key)

    @classmethod
    def generate(cls) -> UpdateSigner:
        """A signer with a fresh random key (tests, first start)."""
        ed = require("cryptography.hazmat.primitives.asymmetric.ed25519", "cloud")
        return cls(ed.Ed25519PrivateKey.generate())  # type: ignore[attr-defined]

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> UpdateSigner:
        """Load the PEM private key at ``path``; create it (mode 0600) when missing.

        The public key is written beside it as ``<path>.pub`` (raw 32 bytes) for devices.
        """
        serialization = require("cryptography.hazmat.primitives.serialization", "cloud")
        path = Path(path)
        if path.exists():
            try:
                key = serialization.load_pem_private_key(  # type: ignore[attr-defined]
                    path.read_bytes(), password=None)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"cannot read the signing key {path}: {exc}") from exc
            signer = cls(key, _read_chain(_chain_path(path)))
        else:
            signer = cls.generate()
            write_private_key(path, signer._key)
        atomic_write_bytes(path.with_name(path.name + ".pub"), signer.public_key)
        return signer

    def sign_bytes(self, payload: bytes) -> SignedUpdate:
        """Sign already serialized payload bytes."""
        return SignedUpdate(payload=payload, signature=self._key.sign(payload),  # type: ignore[attr-defined]
                            key_id=self.key_id, endorsements=self.endorsements)

    def endorse(self, public_key: bytes) -> KeyEndorsement:
        """This key's endorsement of its successor ``public_key``."""
        return KeyEndorsement(bytes(public_key), self.key_id,
                              self._key.sign(endorsement_message(public_key)))  # type: ignore[attr-defined]

    def for_sending(self, update: SignedUpdate) -> SignedUpdate:
        """``update`` as it goes to a device: signed by the current key (an update stored
        under an older key is signed again, same payload bytes) with the rotation chain."""
        if update.key_id != self.key_id:
            return self.sign_bytes(update.payload)
        if update.endorsements == self.endorsements:
            return update
        return dataclasses.replace(update, endorsements=self.endorsements)

    def sign(self, payload: UpdatePayload, *, fp16: bool = True,
             compress: bool = True) -> SignedUpdate:
        """Serialize (fp16 parts, zlib by default) and sign ``payload``."""
        return self.sign_bytes(payload_to_bytes(payload, fp16=fp16, compress=compress))


def _chain_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + ".chain")


def _read_chain(path: Path) -> tuple[KeyEndorsement, ...]:
    """The endorsements stored at ``path`` (none when it does not exist)."""
    if not path.exists():
        return ()
    try:
        rows = json.loads(path.read_text())
        return tuple(KeyEndorsement(bytes.fromhex(r["public_key"]), str(r["endorser_key_id"]),
                                    bytes.fromhex(r["signature"])) for r in rows)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read the signing key chain {path}: {exc}") from exc


def rotate_signing_key(path: str | os.PathLike[str]) -> tuple[str, str]:
    """Make a new signing key current at ``path``; returns (old key id, new key id).

    The old private key is kept as ``<path>.<old id>.retired`` (mode 0600), the new public
    key is endorsed by the old one in ``<path>.chain`` (the last :data:`MAX_CHAIN`
    rotations), and ``<path>.pub`` becomes the new public key. A running service picks the
    new key up at its next start.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"no signing key at {path} to rotate (the service creates one at "
                          f"its first start)")
    old = UpdateSigner.load_or_create(path)
    new = UpdateSigner.generate()
    chain = (*old.endorsements, old.endorse(new.public_key))[-MAX_CHAIN:]
    retired = path.with_name(f"{path.name}.{old.key_id}.retired")
    atomic_write_bytes(retired, path.read_bytes())
    os.chmod(retired, 0o600)
    atomic_write_bytes(_chain_path(path), json.dumps([
        {"public_key": e.public_key.hex(), "endorser_key_id": e.endorser_key_id,
         "signature": e.signature.hex()} for e in chain], indent=1).encode())
    write_private_key(path, new._key)  # the chain is written first: a crash leaves the old key
    atomic_write_bytes(path.with_name(path.name + ".pub"), new.public_key)
    return old.key_id, new.key_id
