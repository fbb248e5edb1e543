"""A device's own Ed25519 key: created at its first registration, kept private on the
device (mode 0600), and used to sign every later registration so no one else can take
the device id with the fleet's enrollment key alone."""

from __future__ import annotations

import os
import time
from pathlib import Path

from edgecl._exceptions import ConfigError, require
from edgecl.bundle._files import write_private_key
from edgecl.wire import RegistrationProof, registration_message


class DeviceKey:
    """The device's signing key; :meth:`prove` signs one registration.

    Examples
    --------
    >>> key = DeviceKey.generate()
    >>> proof = key.prove("cam-7", "ab" * 32, "", last_counter=0)
    >>> len(proof.public_key), len(proof.signature), proof.counter > 0
    (32, 64, True)
    """

    def __init__(self, private_key: object) -> None:
        serialization = require("cryptography.hazmat.primitives.serialization", "device")
        self._key = private_key
        self.public_key: bytes = private_key.public_key().public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)  # type: ignore[attr-defined]

    @classmethod
    def generate(cls) -> DeviceKey:
        """A fresh random key (kept in memory only)."""
        ed = require("cryptography.hazmat.primitives.asymmetric.ed25519", "device")
        return cls(ed.Ed25519PrivateKey.generate())  # type: ignore[attr-defined]

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> DeviceKey:
        """The PEM key at ``path``; created (mode 0600) when missing. An unreadable file is
        a :class:`ConfigError`, never replaced: the service knows only this key."""
        serialization = require("cryptography.hazmat.primitives.serialization", "device")
        path = Path(path)
        if path.exists():
            try:
                return cls(serialization.load_pem_private_key(  # type: ignore[attr-defined]
                    path.read_bytes(), password=None))
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"cannot read the device key {path}: {exc}; restore it, or "
                                  f"ask the operator to release the device id") from exc
        key = cls.generate()
        write_private_key(path, key._key)
        return key

    def prove(self, device_id: str, encoder_sha256: str, group: str, *,
              last_counter: int) -> RegistrationProof:
        """A signed proof for one registration, with a counter above ``last_counter`` (the
        wall clock in ms when it is ahead, so a device that lost its counter moves on)."""
        counter = max(int(last_counter) + 1, int(time.time() * 1000))
        message = registration_message(device_id, encoder_sha256, group, counter,
                                       self.public_key)
        return RegistrationProof(self.public_key, counter,
                                 self._key.sign(message))  # type: ignore[attr-defined]
