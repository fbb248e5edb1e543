"""The fleet's domain library: published updates kept with the domain they were learned on.

Every update the service publishes is stored with a :class:`DomainSignature` of its
training window: the mean and variance, per dimension, of the frozen encoder's features
of the raw uploads (the signal the service segments uploads on, which no update changes).
When a target's newest domain matches a stored one, the coordinator validates the stored
update on the target's new uploads (the rule every candidate meets) and, if it passes,
serves it before learning anything (:mod:`edgecl.cloud._learning`).

Matching uses the statistic of the segmentation (:mod:`edgecl.cloud._segments`): the
standardised mean difference of the two feature sets, scaled by their sizes, is about 1
when both come from one distribution and tens or hundreds across severe corruptions; a
stored domain matches when it is below the segmentation threshold, i.e. when the
segmenter would not split the two apart.

The library is one SQLite file (``<storage>/library.db``), bounded (``capacity`` entries
per scope; the least recently matched is evicted), and survives a restart. An entry whose
checksum, arrays or dimension do not check out, or whose encoder the service no longer
serves, is skipped with a logged reason and never served.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecl._exceptions import ConfigError, InvalidInput
from edgecl.bundle import FeatureStats

log = logging.getLogger("edgecl.cloud")

SCHEMA = """
CREATE TABLE IF NOT EXISTS domains (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL,
    encoder TEXT NOT NULL,
    origin TEXT NOT NULL,
    dim INTEGER NOT NULL,
    count INTEGER NOT NULL,
    signature BLOB NOT NULL,
    parts BLOB NOT NULL,
    metrics TEXT NOT NULL,
    checksum TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    used_ms INTEGER NOT NULL,
    matches INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS domains_scope ON domains (scope, encoder);
"""


@dataclass(frozen=True)
class DomainSignature(FeatureStats):
    """Per-dimension mean and variance of ``count`` feature vectors (``of(features)``)."""

    @property
    def dim(self) -> int:
        """Feature dimension."""
        return int(self.mean.shape[0])

    def statistic(self, other: DomainSignature) -> float:
        """The segmentation statistic between the two feature sets (about 1 for one
        distribution): ``n_a n_b / (n_a + n_b) * mean_d (mean_a - mean_b)^2 / pooled``."""
        if other.dim != self.dim:
            raise InvalidInput(f"signature dimensions differ: {self.dim} vs {other.dim}")
        na, nb = float(self.count), float(other.count)
        pooled = ((na - 1) * self.var + (nb - 1) * other.var) / max(na + nb - 2, 1.0)
        diff = (self.mean - other.mean) ** 2 / np.maximum(pooled, 1e-12)
        return float(na * nb / (na + nb) * diff.mean())

    def pack(self) -> bytes:
        """float64 mean, then variance."""
        return np.concatenate([self.mean, self.var]).astype("<f8").tobytes()

    @classmethod
    def unpack(cls, data: bytes, dim: int, count: int) -> DomainSignature:
        """Inverse of :meth:`pack`; :class:`InvalidInput` on a wrong size or values."""
        a = np.frombuffer(data, "<f8")
        if a.size != 2 * dim or dim < 1 or count < 2 or not np.isfinite(a).all() \
                or (a[dim:] < 0).any():
            raise InvalidInput(f"signature of {a.size} values for dimension {dim}")
        return cls(a[:dim].copy(), a[dim:].copy(), int(count))


@dataclass(frozen=True)
class DomainEntry:
    """One stored update: its id, where it came from (``origin``: the target it was
    learned for), its signature, parts (wire names) and the metrics it was published
    with."""

    id: int
    scope: str
    encoder: str
    origin: str
    signature: DomainSignature
    parts: dict[str, np.ndarray]
    metrics: dict[str, float]
    matches: int = 0


@dataclass(frozen=True)
class DomainMatch:
    """A stored domain close to a query, and its statistic (lower is closer)."""

    entry: DomainEntry
    statistic: float


def _pack_parts(parts: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v, np.float32) for k, v in parts.items()})
    return buf.getvalue()


def _unpack_parts(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        parts = {k: np.asarray(z[k], np.float32) for k in z.files}
    if not parts or not all(np.isfinite(v).all() for v in parts.values()):
        raise InvalidInput("empty or non-finite parts")
    return parts


def _checksum(*blobs: bytes) -> str:
    h = hashlib.sha256()
    for b in blobs:
        h.update(hashlib.sha256(b).digest())
    return h.hexdigest()


class DomainLibrary:
    """The domain library in ``path`` (SQLite), at most ``capacity`` entries per scope;
    only entries for an encoder in ``encoders`` are ever served (others are dropped at
    open). ``threshold``: a stored domain matches a query below this statistic."""

    def __init__(self, path: str | Path, *, encoders: Iterable[str], capacity: int = 64,
                 threshold: float = 12.0) -> None:
        if capacity < 1 or not threshold > 0:
            raise ConfigError("library capacity must be >= 1 and threshold > 0")
        self.path, self.capacity, self.threshold = Path(path), capacity, threshold
        self.encoders = frozenset(encoders)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self.skipped: dict[int, str] = {}  # entry id -> why it is never served
        self._cache: dict[tuple[str, str], list[DomainEntry]] = {}
        stale = self._db.execute(
            f"SELECT id, encoder FROM domains WHERE encoder NOT IN "
            f"({','.join('?' * len(self.encoders))})", tuple(self.encoders)).fetchall()
        for entry_id, encoder in stale:
            log.warning("domain library: dropping entry %d, learned for encoder %s which "
                        "this service does not serve", entry_id, encoder[:12])
        if stale:
            self._db.execute("DELETE FROM domains WHERE id IN "
                             f"({','.join('?' * len(stale))})", [r[0] for r in stale])

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM domains").fetchone()[0])

    def entries(self, scope: str, encoder: str) -> list[DomainEntry]:
        """The servable entries of ``scope`` for ``encoder`` (bad ones skipped, logged)."""
        key = (scope, encoder)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._load(scope, encoder)
            return list(self._cache[key])

    def _load(self, scope: str, encoder: str) -> list[DomainEntry]:
        out = []
        rows = self._db.execute(
            "SELECT id, origin, dim, count, signature, parts, metrics, checksum, matches "
            "FROM domains WHERE scope = ? AND encoder = ? ORDER BY id", (scope, encoder))
        for (entry_id, origin, dim, count, sig, parts, metrics, checksum,
             matches) in rows.fetchall():
            try:
                if _checksum(sig, parts, metrics.encode()) != checksum:
                    raise InvalidInput("checksum mismatch")
                signature = DomainSignature.unpack(sig, int(dim), int(count))
                entry = DomainEntry(int(entry_id), scope, encoder, origin, signature,
                                    _unpack_parts(parts), json.loads(metrics), int(matches))
            except Exception as exc:  # corrupt, truncated, wrong dimension: never served
                reason = f"{type(exc).__name__}: {exc}"
                if self.skipped.get(int(entry_id)) != reason:
                    log.warning("domain library: skipping entry %d (%s)", entry_id, reason)
                self.skipped[int(entry_id)] = reason
                continue
            out.append(entry)
        return out

    def match(self, scope: str, encoder: str, query: DomainSignature, *,
              limit: int = 3, exclude: Iterable[int] = ()) -> list[DomainMatch]:
        """Stored domains of ``scope`` / ``encoder`` whose statistic against ``query`` is
        below the threshold, closest first (at most ``limit``)."""
        skip = set(exclude)
        found = []
        for entry in self.entries(scope, encoder):
            if entry.id in skip:
                continue
            if entry.signature.dim != query.dim:
                reason = f"signature dimension {entry.signature.dim}, queries have {query.dim}"
                if self.skipped.get(entry.id) != reason:
                    log.warning("domain library: skipping entry %d (%s)", entry.id, reason)
                self.skipped[entry.id] = reason
                continue
            stat = entry.signature.statistic(query)
            if stat < self.threshold:
                found.append(DomainMatch(entry, stat))
        found.sort(key=lambda m: m.statistic)
        return found[:limit]

    def record_match(self, entry_id: int) -> None:
        """An entry was served: it is now the most recently used."""
        with self._lock:
            self._db.execute("UPDATE domains SET used_ms = ?, matches = matches + 1 "
                             "WHERE id = ?", (self._stamp(), entry_id))
            self._cache.clear()

    def store(self, scope: str, encoder: str, origin: str, signature: DomainSignature,
              parts: dict[str, np.ndarray], metrics: dict[str, float]) -> int:
        """Keep a published update: it replaces the closest stored domain of ``scope`` that
        matches ``signature`` (one entry per domain, the newest validated update), or is
        added, evicting the least recently used entry beyond ``capacity``. Its id."""
        if encoder not in self.encoders:
            raise InvalidInput(f"encoder {encoder[:12]} is not served")
        near = self.match(scope, encoder, signature, limit=1)
        sig, blob = signature.pack(), _pack_parts(parts)
        meta = json.dumps({k: float(v) for k, v in metrics.items()}, sort_keys=True)
        checksum = _checksum(sig, blob, meta.encode())
        with self._lock:
            now = self._stamp()
            if near:
                entry_id = near[0].entry.id
                self._db.execute(
                    "UPDATE domains SET origin = ?, dim = ?, count = ?, signature = ?, "
                    "parts = ?, metrics = ?, checksum = ?, used_ms = ? WHERE id = ?",
                    (origin, signature.dim, signature.count, sig, blob, meta, checksum, now,
                     entry_id))
            else:
                cur = self._db.execute(
                    "INSERT INTO domains (scope, encoder, origin, dim, count, signature, "
                    "parts, metrics, checksum, created_ms, used_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (scope, encoder, origin, signature.dim, signature.count, sig, blob, meta,
                     checksum, now, now))
                entry_id = int(cur.lastrowid or 0)
                self._db.execute(
                    "DELETE FROM domains WHERE id IN (SELECT id FROM domains WHERE scope = ? "
                    "ORDER BY used_ms DESC, id DESC LIMIT -1 OFFSET ?)",
                    (scope, self.capacity))
            self._cache.clear()
        return entry_id

    def _stamp(self) -> int:
        """Milliseconds now, strictly after every stored use (least-recently-used order
        holds within one millisecond too)."""
        last = self._db.execute("SELECT MAX(used_ms) FROM domains").fetchone()[0]
        return max(_now_ms(), int(last or 0) + 1)

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def _now_ms() -> int:
    return int(time.time() * 1000)
