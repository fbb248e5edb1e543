"""Artifact stores: content-addressed update payloads, ``put`` returns the sha256 key and
``get`` verifies it. Files under one directory (the embedded default), a table of the
registry's database when several service replicas share it, or an S3-compatible object
store (``[storage] artifacts = "s3://bucket/prefix"``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgecl._exceptions import StorageError
from edgecl.bundle._files import atomic_write_bytes

log = logging.getLogger("edgecl.cloud")


def private_dir(path: Path) -> None:
    """Make ``path`` (and missing parents) a directory only its owner can enter (0700);
    an existing one open to others is tightened (a warning where that is not allowed)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        try:
            os.chmod(path, 0o700)
        except OSError as exc:
            log.warning("storage directory is readable by others", extra={
                "path": str(path), "error": str(exc)})


class ArtifactStore:
    """Content-addressed files under ``root`` (atomic writes, verified reads)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        private_dir(self.root)

    def _path(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise StorageError(f"artifact key {key[:16]!r} is not a sha256")
        return self.root / key[:2] / key

    def put(self, data: bytes) -> str:
        """Store ``data`` (once per content); returns its sha256, the key."""
        key = hashlib.sha256(data).hexdigest()
        path = self._path(key)
        if not path.exists():
            path.parent.mkdir(mode=0o700, exist_ok=True)
            atomic_write_bytes(path, data)
        return key

    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``; :class:`StorageError` if missing or corrupt."""
        path = self._path(key)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StorageError(f"artifact {key[:12]} missing: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != key:
            raise StorageError(f"artifact {key[:12]} is corrupt")
        return data


def _check_key(key: str) -> str:
    if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
        raise StorageError(f"artifact key {key[:16]!r} is not a sha256")
    return key


class DatabaseArtifacts:
    """Content-addressed blobs in the registry database's ``artifacts`` table (what
    every replica sharing that database reads). ``connection`` gives this thread's
    registry connection."""

    def __init__(self, connection: Callable[[], Any]) -> None:
        self._connection = connection

    def put(self, data: bytes) -> str:
        """Store ``data`` (once per content); returns its sha256, the key."""
        from edgecl.cloud._database import DatabaseError
        from edgecl.cloud._identity import now_ms

        key = hashlib.sha256(data).hexdigest()
        conn = self._connection()
        try:
            conn.execute("INSERT INTO artifacts VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                         (key, bytes(data), now_ms()))
            conn.commit()
        except DatabaseError as exc:
            conn.rollback()
            raise StorageError(f"cannot store artifact {key[:12]}: {exc}") from exc
        return key

    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``; :class:`StorageError` if missing or corrupt."""
        from edgecl.cloud._database import DatabaseError

        try:
            row = self._connection().execute("SELECT data FROM artifacts WHERE key = ?",
                                              (_check_key(key),)).fetchone()
        except DatabaseError as exc:
            raise StorageError(f"artifact {key[:12]}: {exc}") from exc
        if row is None:
            raise StorageError(f"artifact {key[:12]} missing")
        data = bytes(row[0])
        if hashlib.sha256(data).hexdigest() != key:
            raise StorageError(f"artifact {key[:12]} is corrupt")
        return data


class S3Artifacts:
    """Content-addressed objects ``<prefix>/<sha256>`` in an S3-compatible bucket
    (boto3; credentials from the usual ``AWS_*`` environment or instance role;
    ``endpoint`` for a store other than AWS, e.g. MinIO or Ceph)."""

    def __init__(self, url: str, endpoint: str = "") -> None:
        from edgecl._exceptions import ConfigError

        if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
            raise ConfigError(f"storage.artifacts {url!r}: write s3://BUCKET[/PREFIX]")
        try:
            import boto3
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError("storage.artifacts is S3 but boto3 is not installed: pip "
                              "install 'edgecl[scale]'") from exc
        bucket, _, prefix = url[5:].partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self._s3 = boto3.client("s3", endpoint_url=endpoint or None)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{_check_key(key)}" if self.prefix else _check_key(key)

    def put(self, data: bytes) -> str:
        """Store ``data`` (once per content); returns its sha256, the key."""
        key = hashlib.sha256(data).hexdigest()
        try:
            self._s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=bytes(data))
        except Exception as exc:  # botocore raises many types (network, auth, bucket)
            raise StorageError(f"cannot store artifact {key[:12]} in s3://{self.bucket}: "
                               f"{exc}") from exc
        return key

    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``; :class:`StorageError` if missing or corrupt."""
        try:
            data = self._s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"artifact {key[:12]} missing from s3://{self.bucket}: "
                               f"{exc}") from exc
        if hashlib.sha256(data).hexdigest() != key:
            raise StorageError(f"artifact {key[:12]} is corrupt")
        return data
