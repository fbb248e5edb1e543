"""The registry's SQLite file: the schema as it was at hand-versioned schema 7 (frozen:
every later change is an Alembic revision, ``edgecl/cloud/migrations``), the migrations of
files made before Alembic up to it, the checksum of a stored sample, and the checks that
refuse a damaged file instead of starting an empty registry over it."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from edgecl._exceptions import StorageError
from edgecl.bundle._files import fsync_dir
from edgecl.cloud._identity import DEFAULT_TOKEN_TTL_S, now_ms

SCHEMA_VERSION = 7
#: Tables every edgecl registry has had since schema 1.
TABLES = {"meta", "devices", "samples", "updates", "rejections", "reports"}
#: Columns a sample's checksum covers (everything learning reads), checksum last.
SUM_COLS = ("device_id, sample_id, seq, received_ms, input, features, segment, explored, "
             "device_label, teacher_label, teacher_uncertainty, checksum")
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL,
    encoder_sha256 TEXT NOT NULL,
    grp TEXT NOT NULL DEFAULT '',
    registered_ms BIGINT NOT NULL,
    labels_json TEXT NOT NULL DEFAULT '{}',
    token_expires_ms BIGINT,
    device_key BLOB,
    proof_counter BIGINT NOT NULL DEFAULT 0
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
    checksum TEXT,
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
CREATE TABLE IF NOT EXISTS quarantine (
    device_id TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    seq BIGINT,
    reason TEXT NOT NULL,
    quarantined_ms BIGINT NOT NULL,
    input BLOB,
    features BLOB
);
CREATE TABLE IF NOT EXISTS pins (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    operator TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS reports (
    device_id TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    state_version BIGINT NOT NULL,
    stats_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_by_device ON reports (device_id);
CREATE TABLE IF NOT EXISTS rollout_policies (
    target TEXT PRIMARY KEY,
    policy_json TEXT NOT NULL,
    operator TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS rollouts (
    target TEXT NOT NULL,
    version BIGINT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    policy_json TEXT NOT NULL DEFAULT '',
    wave INTEGER NOT NULL DEFAULT 0,
    wave_started_s REAL NOT NULL DEFAULT 0,
    approved_wave INTEGER NOT NULL DEFAULT 0,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (target, version)
);
CREATE INDEX IF NOT EXISTS rollouts_by_state ON rollouts (state);
CREATE TABLE IF NOT EXISTS rollout_devices (
    target TEXT NOT NULL,
    version BIGINT NOT NULL,
    device_id TEXT NOT NULL,
    wave INTEGER NOT NULL,
    started_s REAL NOT NULL,
    report_mark BIGINT NOT NULL,
    PRIMARY KEY (target, version, device_id)
);
CREATE INDEX IF NOT EXISTS rollout_devices_by_device ON rollout_devices (device_id);
CREATE TABLE IF NOT EXISTS update_events (
    device_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    report_id BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS update_events_by_device ON update_events (device_id, version);
CREATE TABLE IF NOT EXISTS desired_config (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    values_json TEXT NOT NULL,
    revision BIGINT NOT NULL,
    operator TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS reported_config (
    device_id TEXT PRIMARY KEY,
    revision BIGINT NOT NULL,
    values_json TEXT NOT NULL,
    received_ms BIGINT NOT NULL
);
"""


def migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a registry of an older schema ``version`` up to :data:`SCHEMA_VERSION`."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(samples)")}
    if version < 2 and "explored" not in columns:  # 2: the device drew it at random
        conn.execute("ALTER TABLE samples ADD COLUMN explored INTEGER NOT NULL DEFAULT 0")
    if version < 3:  # 3: samples.checksum (verified on read) and the quarantine table
        if "checksum" not in columns:
            conn.execute("ALTER TABLE samples ADD COLUMN checksum TEXT")
        _backfill_checksums(conn)
    if version < 4:  # 4: tokens expire (existing ones a default lifetime from now)
        if "token_expires_ms" not in {r[1] for r in conn.execute("PRAGMA table_info(devices)")}:
            conn.execute("ALTER TABLE devices ADD COLUMN token_expires_ms BIGINT")
        conn.execute("UPDATE devices SET token_expires_ms = ? WHERE token_expires_ms IS NULL",
                     (now_ms() + int(DEFAULT_TOKEN_TTL_S * 1000),))
    if version < 5:  # 5: devices' own public keys and registration counters
        have = {r[1] for r in conn.execute("PRAGMA table_info(devices)")}
        if "device_key" not in have:
            conn.execute("ALTER TABLE devices ADD COLUMN device_key BLOB")
        if "proof_counter" not in have:
            conn.execute("ALTER TABLE devices ADD COLUMN proof_counter BIGINT NOT NULL "
                         "DEFAULT 0")
    # 6: operators' pins (the pins table, created by the schema script: nothing to move)
    if version < 7:  # 7: rollouts; every version published before was released at once
        conn.execute("INSERT OR IGNORE INTO rollouts (target, version, state, updated_ms) "
                     "SELECT target, version, 'released', created_ms FROM updates")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))


def _backfill_checksums(conn: sqlite3.Connection, chunk: int = 512) -> None:
    """Checksum the samples stored before checksums existed (trusting them as they are)."""
    while rows := conn.execute(f"SELECT {SUM_COLS} FROM samples WHERE checksum IS NULL "
                               "LIMIT ?", (chunk,)).fetchall():
        conn.executemany("UPDATE samples SET checksum = ? WHERE device_id = ? AND "
                         "sample_id = ?", [(sample_digest(*r[:-1]), r[0], r[1]) for r in rows])


def sample_digest(device_id: str, sample_id: str, seq: int, received_ms: int, inp: bytes,
            features: bytes | None, segment: int, explored: int, device_label: int | None,
            teacher_label: int | None, uncertainty: float | None) -> str:
    """sha256 of a stored sample: its keys, tensors, flags and labels."""
    head = json.dumps([device_id, sample_id, seq, received_ms, segment, explored,
                       device_label, teacher_label, uncertainty,
                       -1 if features is None else len(features)]).encode()
    h = hashlib.sha256(len(head).to_bytes(4, "little") + head)
    h.update(inp)
    h.update(features or b"")
    return h.hexdigest()


def create_registry(path: Path, build: Callable[[Path], object]) -> None:
    """Create a new registry at ``path`` atomically (mode 0600): ``build`` makes its
    schema in a file beside it under a temporary name, which is then linked into place,
    so an existing ``path`` is always complete."""
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    try:
        build(tmp)
        conn = sqlite3.connect(tmp)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()
        try:
            os.link(tmp, path)
        except FileExistsError:  # created meanwhile by another process: use that one
            pass
        fsync_dir(path.parent)
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)


def refuse(path: Path, problem: str) -> StorageError:
    return StorageError(
        f"registry {path}: {problem}. Refusing to start, so as not to lose devices, tokens "
        f"and samples: restore the storage directory from a backup, or move {path.name} "
        f"(and its -wal and -shm files) away to start an empty registry (every device then "
        f"registers again)")


def check_file(path: Path) -> None:
    """:class:`StorageError` when an existing registry file is empty; tighten its mode."""
    if path.stat().st_size == 0:
        raise refuse(path, "the file is empty (0 bytes; truncated?)")
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if p.exists() and p.stat().st_mode & 0o077:
            os.chmod(p, 0o600)


def check_database(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version of an existing registry; :class:`StorageError` when the file is
    not a structurally sound edgecl registry (``PRAGMA quick_check``, tables, version)."""
    try:
        problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE "
                                              "type = 'table'")}
        row = (conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
               if "meta" in tables else None)
    except sqlite3.DatabaseError as exc:
        raise refuse(path, f"not a readable SQLite database ({exc})") from exc
    if problems != ["ok"]:
        raise refuse(path, f"the database is corrupt (quick_check: {'; '.join(problems)})")
    if row is None or not TABLES <= tables or not str(row[0]).isdigit():
        raise refuse(path, f"not an edgecl registry (tables {sorted(tables)})")
    version = int(row[0])
    if version > SCHEMA_VERSION:
        raise StorageError(f"{path} has schema {version}, newer than this edgecl "
                           f"({SCHEMA_VERSION}); upgrade edgecl")
    return version
