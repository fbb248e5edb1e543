"""The service registry: devices, uploaded samples, teacher labels, updates, reports.

A SQLite file in WAL mode with ``synchronous=FULL`` (the embedded default: one process,
writes serialised by a lock) or a PostgreSQL database shared by several service replicas
(``storage.registry``; see :mod:`edgecl.cloud._database`). Either way an upload is
acknowledged only after its transaction committed, so an acknowledged sample survives a
crash. What replicas share lives in the database: sample numbers (a sequence), tokens,
claims on unlabelled samples (leases), one learning job per target (a lease), published
versions (unique per target) and wake-ups (``NOTIFY``). One connection per thread. Update
payloads live in an artifact store (files, or the database when it is shared).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgecl._exceptions import InvalidInput, StorageError
from edgecl.cloud._artifacts import (
    ArtifactStore,
    DatabaseArtifacts,
    S3Artifacts,
    private_dir,
)
from edgecl.cloud._database import Connection, Database, DatabaseError, parse_registry_url
from edgecl.cloud._errors import Overloaded, QuotaExceeded
from edgecl.cloud._identity import (
    DEFAULT_TOKEN_TTL_S,
    DEVICE_TARGET,
    RELEASED,
    REVOKED,
    Device,
    Identity,
    StoredCredentials,
    check_reregistration,
    now_ms,
    token_hash,
)
from edgecl.cloud._registry_file import (
    SCHEMA,
    SCHEMA_VERSION,
    SUM_COLS,
    check_database,
    check_file,
    create_registry,
    migrate,
    refuse,
    sample_digest,
)
from edgecl.cloud._registry_fleet import FleetQueries
from edgecl.cloud._registry_rollouts import RolloutStore
from edgecl.cloud._schema import head_revision, upgrade
from edgecl.wire import RegistrationProof, SignedUpdate, UpdatePayload, WireSample

log = logging.getLogger("edgecl.cloud")
#: Bounds on what a device may store as labels (Register) and statistics (Report).
MAX_ENTRIES, MAX_KEY_CHARS, MAX_VALUE_CHARS = 64, 64, 256


def _check_entries(what: str, entries: dict[str, Any]) -> None:
    """:class:`InvalidInput` when a device-supplied map is too large to store."""
    if len(entries) > MAX_ENTRIES:
        raise InvalidInput(f"{what}: at most {MAX_ENTRIES} entries")
    for key, value in entries.items():
        if not key or len(key) > MAX_KEY_CHARS or len(str(value)) > MAX_VALUE_CHARS:
            raise InvalidInput(f"{what}: keys need 1-{MAX_KEY_CHARS} characters, values "
                               f"at most {MAX_VALUE_CHARS}")


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _now_ms() -> int:
    return now_ms()


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


#: Reports (and update events) kept per device: a day of reports a minute apart.
KEEP_REPORTS = 1440
#: Placeholders of one stored sample in an INSERT.
_SAMPLE_ROW = "(" + ", ".join("?" * 14) + ")"
#: How long a labeller's claim on unlabelled samples lasts (then they are anyone's).
CLAIM_S = 120.0


class _NoLock:
    """Stands in for the write lock where the database serialises writers itself."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class Registry(FleetQueries, RolloutStore):
    """Devices, samples, labels, updates and reports in one database.

    ``directory`` is the service's storage directory; ``url`` the database
    (``storage.registry``: "" is ``registry.sqlite`` in ``directory``, else
    ``sqlite:///PATH`` or ``postgresql://...``). Its schema is brought up to date on open.
    Update payloads go to files in ``directory`` (SQLite) or the database (PostgreSQL), or
    to ``artifacts`` = ``s3://bucket/prefix`` (at ``artifacts_endpoint`` when not AWS).
    """

    def __init__(self, directory: str | Path, *, max_samples_per_device: int = 0,
                 url: str = "", artifacts: str = "", artifacts_endpoint: str = "") -> None:
        self.dir = Path(directory)
        #: Stored samples kept per device (0: no bound); see :meth:`add_samples`.
        self.max_samples_per_device = int(max_samples_per_device)
        self.pruned = 0  # labelled samples dropped for the per-device bound by this process
        private_dir(self.dir)
        self.where = parse_registry_url(url, self.dir)
        self.db = Database(self.where)
        #: Who this process is in leases (learning jobs, labelling claims).
        self.holder = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # stored samples per device, read lazily; kept only where this process is the
        # only writer (a shared database is counted when asked)
        self._counts: dict[str, int] | None = None if self.db.shared else {}
        # labellers' claims on unlabelled samples: rows of a shared database, else here
        self._claims: dict[tuple[str, str], float] | None = None if self.db.shared else {}
        self._claim_lock = threading.Lock()
        self._local = threading.local()
        self._write: Any = _NoLock() if self.db.shared else threading.Lock()
        self._changed = threading.Condition()
        #: Called (from any thread) when a publication, rollout step, pin or policy may
        #: have changed what a device may be served (wakes its update stream).
        self.on_served_change: list[Any] = []
        self.quarantined = 0  # samples found corrupt (and moved aside) by this process
        self._seq = 0
        if self.db.shared:
            self.path: Any = self.where.redacted()
            upgrade(self.where)
            self.artifacts: Any = DatabaseArtifacts(self._conn)
            self.db.listen(self._served_changed)
        else:
            self.path = self.where.path
            self.artifacts = ArtifactStore(self.dir / "artifacts")
            self._open_file()
        if artifacts:  # an S3-compatible store instead (any registry)
            self.artifacts = S3Artifacts(artifacts, artifacts_endpoint)

    def _open_file(self) -> None:
        """Create, check and migrate the SQLite file (a damaged one is refused)."""
        path = self.path
        if not os.path.lexists(path):  # only a missing file makes a new registry
            create_registry(path, lambda tmp: upgrade(parse_registry_url(
                f"sqlite:///{tmp}", self.dir)))
        else:
            check_file(path)
        raw = self._conn().raw
        with self._write:
            version = check_database(raw, path)
            tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE "
                                                 "type = 'table'")}
            legacy = "alembic_version" not in tables
            revision = None if legacy else raw.execute(
                "SELECT version_num FROM alembic_version").fetchone()
            if legacy and version < SCHEMA_VERSION:  # made before Alembic: to schema 7
                raw.executescript(SCHEMA)  # new tables and indexes (IF NOT EXISTS)
                migrate(raw, version)
                raw.commit()
        if legacy or revision is None or revision[0] != head_revision():
            upgrade(self.where, stamp_legacy=legacy)
        self._seq = int(self._rows("SELECT COALESCE(MAX(seq), 0) FROM samples")[0][0])
        # this process is the file's only user: leases a crashed run left are void
        if self._rows("SELECT EXISTS (SELECT 1 FROM learning_leases) OR EXISTS (SELECT 1 "
                      "FROM samples WHERE claim_until_ms IS NOT NULL AND labelled_ms IS "
                      "NULL)")[0][0]:
            self._transaction([("DELETE FROM learning_leases", ()),
                               ("UPDATE samples SET claim_until_ms = NULL WHERE "
                                "claim_until_ms IS NOT NULL AND labelled_ms IS NULL", ())],
                              served=False)

    def _wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _served_changed(self) -> None:
        """What devices may be served changed (here or, PostgreSQL, in another replica):
        call :attr:`on_served_change`."""
        for listener in list(self.on_served_change):
            listener()

    def _conn(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.usable:  # the database went away: reconnect
            conn.close()
            conn = None
        if conn is None:
            try:
                conn = self.db.connect()
            except DatabaseError as exc:
                if exc.corrupt:
                    raise refuse(self.path, str(exc)) from exc
                raise StorageError(f"registry {self.path}: {exc}") from exc
            self._local.conn = conn
        return conn

    def _rows(self, sql: str, args: Any = ()) -> list[Any]:
        """All rows of a read; a damaged database file is a :class:`StorageError`."""
        try:
            return self._conn().execute(sql, args).fetchall()
        except DatabaseError as exc:
            raise StorageError(f"registry {self.path}: read failed: {exc}") from exc

    def _execute(self, sql: str, args: Any) -> None:
        """One committed write; wakes update streams (a pin may have moved)."""
        self._transaction([(sql, args)])

    def _transaction(self, statements: list[tuple[str, Any]], *,
                     guarded: bool = False, read: str = "", served: bool = True) -> Any:
        """Several writes committed together; wakes update streams (``served``: the
        writes may change what devices are served). ``guarded``: the first statement must
        change a row, else nothing is written (False). ``read``: a query whose first
        value, read inside the transaction, is returned (else True)."""
        with self._write:
            conn = self._conn()
            try:
                for i, (sql, args) in enumerate(statements):
                    if conn.execute(sql, args).rowcount == 0 and guarded and i == 0:
                        conn.rollback()
                        return False
                value = conn.execute(read).fetchone()[0] if read else True
                if served:
                    self.db.announce(conn)
                conn.commit()
            except DatabaseError as exc:
                conn.rollback()
                raise StorageError(f"registry {self.path}: write failed: {exc}") from exc
        self._wake()
        if served:
            self._served_changed()
        return value

    def _verified(self, rows: list[Any]) -> tuple[list[Any], int]:
        """The rows (selected with :data:`SUM_COLS` first) whose checksum matches, and
        how many did not: those are logged, counted and moved to the quarantine table."""
        good, bad = [], []
        for r in rows:
            (good if r[11] == sample_digest(*r[:11]) else bad).append(r)
        for r in bad:
            self._quarantine(r[0], r[1], "checksum mismatch")
        return good, len(bad)

    def _quarantine(self, device_id: str, sample_id: str, reason: str) -> None:
        err = StorageError(f"registry {self.path}: sample {device_id}/{sample_id}: {reason}")
        log.error("quarantined a corrupt sample", extra={"device": device_id,
                                                          "sample": sample_id,
                                                          "error": str(err)})
        with self._write:
            conn = self._conn()
            conn.execute("INSERT INTO quarantine SELECT device_id, sample_id, seq, ?, ?, "
                         "input, features FROM samples WHERE device_id = ? AND sample_id = ?",
                         (reason, _now_ms(), device_id, sample_id))
            conn.execute("DELETE FROM samples WHERE device_id = ? AND sample_id = ?",
                         (device_id, sample_id))
            conn.commit()
            if self._counts is not None:
                self._counts.pop(device_id, None)  # counted again when next asked
        self.quarantined += 1

    def quarantine(self) -> list[tuple[str, str, str]]:
        """Samples moved aside as corrupt: ``(device_id, sample_id, reason)``."""
        return [(r[0], r[1], r[2]) for r in
                self._rows("SELECT device_id, sample_id, reason FROM quarantine")]

    def close(self) -> None:
        """Flush the WAL into the database file (SQLite), stop listening for other
        replicas' changes (PostgreSQL) and close this thread's connection (other
        threads' connections close when their threads end)."""
        self.db.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            if not self.db.shared:
                try:
                    with self._write:
                        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except DatabaseError:  # readers still active: the WAL stays, nothing lost
                    pass
            conn.close()
            self._local.conn = None

    # -- devices -----------------------------------------------------------------------
    def register(self, device_id: str, token: str, encoder_sha256: str, group: str,
                 labels: dict[str, str], *, proof: str | None = None,
                 device_proof: RegistrationProof | None = None,
                 ttl_s: float = DEFAULT_TOKEN_TTL_S) -> None:
        """Create or re-enroll a device; the new token (valid ``ttl_s``) replaces the old.

        With ``proof`` (the service passes the bearer token the caller presented, "" for
        none), an existing device re-enrolls only as
        :func:`~edgecl.cloud._identity.check_reregistration` allows: signed by its own key
        (``device_proof``, already verified) when it registered with one, else with its
        current token, or after an operator's :meth:`release_device`; else
        :class:`PermissionDenied` and nothing changes. ``device_proof``'s key and counter
        are stored. ``proof=None`` (operator use) skips the check.
        """
        _check_entries("labels", labels)
        expires = _now_ms() + int(ttl_s * 1000)
        key = None if device_proof is None else bytes(device_proof.public_key)
        counter = 0 if device_proof is None else int(device_proof.counter)
        with self._write:
            conn = self._conn()
            if proof is not None:
                row = conn.execute("SELECT token_sha256, device_key, proof_counter FROM "
                                   "devices WHERE device_id = ?", (device_id,)).fetchone()
                stored = None if row is None else StoredCredentials(
                    row[0], None if row[1] is None else bytes(row[1]), int(row[2] or 0))
                check_reregistration(device_id, stored, token=proof, proof=device_proof)
            conn.execute(
                "INSERT INTO devices (device_id, token_sha256, encoder_sha256, grp, "
                "registered_ms, labels_json, token_expires_ms, device_key, proof_counter) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (device_id) DO UPDATE SET token_sha256 = excluded.token_sha256, "
                "encoder_sha256 = excluded.encoder_sha256, grp = excluded.grp, labels_json = "
                "excluded.labels_json, token_expires_ms = excluded.token_expires_ms, "
                "device_key = excluded.device_key, proof_counter = excluded.proof_counter",
                (device_id, token_hash(token), encoder_sha256, group, _now_ms(),
                 json.dumps(labels, sort_keys=True), expires, key, counter))
            conn.commit()

    def device_key(self, device_id: str) -> bytes | None:
        """The public key ``device_id`` registered with, or None."""
        rows = self._rows("SELECT device_key FROM devices WHERE device_id = ?", (device_id,))
        return None if not rows or rows[0][0] is None else bytes(rows[0][0])

    def identify(self, token: str) -> Identity | None:
        """The device owning ``token`` and when the token expires, or None."""
        rows = self._rows(
            "SELECT device_id, encoder_sha256, grp, token_expires_ms FROM devices WHERE "
            "token_sha256 = ?", (token_hash(token),))
        if not rows:
            return None
        expires = rows[0][3]
        return Identity(Device(*rows[0][:3]), None if expires is None else int(expires))

    def device_for_token(self, token: str) -> Device | None:
        """The device owning ``token`` while the token has not expired, or None."""
        found = self.identify(token)
        return None if found is None or found.expired() else found.device

    def revoke_device(self, device_id: str) -> bool:
        """Operator revocation: the device's token stops working at once, and the id cannot
        register again (not even with its token) until :meth:`release_device`. False when
        no such device."""
        return self._set_token_marker(device_id, REVOKED)

    def release_device(self, device_id: str) -> bool:
        """Operator release: the next registration of ``device_id`` with the enrollment key
        alone is accepted (a device that lost its token; a replaced device). Its current
        token stops working. False when no such device."""
        return self._set_token_marker(device_id, RELEASED)

    def _set_token_marker(self, device_id: str, marker: str) -> bool:
        with self._write:
            conn = self._conn()
            cur = conn.execute("UPDATE devices SET token_sha256 = ? WHERE device_id = ?",
                               (marker + device_id, device_id))
            changed = cur.rowcount
            conn.commit()
        log.warning("operator changed a device's identity", extra={
            "device": device_id, "action": marker.rstrip(":")})
        return changed > 0

    def device(self, device_id: str) -> Device | None:
        """The registered device ``device_id``, or None."""
        rows = self._rows(
            "SELECT device_id, encoder_sha256, grp FROM devices WHERE device_id = ?",
            (device_id,))
        return Device(*rows[0]) if rows else None

    def device_count(self) -> int:
        """Number of registered devices."""
        return int(self._conn().execute("SELECT COUNT(*) FROM devices").fetchone()[0])

    # -- samples -----------------------------------------------------------------------
    def add_samples(self, device_id: str, samples: list[WireSample]) -> tuple[int, int]:
        """Store new samples in one committed transaction; ``(new, duplicates)``.

        :class:`InvalidInput` (and nothing stored) when a sample has no input or holds NaN
        or inf in its input, features or priority. Each row carries a checksum. With
        :attr:`max_samples_per_device`, the device's oldest *labelled* samples beyond that
        bound are deleted in the same transaction (learning reads only recent uploads);
        when its unlabelled samples alone would pass it, :class:`QuotaExceeded` and nothing
        is stored.
        """
        rows = [_sample_row(s) for s in samples]  # validates all before storing any
        now = _now_ms()
        new = pruned = 0
        with self._write:
            conn = self._conn()
            try:
                seqs = self.db.next_seqs(conn, len(samples))
                values: list[Any] = []
                for i, (s, (inp, feats)) in enumerate(zip(samples, rows)):
                    if seqs is None:
                        self._seq += 1
                    seq = self._seq if seqs is None else seqs[i]
                    checksum = sample_digest(device_id, s.sample_id, seq, now, inp, feats,
                                       s.segment, int(s.explored), s.device_label, None, None)
                    values += (device_id, s.sample_id, seq, now, inp, feats, s.priority,
                               s.device_label, _finite(s.device_entropy),
                               _finite(s.ood_score), s.state_version, s.segment,
                               int(s.explored), checksum)
                if samples:  # one statement for the batch (one round trip on PostgreSQL)
                    new = len(conn.execute(
                        "INSERT INTO samples (device_id, sample_id, seq, received_ms, input, "
                        "features, priority, device_label, device_entropy, ood_score, "
                        "state_version, segment, explored, checksum) VALUES "
                        + ", ".join([_SAMPLE_ROW] * len(samples))
                        + " ON CONFLICT (device_id, sample_id) DO NOTHING RETURNING seq",
                        values).fetchall())
                if new and self.max_samples_per_device:
                    pruned = self._prune(conn, device_id, new)
                conn.commit()
            except (DatabaseError, Overloaded) as exc:
                conn.rollback()
                if isinstance(exc, Overloaded):
                    raise
                raise StorageError(f"cannot store samples: {exc}") from exc
            if self._counts is not None and device_id in self._counts:
                self._counts[device_id] += new - pruned
            self.pruned += pruned
        if pruned:
            log.info("per-device storage bound: oldest labelled samples deleted", extra={
                "device": device_id, "deleted": pruned, "bound": self.max_samples_per_device})
        if new:
            self._wake()
        return new, len(samples) - new

    def _prune(self, conn: Connection, device_id: str, new: int) -> int:
        """Delete ``device_id``'s oldest labelled samples past the bound (``new`` just
        inserted, not committed); :class:`QuotaExceeded` when that is not enough."""
        if self._counts is not None and device_id in self._counts:
            total = self._counts[device_id] + new
        else:  # counted inside this transaction: includes the rows just inserted
            total = int(conn.execute("SELECT COUNT(*) FROM samples WHERE device_id = ?",
                                     (device_id,)).fetchone()[0])
            if self._counts is not None:
                self._counts[device_id] = total - new
        excess = total - self.max_samples_per_device
        if excess <= 0:
            return 0
        gone = conn.execute(
            "DELETE FROM samples WHERE device_id = ? AND seq IN (SELECT seq FROM samples "
            "WHERE device_id = ? AND labelled_ms IS NOT NULL ORDER BY seq LIMIT ?)",
            (device_id, device_id, excess)).rowcount
        if gone < excess:
            raise QuotaExceeded(f"device {device_id} has {self.max_samples_per_device} stored "
                             f"samples waiting for labels (limits.max_samples_per_device); "
                             f"retry later")
        return gone

    def wait_unlabelled(self, timeout: float) -> None:
        """Sleep until samples are added (or ``timeout``)."""
        with self._changed:
            self._changed.wait(timeout)

    def unlabelled(self, limit: int, shape: tuple[int, ...], *, claim_s: float = CLAIM_S
                   ) -> tuple[list[tuple[str, str]], np.ndarray]:
        """Claim up to ``limit`` oldest unlabelled samples no one else holds a claim on,
        whose checksum holds: keys and inputs (corrupt ones are quarantined on the way).
        The claim lasts ``claim_s``: other labellers (replicas) skip these samples until
        it ends or :meth:`release` gives them back, so a labeller that dies holding them
        delays them only that long."""
        while True:
            rows, bad = self._verified(self._claim(limit, claim_s))
            if rows or not bad:
                break
        keys = [(r[0], r[1]) for r in rows]
        x = np.frombuffer(bytearray(b"".join(r[4] for r in rows)), np.float32).reshape(
            len(rows), *shape)
        return keys, x

    def _claim(self, limit: int, claim_s: float) -> list[Any]:
        if self._claims is not None:  # this process is the only labeller: claims in memory
            with self._claim_lock:
                now_s = time.monotonic()
                for key in [k for k, until in self._claims.items() if until < now_s]:
                    del self._claims[key]
                rows = [r for r in self._rows(
                    f"SELECT {SUM_COLS} FROM samples WHERE labelled_ms IS NULL ORDER BY seq "
                    f"LIMIT ?", (limit + len(self._claims),))
                    if (r[0], r[1]) not in self._claims][:limit]
                self._claims.update({(r[0], r[1]): now_s + claim_s for r in rows})
            return rows
        now = _now_ms()
        with self._write:
            conn = self._conn()
            try:
                rows = conn.execute(
                    f"SELECT {SUM_COLS} FROM samples WHERE labelled_ms IS NULL AND "
                    f"(claim_until_ms IS NULL OR claim_until_ms < ?) ORDER BY seq LIMIT ?"
                    f"{self.db.skip_locked}", (now, limit)).fetchall()
                conn.executemany("UPDATE samples SET claim_until_ms = ? WHERE device_id = ? "
                                 "AND sample_id = ?",
                                 [(now + int(claim_s * 1000), r[0], r[1]) for r in rows])
                conn.commit()
            except DatabaseError as exc:
                conn.rollback()
                raise StorageError(f"registry {self.path}: cannot claim samples: "
                                   f"{exc}") from exc
        return rows

    def release(self, keys: list[tuple[str, str]]) -> None:
        """End this labeller's claim on ``keys`` (labelling them failed)."""
        if self._claims is not None:
            with self._claim_lock:
                for key in keys:
                    self._claims.pop(tuple(key), None)  # type: ignore[arg-type]
            return
        self._transaction([("UPDATE samples SET claim_until_ms = NULL WHERE device_id = ? "
                            "AND sample_id = ? AND labelled_ms IS NULL", k) for k in keys],
                          served=False)

    def set_labels(self, keys: list[tuple[str, str]], labels: np.ndarray,
                   uncertainty: np.ndarray) -> dict[str, int]:
        """Record teacher labels for samples still unlabelled; newly labelled per device.
        A sample whose checksum no longer holds is quarantined instead."""
        now = _now_ms()
        per_device: dict[str, int] = {}
        corrupt: list[tuple[str, str]] = []
        stored: dict[tuple[str, str], Any] = {}
        with self._write:
            conn = self._conn()
            for i in range(0, len(keys), 256):  # read the batch in a few statements
                chunk = keys[i:i + 256]
                marks = ", ".join(["(?, ?)"] * len(chunk))
                for row in conn.execute(f"SELECT {SUM_COLS} FROM samples WHERE (device_id, "
                                        f"sample_id) IN (VALUES {marks}) AND labelled_ms IS "
                                        f"NULL", [v for k in chunk for v in k]).fetchall():
                    stored[(row[0], row[1])] = row
            updates = []
            for key, label, unc in zip(keys, labels.tolist(), uncertainty.tolist()):
                row = stored.pop(tuple(key), None)
                if row is None:
                    continue
                if row[11] != sample_digest(*row[:11]):
                    corrupt.append(key)
                    continue
                label, unc = int(label), _finite_or_none(unc)
                updates.append((label, unc, now, sample_digest(*row[:9], label, unc), *key))
                per_device[key[0]] = per_device.get(key[0], 0) + 1
            # only rows still unlabelled: a concurrent labeller (replica) that got there
            # first wins, and this one changes nothing (exactly once)
            conn.executemany(
                "UPDATE samples SET teacher_label = ?, teacher_uncertainty = ?, labelled_ms = "
                "?, label_count = label_count + 1, checksum = ?, claim_until_ms = NULL WHERE "
                "device_id = ? AND sample_id = ? AND labelled_ms IS NULL", updates)
            conn.commit()
        if self._claims is not None:
            with self._claim_lock:
                for key in keys:
                    self._claims.pop(tuple(key), None)  # type: ignore[arg-type]
        for dev, sid in corrupt:
            self._quarantine(dev, sid, "checksum mismatch")
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
        """Stored samples of ``device_id`` (None: of every device). A device's count is
        counted once, then kept with its uploads and deletions (a fleet view asks for
        every device's on each refresh; counting 100,000 samples takes about 6 ms)."""
        if device_id is None or self._counts is None:
            sql, args = "SELECT COUNT(*) FROM samples", ()
            if device_id is not None:
                sql, args = sql + " WHERE device_id = ?", (device_id,)
            return int(self._rows(sql, args)[0][0])
        with self._write:  # no upload of this device commits between count and store
            if device_id not in self._counts:
                self._counts[device_id] = int(self._conn().execute(
                    "SELECT COUNT(*) FROM samples WHERE device_id = ?", (device_id,)
                ).fetchone()[0])
            return self._counts[device_id]

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
        while True:
            rows, bad = self._verified(self._rows(
                f"SELECT {SUM_COLS} FROM samples WHERE {where} ORDER BY seq DESC LIMIT ?",
                (*args, limit)))
            if not bad:
                break
        if not rows:
            return RecentUploads(np.zeros((0, *shape), np.float32), segment, np.zeros(0, bool))
        rows = rows[::-1]
        data = bytearray(b"".join(r[4] for r in rows))
        return RecentUploads(np.frombuffer(data, np.float32).reshape(len(rows), *shape),
                             segment, np.array([bool(r[7]) for r in rows], bool))

    def newest_segment(self, device_id: str) -> int | None:
        """The drift segment of the device's newest labelled upload (None: none yet)."""
        row = self._conn().execute(
            "SELECT segment FROM samples WHERE device_id = ? AND labelled_ms IS NOT NULL "
            "ORDER BY seq DESC LIMIT 1", (device_id,)).fetchone()
        return None if row is None else int(row[0])

    def devices_in(self, target: str, by_group: bool) -> list[str]:
        """Device ids whose uploads feed ``target``."""
        if not by_group:
            return [target]
        if target.startswith(DEVICE_TARGET):  # a device without a group
            return [target[len(DEVICE_TARGET):]]
        rows = self._conn().execute("SELECT device_id FROM devices WHERE grp = ?",
                                    (target,)).fetchall()
        return [r[0] for r in rows]

    # -- updates -----------------------------------------------------------------------
    def publish(self, target: str, update: SignedUpdate, payload: UpdatePayload, *,
                release: bool = False, reason: str = "") -> None:
        """Store a signed update for ``target`` and wake its subscribers.

        ``payload`` is the decoded ``update.payload``; its version must be newer than
        every version already published for ``target`` (:class:`InvalidInput` if not).
        Its rollout starts as the target's rollout policy says; ``release``: every device
        may be served it at once (a rollback; ``reason`` says why).
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
                self._start_rollout(conn, target, payload.version, release, reason)
                self.db.announce(conn)
                conn.commit()
            except DatabaseError as exc:
                conn.rollback()
                if exc.integrity:  # another replica published this version meanwhile
                    raise InvalidInput(f"update v{payload.version} for {target!r} was "
                                       f"published meanwhile") from exc
                raise StorageError(f"cannot store update v{payload.version}: {exc}") from exc
        self._wake()
        self._served_changed()

    def latest_version(self, target: str) -> int:
        """Newest published version for ``target`` (0 if none)."""
        rows = self._rows("SELECT COALESCE(MAX(version), 0) FROM updates WHERE target = ?",
                          (target,))
        return int(rows[0][0])

    def updates_after(self, target: str, version: int, limit: int = 16, *,
                      device_id: str | None = None, cap: int | None = None,
                      newest_first: bool = False) -> list[StoredUpdate]:
        """Published updates of ``target`` newer than ``version``, oldest first
        (:class:`InvalidInput` for a negative ``version``). With ``device_id``: only those
        the device may be served (released, or a rollout admitted it) up to ``cap``."""
        if version < 0:
            raise InvalidInput(f"version must be >= 0, got {version}")
        sql = ("SELECT u.version, u.artifact, u.signature, u.key_id FROM updates u WHERE "
               "u.target = ? AND u.version > ? ")
        args: list[Any] = [target, version]
        if device_id is not None:
            sql += ("AND u.version <= ? AND (EXISTS (SELECT 1 FROM rollouts r WHERE "
                    "r.target = u.target AND r.version = u.version AND r.state = 'released') "
                    "OR EXISTS (SELECT 1 FROM rollout_devices d WHERE d.target = u.target AND "
                    "d.version = u.version AND d.device_id = ?)) ")
            args += [cap if cap is not None else 2**62, device_id]
        order = "DESC" if newest_first else "ASC"
        rows = self._rows(sql + f"ORDER BY u.version {order} LIMIT ?", (*args, limit))
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

    # -- learning jobs -----------------------------------------------------------------
    def claim_learning(self, target: str, lease_s: float = 300.0) -> bool:
        """Take the lease on ``target``'s learning (one job per target over every
        replica) for ``lease_s``, and log the job's start; False while another holder's
        lease runs (a holder that died loses it when it ends)."""
        now = _now_ms()
        return bool(self._transaction([
            ("INSERT INTO learning_leases VALUES (?, ?, ?, ?) ON CONFLICT (target) DO UPDATE "
             "SET holder = excluded.holder, expires_ms = excluded.expires_ms, started_ms = "
             "excluded.started_ms WHERE learning_leases.expires_ms < ?",
             (target, self.holder, now + int(lease_s * 1000), now, now)),
            ("INSERT INTO learning_runs VALUES (?, ?, ?, NULL, '')",
             (target, self.holder, now))], guarded=True, served=False))

    def renew_learning(self, target: str, lease_s: float = 300.0) -> bool:
        """Extend this holder's lease on ``target`` (False: it has lost it)."""
        return bool(self._transaction([
            ("UPDATE learning_leases SET expires_ms = ? WHERE target = ? AND holder = ?",
             (_now_ms() + int(lease_s * 1000), target, self.holder))], guarded=True,
            served=False))

    def end_learning(self, target: str, outcome: str) -> None:
        """End this holder's learning job on ``target``: log its ``outcome``, free the
        lease."""
        self._transaction([
            ("UPDATE learning_runs SET ended_ms = ?, outcome = ? WHERE target = ? AND "
             "holder = ? AND ended_ms IS NULL", (_now_ms(), outcome[:200], target,
                                                 self.holder)),
            ("DELETE FROM learning_leases WHERE target = ? AND holder = ?",
             (target, self.holder))], served=False)

    def learning_runs(self, target: str | None = None) -> list[tuple[str, str, int, int | None,
                                                                     str]]:
        """Logged learning jobs ``(target, holder, started_ms, ended_ms, outcome)``."""
        sql, args = ("SELECT target, holder, started_ms, ended_ms, outcome FROM "
                     "learning_runs"), ()
        if target is not None:
            sql, args = sql + " WHERE target = ?", (target,)
        return [(r[0], r[1], int(r[2]), None if r[3] is None else int(r[3]), r[4])
                for r in self._rows(sql + " ORDER BY started_ms", args)]

    # -- reports -----------------------------------------------------------------------
    def add_report(self, device_id: str, state_version: int, stats: dict[str, float],
                   events: Sequence[tuple[int, str, str, int]] = (),
                   config: tuple[int, dict[str, str]] | None = None) -> None:
        """Store one device report: its ``stats``, update ``events`` ``(version, action,
        reason, time_ms)`` and the desired ``config`` ``(revision, values)`` it applied
        (:class:`InvalidInput` when ``stats`` is too large). A device's newest
        :data:`KEEP_REPORTS` reports and update events are kept."""
        _check_entries("stats", stats)
        with self._write:
            conn = self._conn()
            try:
                report_id = int(conn.execute(
                    "INSERT INTO reports VALUES (?, ?, ?, ?) RETURNING rowid",
                    (device_id, _now_ms(), state_version, json.dumps(stats))).fetchone()[0])
                conn.executemany("INSERT INTO update_events VALUES (?, ?, ?, ?, ?, ?)",
                                 [(device_id, v, a, r, t, report_id)
                                  for v, a, r, t in events])
                for table in ("reports", "update_events"):  # a device's newest only
                    conn.execute(f"DELETE FROM {table} WHERE device_id = ? AND rowid <= ("
                                 f"SELECT rowid FROM {table} WHERE device_id = ? ORDER BY "
                                 f"rowid DESC LIMIT 1 OFFSET ?)",
                                 (device_id, device_id, KEEP_REPORTS))
                if config is not None:
                    conn.execute("INSERT INTO reported_config VALUES (?, ?, ?, ?) ON CONFLICT "
                                 "(device_id) DO UPDATE SET revision = excluded.revision, "
                                 "values_json = excluded.values_json, received_ms = "
                                 "excluded.received_ms",
                                 (device_id, config[0], json.dumps(config[1], sort_keys=True),
                                  _now_ms()))
                conn.commit()
            except DatabaseError as exc:
                conn.rollback()
                raise StorageError(f"registry {self.path}: cannot store a report: "
                                   f"{exc}") from exc

    def last_report(self, device_id: str) -> dict[str, Any] | None:
        """The newest report of ``device_id``."""
        row = self._conn().execute(
            "SELECT state_version, stats_json FROM reports WHERE device_id = ? ORDER BY "
            "received_ms DESC LIMIT 1", (device_id,)).fetchone()
        return None if row is None else {"state_version": int(row[0]),
                                         "stats": json.loads(row[1])}


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _sample_row(s: WireSample) -> tuple[bytes, bytes | None]:
    """The stored bytes of a sample's input and features; :class:`InvalidInput` if it
    has no input or holds NaN or inf (checked as stored: float32)."""
    if s.input is None:
        raise InvalidInput(f"sample {s.sample_id} has no input")
    arrays = [np.ascontiguousarray(s.input, np.float32)]
    if s.features is not None:
        arrays.append(np.ascontiguousarray(s.features, np.float32))
    if not all(np.isfinite(a).all() for a in arrays) or not np.isfinite(s.priority):
        raise InvalidInput(f"sample {s.sample_id}: NaN or inf in its input, features or "
                           f"priority")
    return arrays[0].tobytes(), None if s.features is None else arrays[1].tobytes()
