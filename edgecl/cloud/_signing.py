"""Ed25519 signing of updates (the cloud holds the private key, devices the public one)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from edgecl._exceptions import ConfigError, require
from edgecl.bundle._files import atomic_write_bytes
from edgecl.wire import SignedUpdate, UpdatePayload, payload_to_bytes


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

    def __init__(self, private_key: object) -> None:
        self._key = private_key
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
            signer = cls(key)
        else:
            signer = cls.generate()
            pem = signer._key.private_bytes(  # type: ignore[attr-defined]
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                serialization.NoEncryption())  # type: ignore[attr-defined]
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, pem)
            os.chmod(path, 0o600)
        atomic_write_bytes(path.with_name(path.name + ".pub"), signer.public_key)
        return signer

    def sign_bytes(self, payload: bytes) -> SignedUpdate:
        """Sign already serialized payload bytes."""
        return SignedUpdate(payload=payload, signature=self._key.sign(payload),  # type: ignore[attr-defined]
                            key_id=self.key_id)

    def sign(self, payload: UpdatePayload, *, fp16: bool = True,
             compress: bool = True) -> SignedUpdate:
        """Serialize (fp16 parts, zlib by default) and sign ``payload``."""
        return self.sign_bytes(payload_to_bytes(payload, fp16=fp16, compress=compress))
