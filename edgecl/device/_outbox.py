"""A durable, bounded outbox for samples selected for upload to the cloud.

The prediction path calls :meth:`Outbox.put`, which only validates, encodes and hands the
sample to a bounded in-memory queue; a background writer thread commits it to SQLite. An
uploader takes items with :meth:`Outbox.lease` (at-least-once) and deletes them with
:meth:`Outbox.ack` once the cloud has confirmed them.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import queue
import sqlite3
import struct
import threading
import time
import weakref
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError, InvalidInput, StorageError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_BUSY_TIMEOUT_MS = 5000
_BATCH = 64  # items per writer transaction: keeps each commit, and the lock, short
_CHUNK = 500  # ids per IN (...) clause
_MAX_ID = 128
_COUNTERS = ("enqueued", "stored", "dropped", "evicted", "acked", "duplicates", "errors")
# Small columns come before the blob, so filtering on lease_until never reads overflow
# pages; one index per scan order (upload: best first; eviction: worst first, both
# oldest first on ties) so neither query sorts.
_SCHEMA = """
CREATE TABLE outbox (
    sample_id   TEXT PRIMARY KEY,
    created_at  REAL NOT NULL,
    priority    REAL NOT NULL,
    nbytes      INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    meta        TEXT NOT NULL,
    arrays      BLOB NOT NULL
);
CREATE INDEX outbox_upload ON outbox (priority DESC, created_at, sample_id);
CREATE INDEX outbox_evict ON outbox (priority, created_at, sample_id);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_STOP = object()
_OPEN: weakref.WeakSet[Outbox] = weakref.WeakSet()

# arrays blob: magic, crc32 of the rest, header length; JSON header [[name, dtype, shape,
# nbytes], ...]; then the raw C-order bytes of each array, back to back.
_MAGIC = b"ECLA1"
_HEAD = struct.Struct("<5sII")
_KINDS = "biufc"
_HEADERS: dict[tuple[Any, ...], bytes] = {}  # a device stores few distinct layouts


def encode_arrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Serialise named numpy arrays into one self-checking blob (dtype, shape, raw bytes)."""
    key = tuple((name, a.dtype.str, a.shape) for name, a in arrays.items())
    header = _HEADERS.get(key)
    if header is None:
        header = json.dumps([[name, a.dtype.str, list(a.shape), a.nbytes]
                             for name, a in arrays.items()], separators=(",", ":")).encode()
        if len(_HEADERS) >= 256:
            _HEADERS.clear()
        _HEADERS[key] = header
    chunks = [a.tobytes() for a in arrays.values()]
    crc = zlib.crc32(header)
    for c in chunks:
        crc = zlib.crc32(c, crc)
    return b"".join([_HEAD.pack(_MAGIC, crc, len(header)), header, *chunks])


def decode_arrays(blob: bytes) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_arrays`; raise :class:`ConfigError` on a corrupt blob."""
    try:
        magic, crc, hlen = _HEAD.unpack_from(blob)
        if magic != _MAGIC:
            raise ValueError("bad magic")
        body = memoryview(blob)[_HEAD.size:]
        if zlib.crc32(body) != crc:
            raise ValueError("checksum mismatch")
        out: dict[str, np.ndarray] = {}
        offset = hlen
        for name, dtype, shape, n in json.loads(bytes(body[:hlen])):
            dt = np.dtype(dtype)
            if dt.kind not in _KINDS or n % dt.itemsize or offset + n > len(body):
                raise ValueError(f"bad array entry {name!r}")
            arr = np.frombuffer(body, dt, n // dt.itemsize, offset) if n else np.empty(0, dt)
            out[str(name)] = arr.reshape(shape).copy()
            offset += n
        if offset != len(body):
            raise ValueError("trailing bytes")
        return out
    except (struct.error, ValueError, TypeError) as exc:
        raise StorageError(f"corrupt outbox record: {exc}") from exc


@dataclass(frozen=True, eq=False)
class OutboxItem:
    """One stored sample as handed to the uploader by :meth:`Outbox.lease`.

    Attributes
    ----------
    sample_id : str
        Unique id; the receiver de-duplicates by it (delivery is at-least-once).
    created_at : float
        Unix seconds when the sample was taken.
    priority : float
        Higher is uploaded first and evicted last.
    arrays : dict of str to ndarray
        The persisted arrays (the outbox's ``store``), bit-exact.
    meta : dict
        JSON metadata (domain, label guess, OOD score, ...).
    attempts : int
        How many times the item has been leased, this lease included.
    """

    sample_id: str
    created_at: float
    priority: float
    arrays: dict[str, np.ndarray]
    meta: dict[str, str | int | float]
    attempts: int


@dataclass(frozen=True)
class OutboxStats:
    """Counters of an outbox; all but ``count``/``bytes`` survive restarts.

    Every valid put ends in exactly one bucket, so after :meth:`Outbox.flush`:
    ``puts == acked + evicted + dropped + duplicates + errors + count``.
    ``dropped`` counts puts refused because the queue was full, the item was larger than
    ``max_bytes``, or it ranked below everything evictable in a full outbox. ``errors``
    counts items lost to a failing writer or removed as corrupt when leased. ``enqueued``
    counts puts accepted for writing; ``bytes`` is payload (arrays blob + meta JSON).
    Counters are saved with every write transaction (and on close), so a crash can lose
    only the drops and errors counted since the last one.
    """

    count: int
    bytes: int
    max_count: int
    max_bytes: int
    evicted: int
    dropped: int
    enqueued: int
    stored: int
    acked: int
    duplicates: int = 0
    errors: int = 0


_Record = tuple[str, float, float, bytes, str, int]  # id, created, priority, blob, meta, n


class Outbox:
    """A crash-safe, bounded, priority-ordered store of samples waiting for upload.

    Parameters
    ----------
    path : str or PathLike
        SQLite database file (created if missing); one ``Outbox`` per file at a time.
    max_count, max_bytes : int
        Bounds. Inserting past either evicts the lowest-priority (then oldest) non-leased
        items in the same transaction, or drops the new item if it ranks below all of them.
    store : tuple of str
        Names of the arrays to persist, e.g. ``("image",)``, ``("features",)`` or both;
        each put must provide them, other arrays are ignored.
    queue_size : int
        Capacity of the in-memory queue in front of the writer thread.
    synchronous : {"NORMAL", "FULL"}
        SQLite ``synchronous`` in WAL mode. Both make a committed item survive a crash of
        the process. Only ``FULL`` (an fsync per commit) also survives power loss; with
        ``NORMAL`` the last commits before a power cut may be lost.

    Notes
    -----
    :meth:`put` returning ``True`` means queued, not durable; :meth:`flush`,
    :meth:`put_sync` and :meth:`close` wait for commits. Leases held when a previous
    process stopped are released on open. Thread-safe: :meth:`put` from any number of
    threads never touches the database; the writer thread and :meth:`lease`, :meth:`ack`,
    :meth:`release` and :meth:`put_sync` share one connection under a lock, held for at
    most one batch of 64 inserts. Outboxes not closed are drained at interpreter exit.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "outbox.db")
    >>> with Outbox(path, store=("features",)) as box:
    ...     box.put_sync("cam0-17", {"features": np.ones(4, np.float32)}, priority=0.9)
    ...     [item] = box.lease(1)
    ...     (item.sample_id, item.attempts, box.ack([item.sample_id]))
    True
    ('cam0-17', 1, 1)
    """

    def __init__(self, path: str | os.PathLike[str], *, max_count: int = 10_000,
                 max_bytes: int = 64 << 20, store: tuple[str, ...] = ("image",),
                 queue_size: int = 1024, synchronous: str = "NORMAL") -> None:
        if isinstance(store, str):
            store = (store,)
        if not store or not all(isinstance(s, str) and s for s in store):
            raise ConfigError(f"store must name at least one array, got {store!r}")
        for name, value in (("max_count", max_count), ("max_bytes", max_bytes),
                            ("queue_size", queue_size)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        sync = str(synchronous).upper()
        if sync not in ("NORMAL", "FULL"):
            raise ConfigError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        self.path = os.fspath(path)
        self.max_count, self.max_bytes = max_count, max_bytes
        self.store, self.synchronous = tuple(dict.fromkeys(store)), sync
        self._con = self._connect()
        self._db_lock = threading.Lock()  # guards the connection and count/bytes
        self._stat_lock = threading.Lock()  # guards the counters below
        self._put_lock = threading.Lock()  # makes queue order equal accept order
        self._done_cond = threading.Condition()
        self._saved: Counter[str] = Counter(dict(self._con.execute(
            "SELECT name, value FROM counters")))
        self._unsaved: Counter[str] = Counter()
        self._count, self._bytes = self._con.execute(
            "SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM outbox").fetchone()
        self._enqueued_base = self._saved["enqueued"]
        self._accepted = self._queued = self._done = 0
        self._closed = False
        self._q: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="edgecl-outbox-writer",
                                        daemon=True)
        self._thread.start()
        _OPEN.add(self)

    def _connect(self) -> sqlite3.Connection:
        if not os.path.lexists(self.path):  # only a missing file makes a new outbox
            _create(self.path, self.synchronous)
        else:
            _check_file(self.path)
        try:
            con = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000,
                                  isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot open outbox database: {exc}") from exc
        try:
            con.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(f"PRAGMA synchronous={self.synchronous}")
            con.execute("BEGIN IMMEDIATE")
            try:
                self._check_schema(con)
                con.execute("UPDATE outbox SET lease_until = 0 WHERE lease_until > 0")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            con.close()
            raise StorageError(f"{self.path}: corrupt or unreadable outbox database: "
                              f"{exc}") from exc
        except BaseException:
            con.close()
            raise
        return con

    def _check_schema(self, con: sqlite3.Connection) -> None:
        problems = [r[0] for r in con.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise StorageError(f"{self.path}: corrupt or unreadable outbox database "
                               f"(quick_check: {'; '.join(problems)}); {_RECOVER}")
        version = con.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master "
                                             "WHERE type = 'table'")}
        if version > SCHEMA_VERSION:
            raise StorageError(f"{self.path}: outbox schema version {version} is newer than "
                              f"this edgecl supports ({SCHEMA_VERSION}); upgrade edgecl")
        if version != SCHEMA_VERSION or not {"outbox", "counters"} <= tables:
            raise StorageError(f"{self.path}: not an edgecl outbox database "
                              f"(user_version={version}, tables={sorted(tables)}); "
                              f"{_RECOVER}")

    # ---------------------------------------------------------------- putting
    def _record(self, sample_id: Any, arrays: Any, priority: Any, meta: Any,
                created_at: Any) -> _Record:
        if not isinstance(sample_id, str) or not 0 < len(sample_id) <= _MAX_ID:
            raise InvalidInput(f"sample_id must be a non-empty str of at most {_MAX_ID} "
                               f"characters, got {sample_id!r:.60}")
        prio = _finite(priority, "priority")
        created = time.time() if created_at is None else _finite(created_at, "created_at")
        if not isinstance(arrays, Mapping):
            raise InvalidInput(f"arrays must be a mapping of name to ndarray, "
                               f"got {type(arrays).__name__}")
        missing = [name for name in self.store if name not in arrays]
        if missing:
            raise InvalidInput(f"missing array(s) {missing}: this outbox stores {self.store}")
        for name in self.store:
            _check_array(name, arrays[name])
        blob = encode_arrays({name: arrays[name] for name in self.store})
        meta_json = _meta_json(meta)
        return sample_id, created, prio, blob, meta_json, len(blob) + len(meta_json.encode())

    def put(self, sample_id: str, arrays: Mapping[str, np.ndarray], *, priority: float,
            meta: Mapping[str, str | int | float] | None = None,
            created_at: float | None = None) -> bool:
        """Queue a sample for storage without ever waiting on the disk.

        Returns ``True`` if queued (the arrays are copied), ``False`` if refused and counted
        as ``dropped`` (queue full, item larger than ``max_bytes``, or outbox closed).
        Whether a queued item is finally kept depends on its priority; see the class notes.
        Raises :class:`InvalidInput` for a bad id, non-numpy or non-finite arrays, or meta
        that is not flat JSON.
        """
        rec = self._record(sample_id, arrays, priority, meta, created_at)
        if rec[5] <= self.max_bytes:
            with self._put_lock:
                if not self._closed:
                    try:
                        self._q.put_nowait(rec)
                    except queue.Full:
                        pass
                    else:
                        self._queued += 1
                        with self._stat_lock:
                            self._accepted += 1
                        return True
        with self._stat_lock:
            self._unsaved["dropped"] += 1
        return False

    def put_sync(self, sample_id: str, arrays: Mapping[str, np.ndarray], *,
                 priority: float, meta: Mapping[str, str | int | float] | None = None,
                 created_at: float | None = None) -> bool:
        """Store a sample in the caller's thread; return once committed.

        Returns ``True`` if the sample is stored (now or by an earlier put of the same id),
        ``False`` if dropped (too large, or below everything evictable in a full outbox).
        """
        rec = self._record(sample_id, arrays, priority, meta, created_at)
        if rec[5] > self.max_bytes:
            with self._stat_lock:
                self._unsaved["dropped"] += 1
            return False
        with self._db_lock:
            self._check_open()
            with self._stat_lock:
                self._accepted += 1
            try:
                with self._transaction() as delta:
                    outcome = self._insert(rec, delta, time.time())
            except sqlite3.Error as exc:
                with self._stat_lock:
                    self._unsaved.update(errors=1, enqueued=1)
                raise _storage_error(self.path, exc) from exc
        return outcome != "dropped"

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every item queued so far is committed; ``TimeoutError`` if it takes
        longer than ``timeout`` seconds."""
        with self._put_lock:
            target = self._queued
        with self._done_cond:
            if not self._done_cond.wait_for(lambda: self._done >= target, timeout):
                raise TimeoutError(f"outbox flush: {target - self._done} item(s) still "
                                   f"queued after {timeout} s")

    # ---------------------------------------------------------------- uploading
    def lease(self, n: int, *, lease_seconds: float = 30.0) -> list[OutboxItem]:
        """Hand out up to ``n`` non-leased items, highest priority first (ties: oldest).

        Each is leased for ``lease_seconds`` and its ``attempts`` incremented; an item not
        acked before its lease expires is handed out again. A record found corrupt is
        logged, removed and counted in ``errors``.
        """
        if not isinstance(n, int) or n < 0:
            raise ConfigError(f"n must be a non-negative int, got {n!r}")
        if not lease_seconds > 0:
            raise ConfigError(f"lease_seconds must be > 0, got {lease_seconds!r}")
        items: list[OutboxItem] = []
        with self._public_transaction() as delta:
            now = time.time()
            while len(items) < n:
                rows = self._con.execute(
                    "SELECT sample_id, created_at, priority, arrays, meta, attempts, nbytes "
                    "FROM outbox WHERE lease_until <= ? "
                    "ORDER BY priority DESC, created_at, sample_id LIMIT ?",
                    (now, n - len(items))).fetchall()
                if not rows:
                    break
                for sid, created, prio, blob, meta, attempts, nbytes in rows:
                    try:
                        item = OutboxItem(sid, created, prio, decode_arrays(blob),
                                          _load_meta(meta), attempts + 1)
                    except StorageError as exc:
                        logger.error("outbox %s: removing record %r: %s", self.path, sid, exc)
                        self._con.execute("DELETE FROM outbox WHERE sample_id = ?", (sid,))
                        delta.update(errors=1, count=-1, bytes=-nbytes)
                        continue
                    self._con.execute("UPDATE outbox SET attempts = attempts + 1, "
                                      "lease_until = ? WHERE sample_id = ?",
                                      (now + lease_seconds, sid))
                    items.append(item)
        return items

    def ack(self, sample_ids: Iterable[str]) -> int:
        """Delete acknowledged items; return how many were removed (unknown ids ignored)."""
        ids = list(dict.fromkeys(sample_ids))
        with self._public_transaction() as delta:
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                n, size = self._con.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM outbox "
                    f"WHERE sample_id IN ({marks})", chunk).fetchone()
                self._con.execute(f"DELETE FROM outbox WHERE sample_id IN ({marks})", chunk)
                delta.update(acked=n, count=-n, bytes=-size)
        return delta["acked"]

    def release(self, sample_ids: Iterable[str]) -> None:
        """Give leased items back so the next :meth:`lease` can hand them out again."""
        ids = list(dict.fromkeys(sample_ids))
        with self._public_transaction():
            for chunk in _chunks(ids):
                self._con.execute("UPDATE outbox SET lease_until = 0 WHERE sample_id IN "
                                  f"({','.join('?' * len(chunk))})", chunk)

    def stats(self) -> OutboxStats:
        """A consistent snapshot of the counters (cheap: no disk access)."""
        with self._stat_lock:
            c = self._saved + self._unsaved
            return OutboxStats(
                count=self._count, bytes=self._bytes, max_count=self.max_count,
                max_bytes=self.max_bytes, evicted=c["evicted"], dropped=c["dropped"],
                enqueued=self._enqueued_base + self._accepted,
                stored=c["stored"], acked=c["acked"], duplicates=c["duplicates"],
                errors=c["errors"])

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Write everything still queued, stop the writer and close the database."""
        with self._put_lock:
            if self._closed:
                return
            self._closed = True
        self._q.put(_STOP)
        self._thread.join()
        with self._db_lock:
            try:
                if +self._unsaved:  # e.g. drops since the last write
                    with self._transaction():
                        pass
            except sqlite3.Error as exc:
                logger.error("outbox %s: could not save counters: %s", self.path, exc)
            finally:
                self._con.close()
        _OPEN.discard(self)

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Outbox({self.path!r}, count={self._count}, max_count={self.max_count}, "
                f"store={self.store})")

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError(f"outbox {self.path} is closed")

    @contextmanager
    def _public_transaction(self) -> Iterator[Counter[str]]:
        """A transaction for a public call: checks the outbox is open (under the lock, so
        close cannot slip in between) and maps SQLite errors to edgecl errors."""
        with self._db_lock:
            self._check_open()
            try:
                with self._transaction() as delta:
                    yield delta
            except sqlite3.Error as exc:
                raise _storage_error(self.path, exc) from exc

    # ---------------------------------------------------------------- writing
    def _run(self) -> None:
        while True:
            batch: list[_Record] = []
            item = self._q.get()
            while item is not _STOP:
                batch.append(item)
                if len(batch) >= _BATCH:
                    break
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
            try:
                if batch:
                    self._write_items(batch)
            except Exception:  # the writer must keep running whatever happens
                logger.exception("outbox %s: writer failed on %d item(s)", self.path,
                                 len(batch))
            finally:
                with self._done_cond:
                    self._done += len(batch)
                    self._done_cond.notify_all()
            if item is _STOP:
                return

    def _write_items(self, batch: list[_Record]) -> None:
        """Commit ``batch`` in one transaction; on failure retry item by item."""
        try:
            with self._db_lock, self._transaction() as delta:
                now = time.time()
                for rec in batch:
                    self._insert(rec, delta, now)
            return
        except Exception as exc:
            logger.warning("outbox %s: batch of %d failed (%s); retrying one by one",
                           self.path, len(batch), exc)
        for rec in batch:
            try:
                with self._db_lock, self._transaction() as delta:
                    self._insert(rec, delta, time.time())
            except Exception as exc:
                logger.error("outbox %s: lost sample %r: %s", self.path, rec[0], exc)
                with self._stat_lock:
                    self._unsaved.update(errors=1, enqueued=1)

    def _insert(self, rec: _Record, delta: Counter[str], now: float) -> str:
        """Insert one record, evicting as needed; return stored, duplicate or dropped."""
        sid, created, prio, blob, meta, nbytes = rec
        con = self._con
        delta["enqueued"] += 1
        if con.execute("SELECT 1 FROM outbox WHERE sample_id = ?", (sid,)).fetchone():
            delta["duplicates"] += 1
            return "duplicate"
        need_count = self._count + delta["count"] + 1 - self.max_count
        need_bytes = self._bytes + delta["bytes"] + nbytes - self.max_bytes
        if need_count > 0 or need_bytes > 0:
            victims, freed = [], 0
            cur = con.execute(
                "SELECT sample_id, nbytes FROM outbox WHERE lease_until <= ? AND "
                "priority <= ? AND (priority < ? OR created_at < ?) "
                "ORDER BY priority, created_at, sample_id", (now, prio, prio, created))
            for vid, vbytes in cur:
                victims.append((vid,))
                freed += vbytes
                if len(victims) >= need_count and freed >= need_bytes:
                    break
            else:
                delta["dropped"] += 1
                return "dropped"
            cur.close()
            con.executemany("DELETE FROM outbox WHERE sample_id = ?", victims)
            delta.update(evicted=len(victims), count=-len(victims), bytes=-freed)
        con.execute("INSERT INTO outbox (sample_id, created_at, priority, nbytes, arrays, "
                    "meta) VALUES (?, ?, ?, ?, ?, ?)", (sid, created, prio, nbytes, blob, meta))
        delta.update(stored=1, count=1, bytes=nbytes)
        return "stored"

    @contextmanager
    def _transaction(self) -> Iterator[Counter[str]]:
        """One ``BEGIN IMMEDIATE`` transaction that also persists the counters; the caller
        holds ``_db_lock``. In-memory totals change only once the commit succeeded."""
        delta: Counter[str] = Counter()
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            yield delta
            with self._stat_lock:
                pending = +self._unsaved
            changed = pending + Counter({k: delta[k] for k in _COUNTERS})
            if changed:
                con.executemany(
                    "INSERT INTO counters (name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    [(k, self._saved[k] + v) for k, v in changed.items()])
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        with self._stat_lock:
            self._saved.update(changed)
            self._unsaved.subtract(pending)
            self._count += delta["count"]
            self._bytes += delta["bytes"]


_RECOVER = ("refusing to open it, so as not to lose queued samples: restore it, or move it "
            "(and its -wal and -shm files) away to start an empty outbox")


def _create(path: str, synchronous: str) -> None:
    """Create a new outbox at ``path`` atomically (mode 0600): built under a temporary
    name beside it and linked into place, so an existing file is always complete."""
    tmp = f"{path}.new-{os.getpid()}"
    for leftover in (tmp, f"{tmp}-wal", f"{tmp}-shm"):
        if os.path.lexists(leftover):
            os.unlink(leftover)
    try:
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        con = sqlite3.connect(tmp, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(f"PRAGMA synchronous={synchronous}")
            con.executescript(f"BEGIN;{_SCHEMA};PRAGMA user_version={SCHEMA_VERSION};COMMIT;")
        finally:
            con.close()
        try:
            os.link(tmp, path)
        except FileExistsError:  # created meanwhile: open that one
            pass
    except (OSError, sqlite3.Error) as exc:
        raise StorageError(f"{path}: cannot create outbox database: {exc}") from exc
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _check_file(path: str) -> None:
    """:class:`StorageError` for an empty (truncated) outbox file; keep the files 0600."""
    try:
        if os.stat(path).st_size == 0:
            raise StorageError(f"{path}: the outbox file is empty (0 bytes; truncated?); "
                               f"{_RECOVER}")
        for p in (path, f"{path}-wal", f"{path}-shm"):
            if os.path.exists(p) and os.stat(p).st_mode & 0o077:
                os.chmod(p, 0o600)
    except OSError as exc:
        raise StorageError(f"{path}: cannot open outbox database: {exc}") from exc


def _storage_error(path: str, exc: sqlite3.Error) -> StorageError:
    if isinstance(exc, sqlite3.OperationalError):
        return StorageError(f"outbox {path}: storage error: {exc}")
    return StorageError(f"outbox {path}: corrupt database: {exc}")


def _finite(value: Any, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if isinstance(value, bool) or not math.isfinite(out):
        raise InvalidInput(f"{name} must be a finite number, got {value!r}")
    return out


def _check_array(name: str, a: Any) -> None:
    if not isinstance(a, np.ndarray):
        raise InvalidInput(f"array {name!r} must be a numpy array, got {type(a).__name__}")
    if a.dtype.kind not in _KINDS:
        raise InvalidInput(f"array {name!r} has unsupported dtype {a.dtype}: "
                           "expected bool, integer, float or complex")
    if a.dtype.kind in "fc" and not np.isfinite(a).all():
        raise InvalidInput(f"array {name!r} contains NaN or inf")


def _meta_json(meta: Any) -> str:
    if meta is None:
        return "{}"
    if not isinstance(meta, Mapping):
        raise InvalidInput(f"meta must be a mapping, got {type(meta).__name__}")
    plain = {}
    for key, value in meta.items():
        if isinstance(value, np.generic):  # e.g. a label guess from argmax
            value = value.item()
        if not isinstance(key, str) or not isinstance(value, str | int | float):
            raise InvalidInput(f"meta must map str to str, int or float; bad entry "
                               f"{key!r}: {value!r:.60}")
        plain[key] = value
    try:
        return json.dumps(plain, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:
        raise InvalidInput(f"meta is not valid JSON: {exc}") from exc


def _load_meta(text: str) -> dict[str, str | int | float]:
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise StorageError(f"corrupt outbox meta: {exc}") from exc
    if not isinstance(meta, dict):
        raise StorageError("corrupt outbox meta: not an object")
    return meta


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i:i + _CHUNK]


@atexit.register
def _close_all() -> None:
    """Drain and close outboxes the program forgot to close (runs before daemon threads
    are stopped at interpreter exit)."""
    for box in list(_OPEN):
        try:
            box.close()
        except Exception:  # pragma: no cover - best effort at exit
            logger.exception("outbox %s: close at exit failed", box.path)
