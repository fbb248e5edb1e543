"""The service registry: devices, uploaded samples, teacher labels, updates, reports.

SQLite in WAL mode with ``synchronous=FULL``: an upload is acknowledged only after its
transaction committed, so an acknowledged sample survives a crash. The SQL is plain
(BIGINT, TEXT, BLOB, REAL, composite primary keys, ``ON CONFLICT DO NOTHING``), so the
schema ports to PostgreSQL as is. One connection per thread; writes are serialised.
Update payloads live in the :class:`ArtifactStore` (content-addressed files).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgecl._exceptions import InvalidInput, StorageError
from edgecl.cloud._artifacts import ArtifactStore
from edgecl.wire import SignedUpdate, UpdatePayload, WireSample

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL,
    encoder_sha256 TEXT NOT NULL,
    grp TEXT NOT NULL DEFAULT '',
    registered_ms BIGINT NOT NULL,
    labels_json TEXT NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX IF NOT EXISTS devices_token ON devices (token_sha256);
CREATE TABLE IF NOT EXISTS samples (
    device_id TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    input BLOB NOT NULL,
    features BLOB,
    priority REAL,
    device_label INTEGER,
    device_entropy REAL,
    ood_score REAL,
    state_version BIGINT,
    segment BIGINT NOT NULL DEFAULT 0,
    explored INTEGER NOT NULL DEFAULT 0,
    teacher_label INTEGER,
    teacher_uncertainty REAL,
    labelled_ms BIGINT,
    label_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, sample_id)
);
CREATE INDEX IF NOT EXISTS samples_unlabelled ON samples (labelled_ms, seq);
CREATE INDEX IF NOT EXISTS samples_by_device ON samples (device_id, seq);
CREATE TABLE IF NOT EXISTS updates (
    target TEXT NOT NULL,
    version BIGINT NOT NULL,
    base_version BIGINT NOT NULL,
    encoder_sha256 TEXT NOT NULL,
    artifact TEXT NOT NULL,
    signature BLOB NOT NULL,
    key_id TEXT NOT NULL,
    metrics_json TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (target, version)
);
CREATE TABLE IF NOT EXISTS rejections (
    target TEXT NOT NULL,
    version BIGINT NOT NULL,
    reason TEXT NOT NULL,
    metrics_json TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS reports (
    device_id TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    state_version BIGINT NOT NULL,
    stats_json TEXT NOT NULL
);
"""


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a registry of an older schema ``version`` up to :data:`SCHEMA_VERSION`."""
    if version < 2:  # 2: samples.explored (the device drew the sample at random)
        conn.execute("ALTER TABLE samples ADD COLUMN explored INTEGER NOT NULL DEFAULT 0")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))


def _now_ms() -> int:
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


class RecentUploads(NamedTuple):
    """A target's recent labelled uploads, oldest first (see
    :meth:`Registry.recent_inputs_of`)."""

    inputs: np.ndarray
    segment: int | None  # None: uploads of several devices (no one drift segment)
    explored: np.ndarray


@dataclass(frozen=True)
class StoredUpdate:
    """A published update as stored."""

    target: str
    version: int
    update: SignedUpdate


class Registry:
    """Devices, samples, labels, updates and reports in one SQLite database."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "registry.sqlite"
        self.artifacts = ArtifactStore(self.dir / "artifacts")
        self._local = threading.local()
        self._write = threading.Lock()
        self._changed = threading.Condition()
        conn = self._conn()
        with self._write:
            conn.executescript(SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise StorageError(f"{self.path} has schema {row[0]}, newer than this "
                                   f"edgecl ({SCHEMA_VERSION})")
            elif int(row[0]) < SCHEMA_VERSION:
                _migrate(conn, int(row[0]))
            conn.commit()
            self._seq = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM samples")
                            .fetchone()[0])

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.DatabaseError as exc:
                raise StorageError(f"cannot open registry {self.path}: {exc}") from exc
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Flush the WAL into the database file and close this thread's connection
        (other threads' connections close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            try:
                with self._write:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:  # readers still active: the WAL stays, nothing is lost
                pass
            conn.close()
            self._local.conn = None

    # -- devices -----------------------------------------------------------------------
    def register(self, device_id: str, token: str, encoder_sha256: str, group: str,
                 labels: dict[str, str]) -> None:
        """Create or re-enroll a device; the new token replaces the old one."""
        with self._write:
            conn = self._conn()
            conn.execute(
                "INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id) DO "
                "UPDATE SET token_sha256 = excluded.token_sha256, encoder_sha256 = "
                "excluded.encoder_sha256, grp = excluded.grp, labels_json = excluded.labels_json",
                (device_id, token_hash(token), encoder_sha256, group, _now_ms(),
                 json.dumps(labels, sort_keys=True)))
            conn.commit()

    def device_for_token(self, token: str) -> Device | None:
        """The device owning ``token``, or None."""
        row = self._conn().execute(
            "SELECT device_id, encoder_sha256, grp FROM devices WHERE token_sha256 = ?",
            (token_hash(token),)).fetchone()
        return None if row is None else Device(*row)

    def device(self, device_id: str) -> Device | None:
        """The registered device ``device_id``, or None."""
        row = self._conn().execute(
            "SELECT device_id, encoder_sha256, grp FROM devices WHERE device_id = ?",
            (device_id,)).fetchone()
        return None if row is None else Device(*row)

    def device_count(self) -> int:
        """Number of registered devices."""
        return int(self._conn().execute("SELECT COUNT(*) FROM devices").fetchone()[0])

    # -- samples -----------------------------------------------------------------------
    def add_samples(self, device_id: str, samples: list[WireSample]) -> tuple[int, int]:
        """Store new samples in one committed transaction; ``(new, duplicates)``."""
        now = _now_ms()
        new = 0
        with self._write:
            conn = self._conn()
            try:
                for s in samples:
                    self._seq += 1
                    assert s.input is not None
                    cur = conn.execute(
                        "INSERT INTO samples (device_id, sample_id, seq, received_ms, input, "
                        "features, priority, device_label, device_entropy, ood_score, "
                        "state_version, segment, explored) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (device_id, sample_id) DO NOTHING",
                        (device_id, s.sample_id, self._seq, now,
                         np.ascontiguousarray(s.input, np.float32).tobytes(),
                         None if s.features is None else
                         np.ascontiguousarray(s.features, np.float32).tobytes(),
                         s.priority, s.device_label, _finite(s.device_entropy),
                         _finite(s.ood_score), s.state_version, s.segment,
                         int(s.explored)))
                    new += cur.rowcount
                conn.commit()
            except sqlite3.Error as exc:
                conn.rollback()
                raise StorageError(f"cannot store samples: {exc}") from exc
        if new:
            with self._changed:
                self._changed.notify_all()
        return new, len(samples) - new

    def wait_unlabelled(self, timeout: float) -> None:
        """Sleep until samples are added (or ``timeout``)."""
        with self._changed:
            self._changed.wait(timeout)

    def unlabelled(self, limit: int, shape: tuple[int, ...]) -> tuple[list[tuple[str, str]],
                                                                         np.ndarray]:
        """Up to ``limit`` oldest unlabelled samples: their keys and inputs."""
        rows = self._conn().execute(
            "SELECT device_id, sample_id, input FROM samples WHERE labelled_ms IS NULL "
            "ORDER BY seq LIMIT ?", (limit,)).fetchall()
        keys = [(r[0], r[1]) for r in rows]
        x = np.frombuffer(bytearray(b"".join(r[2] for r in rows)), np.float32).reshape(
            len(rows), *shape)
        return keys, x

    def set_labels(self, keys: list[tuple[str, str]], labels: np.ndarray,
                   uncertainty: np.ndarray) -> dict[str, int]:
        """Record teacher labels for samples still unlabelled; newly labelled per device."""
        now = _now_ms()
        per_device: dict[str, int] = {}
        with self._write:
            conn = self._conn()
            for (dev, sid), label, unc in zip(keys, labels.tolist(), uncertainty.tolist()):
                cur = conn.execute(
                    "UPDATE samples SET teacher_label = ?, teacher_uncertainty = ?, "
                    "labelled_ms = ?, label_count = label_count + 1 WHERE device_id = ? "
                    "AND sample_id = ? AND labelled_ms IS NULL", (label, unc, now, dev, sid))
                if cur.rowcount:
                    per_device[dev] = per_device.get(dev, 0) + 1
            conn.commit()
        return per_device

    def unlabelled_count(self) -> int:
        """Samples waiting for a teacher label (uses the index)."""
        return int(self._conn().execute(
            "SELECT COUNT(*) FROM samples WHERE labelled_ms IS NULL").fetchone()[0])

    def sample_stats(self) -> dict[str, int]:
        """Totals: samples, labelled, unlabelled, and the most times one sample was labelled."""
        row = self._conn().execute(
            "SELECT COUNT(*), COUNT(labelled_ms), COALESCE(MAX(label_count), 0) "
            "FROM samples").fetchone()
        return {"samples": int(row[0]), "labelled": int(row[1]),
                "unlabelled": int(row[0]) - int(row[1]), "max_label_count": int(row[2])}

    def sample_count(self, device_id: str | None = None) -> int:
        """Stored samples of ``device_id`` (None: of every device)."""
        sql, args = "SELECT COUNT(*) FROM samples", ()
        if device_id is not None:
            sql, args = sql + " WHERE device_id = ?", (device_id,)
        return int(self._conn().execute(sql, args).fetchone()[0])

    def labelled_count(self, device_id: str | None = None) -> int:
        """Samples with a teacher label, of ``device_id`` (None: of every device)."""
        sql, args = "SELECT COUNT(*) FROM samples WHERE labelled_ms IS NOT NULL", ()
        if device_id is not None:
            sql, args = sql + " AND device_id = ?", (device_id,)
        return int(self._conn().execute(sql, args).fetchone()[0])

    def label_counts(self, device_id: str) -> dict[str, int]:
        """How many times the teacher labelled each stored sample of ``device_id`` (the
        service guarantees 1 once labelled, 0 before; a test checks it)."""
        rows = self._conn().execute("SELECT sample_id, label_count FROM samples WHERE "
                                    "device_id = ?", (device_id,)).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def teacher_labels(self, device_id: str) -> dict[str, tuple[int, float]]:
        """``sample_id -> (teacher label, uncertainty)`` of the labelled samples."""
        rows = self._conn().execute(
            "SELECT sample_id, teacher_label, teacher_uncertainty FROM samples WHERE "
            "device_id = ? AND labelled_ms IS NOT NULL", (device_id,)).fetchall()
        return {r[0]: (int(r[1]), float(r[2])) for r in rows}

    def sample_ids(self, device_id: str) -> set[str]:
        """Ids of every stored sample of ``device_id``."""
        rows = self._conn().execute("SELECT sample_id FROM samples WHERE device_id = ?",
                                    (device_id,)).fetchall()
        return {r[0] for r in rows}

    def recent_inputs_of(self, device_ids: list[str], limit: int, shape: tuple[int, ...],
                         *, latest_segment: bool = False) -> RecentUploads:
        """The newest ``limit`` labelled inputs of these devices, oldest first, their
        segment and which were explored; with ``latest_segment`` only those of the newest
        drift segment (of the newest upload's device)."""
        marks = ",".join("?" * len(device_ids))
        where = f"device_id IN ({marks}) AND labelled_ms IS NOT NULL"
        args: list[Any] = list(device_ids)
        segment = 0
        if latest_segment:
            row = self._conn().execute(f"SELECT device_id, segment FROM samples WHERE {where} "
                                       "ORDER BY seq DESC LIMIT 1", args).fetchone()
            if row is not None:
                segment = int(row[1])
                where += " AND device_id = ? AND segment = ?"
                args += [row[0], segment]
        rows = self._conn().execute(f"SELECT input, explored FROM samples WHERE {where} "
                                    "ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        if not rows:
            return RecentUploads(np.zeros((0, *shape), np.float32), segment, np.zeros(0, bool))
        rows = rows[::-1]
        data = bytearray(b"".join(r[0] for r in rows))
        return RecentUploads(np.frombuffer(data, np.float32).reshape(len(rows), *shape),
                             segment, np.array([bool(r[1]) for r in rows], bool))

    def devices_in(self, target: str, by_group: bool) -> list[str]:
        """Device ids whose uploads feed ``target``."""
        if not by_group:
            return [target]
        rows = self._conn().execute("SELECT device_id FROM devices WHERE grp = ?",
                                    (target,)).fetchall()
        return [r[0] for r in rows] or [target]

    # -- updates -----------------------------------------------------------------------
    def publish(self, target: str, update: SignedUpdate, payload: UpdatePayload) -> None:
        """Store a signed update for ``target`` and wake its subscribers.

        ``payload`` is the decoded ``update.payload``; its version must be newer than
        every version already published for ``target`` (:class:`InvalidInput` if not).
        """
        key = self.artifacts.put(update.payload)
        with self._write:
            conn = self._conn()
            latest = self.latest_version(target)
            if payload.version <= latest:
                raise InvalidInput(f"update v{payload.version} for {target!r} is not newer "
                                   f"than the published v{latest}")
            try:
                conn.execute("INSERT INTO updates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (target, payload.version, payload.base_version,
                              payload.encoder_sha256, key, update.signature, update.key_id,
                              json.dumps(payload.metrics, sort_keys=True), _now_ms()))
                conn.commit()
            except sqlite3.Error as exc:
                conn.rollback()
                raise StorageError(f"cannot store update v{payload.version}: {exc}") from exc
        with self._changed:
            self._changed.notify_all()

    def latest_version(self, target: str) -> int:
        """Newest published version for ``target`` (0 if none)."""
        row = self._conn().execute("SELECT COALESCE(MAX(version), 0) FROM updates WHERE "
                                   "target = ?", (target,)).fetchone()
        return int(row[0])

    def updates_after(self, target: str, version: int, limit: int = 16) -> list[StoredUpdate]:
        """Published updates of ``target`` newer than ``version``, oldest first."""
        rows = self._conn().execute(
            "SELECT version, artifact, signature, key_id FROM updates WHERE target = ? AND "
            "version > ? ORDER BY version LIMIT ?", (target, version, limit)).fetchall()
        return [StoredUpdate(target, int(v), SignedUpdate(self.artifacts.get(a), bytes(sig), k))
                for v, a, sig, k in rows]

    def wait_changed(self, timeout: float) -> None:
        """Sleep until something is published or uploaded (or ``timeout``)."""
        with self._changed:
            self._changed.wait(timeout)

    def record_rejection(self, target: str, version: int, reason: str,
                         metrics: dict[str, float]) -> None:
        """Remember a candidate that was not published."""
        with self._write:
            conn = self._conn()
            conn.execute("INSERT INTO rejections VALUES (?, ?, ?, ?, ?)",
                         (target, version, reason, json.dumps(metrics, sort_keys=True),
                          _now_ms()))
            conn.commit()

    def rejections(self, target: str | None = None) -> list[tuple[str, int, str]]:
        """Recorded rejections ``(target, version, reason)``."""
        sql = "SELECT target, version, reason FROM rejections"
        args: tuple[Any, ...] = ()
        if target is not None:
            sql, args = sql + " WHERE target = ?", (target,)
        return [(r[0], int(r[1]), r[2]) for r in self._conn().execute(sql, args).fetchall()]

    # -- reports -----------------------------------------------------------------------
    def add_report(self, device_id: str, state_version: int, stats: dict[str, float]) -> None:
        """Store one device report."""
        with self._write:
            conn = self._conn()
            conn.execute("INSERT INTO reports VALUES (?, ?, ?, ?)",
                         (device_id, _now_ms(), state_version, json.dumps(stats)))
            conn.commit()

    def last_report(self, device_id: str) -> dict[str, Any] | None:
        """The newest report of ``device_id``."""
        row = self._conn().execute(
            "SELECT state_version, stats_json FROM reports WHERE device_id = ? ORDER BY "
            "received_ms DESC LIMIT 1", (device_id,)).fetchone()
        return None if row is None else {"state_version": int(row[0]),
                                         "stats": json.loads(row[1])}


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
