"""Dashboard logins: signed session cookies that name an operator and expire.

A cookie is ``<payload>.<mac>``: the payload (operator name, role, expiry, a random id)
in URL-safe base64, the mac its HMAC-SHA256 under a key kept in the service's storage
(0600), so logins survive a restart and nobody without the key can make one. Each request
also checks that the operator is still configured with that role, so removing a token
from ``[admin] operators`` ends its sessions. A logout revokes the cookie's id. Mutations
need a CSRF token derived from the id (sent in a header, which a cross-site form cannot).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from edgecl.cloud._errors import Unauthenticated

COOKIE = "edgecl_session"
MAX_COOKIE_CHARS = 1024


class Session(NamedTuple):
    """A verified login."""

    name: str
    role: str
    expires_s: float
    csrf: str
    session_id: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_key(path: Path) -> bytes:
    """The 32-byte session key at ``path``, made (mode 0600) when missing."""
    if path.exists():
        key = path.read_bytes()
        if len(key) == 32:
            return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return key


class SessionSigner:
    """Issues and verifies session cookies (``ttl_s`` long) under ``key``;
    ``role_of(name)`` is the operator's current role (None: no longer configured)."""

    def __init__(self, key: bytes, ttl_s: float, role_of: Callable[[str], str | None],
                 clock: Callable[[], float] = time.time) -> None:
        self._key, self.ttl_s, self.role_of, self.clock = key, float(ttl_s), role_of, clock
        self._revoked: dict[str, float] = {}  # session id -> its expiry
        self._lock = threading.Lock()

    def _mac(self, data: str) -> str:
        return _b64(hmac.new(self._key, data.encode(), hashlib.sha256).digest())

    def issue(self, name: str, role: str) -> tuple[str, Session]:
        """A new cookie value for operator ``name`` and its session."""
        session_id = secrets.token_urlsafe(16)
        expires = self.clock() + self.ttl_s
        payload = _b64(json.dumps({"n": name, "r": role, "e": expires, "i": session_id},
                                  separators=(",", ":")).encode())
        cookie = f"{payload}.{self._mac(payload)}"
        return cookie, Session(name, role, expires, self._mac("csrf:" + session_id),
                               session_id)

    def verify(self, cookie: str) -> Session:
        """The session of ``cookie``; :class:`Unauthenticated` when it is malformed,
        forged, expired, revoked or its operator is gone or changed role."""
        if not cookie or len(cookie) > MAX_COOKIE_CHARS or cookie.count(".") != 1:
            raise Unauthenticated("no valid session: log in")
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            raise Unauthenticated("no valid session: log in")
        try:
            data = json.loads(_unb64(payload))
            name, role, expires, session_id = (str(data["n"]), str(data["r"]),
                                               float(data["e"]), str(data["i"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise Unauthenticated("no valid session: log in") from exc
        if not self.clock() < expires:
            raise Unauthenticated("the session expired: log in again")
        with self._lock:
            if session_id in self._revoked:
                raise Unauthenticated("logged out: log in again")
        if self.role_of(name) != role:
            raise Unauthenticated("the operator's token was removed or its role changed")
        return Session(name, role, expires, self._mac("csrf:" + session_id), session_id)

    def revoke(self, session: Session) -> None:
        """End ``session`` (a logout) before it expires."""
        now = self.clock()
        with self._lock:
            self._revoked = {k: e for k, e in self._revoked.items() if e > now}
            self._revoked[session.session_id] = session.expires_s
