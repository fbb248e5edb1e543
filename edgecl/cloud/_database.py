"""The registry's database: a SQLite file (the embedded default) or a PostgreSQL server
(several service replicas), behind one small interface.

The registry writes plain SQL with ``?`` placeholders; :class:`Connection` runs it on
either database (PostgreSQL gets ``%s``), opens a transaction before the first write as
``sqlite3`` does, and turns every driver error into :class:`DatabaseError`. On PostgreSQL
a commit that may change what devices are served also sends ``NOTIFY edgecl_served``,
which :meth:`Database.listen` turns into a wake-up of update streams in every replica.
Schemas are Alembic revisions (``edgecl/cloud/migrations``), the same for both databases.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgecl._exceptions import ConfigError

log = logging.getLogger("edgecl.cloud")
#: The channel of commits that may change what devices are served (wakes update streams
#: in every replica; labellers poll).
SERVED_CHANNEL = "edgecl_served"


class DatabaseError(Exception):
    """A database call failed. ``integrity``: a constraint refused the row (a duplicate
    key); ``corrupt``: the database file is not readable as a database."""

    def __init__(self, message: str, *, integrity: bool = False, corrupt: bool = False):
        super().__init__(message)
        self.integrity = integrity
        self.corrupt = corrupt


@dataclass(frozen=True)
class RegistryURL:
    """Where a registry lives: ``sqlite:///abs/path.sqlite`` or ``postgresql://...``."""

    dialect: str  # "sqlite" | "postgresql"
    url: str
    path: Path | None = None  # the SQLite file

    @property
    def shared(self) -> bool:
        """Several service processes may use it at once (PostgreSQL)."""
        return self.dialect == "postgresql"

    def redacted(self) -> str:
        """The URL without its password (for logs and reports)."""
        if self.dialect != "postgresql":
            return self.url
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()


def parse_registry_url(url: str, storage_dir: Path) -> RegistryURL:
    """The registry of ``storage.registry``: "" is ``registry.sqlite`` in the storage
    directory; :class:`ConfigError` for anything but ``sqlite:///`` and
    ``postgresql://`` (``postgres://`` is accepted)."""
    url = (url or "").strip()
    if not url:
        path = Path(storage_dir) / "registry.sqlite"
        return RegistryURL("sqlite", f"sqlite:///{path}", path)
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or len(url) <= len("sqlite:///"):
            raise ConfigError(f"storage.registry {url!r}: write sqlite:///ABSOLUTE/PATH "
                              f"(sqlite:////srv/edgecl/registry.sqlite)")
        path = Path(url[len("sqlite://"):])
        return RegistryURL("sqlite", f"sqlite:///{path}", path)
    if scheme in ("postgresql", "postgres"):
        url = "postgresql" + url[len(scheme):]
        if not urlsplit(url).path.strip("/"):
            raise ConfigError("storage.registry: a PostgreSQL URL needs a database name "
                              "(postgresql://user@host:5432/edgecl)")
        return RegistryURL("postgresql", url)
    raise ConfigError(f"storage.registry {url!r}: use sqlite:///PATH (the default) or "
                      f"postgresql://USER@HOST:PORT/DB")


_WRITES = re.compile(r"^\s*(INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|NOTIFY)\b|FOR UPDATE",
                     re.IGNORECASE)


@lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class Connection:
    """One thread's connection: ``execute`` / ``executemany`` return a cursor
    (``fetchone``, ``fetchall``, ``rowcount``); ``commit`` / ``rollback`` end the
    transaction the first write began."""

    def __init__(self, raw: Any, dialect: str, errors: tuple[type[BaseException], ...]):
        self.raw = raw
        self.dialect = dialect
        self._errors = errors
        self._in_tx = False

    def _error(self, exc: BaseException) -> DatabaseError:
        name = type(exc).__name__
        integrity = "Integrity" in name or "UniqueViolation" in name
        corrupt = isinstance(exc, sqlite3.DatabaseError) and not isinstance(
            exc, sqlite3.OperationalError | sqlite3.IntegrityError)
        return DatabaseError(f"{name}: {exc}", integrity=integrity, corrupt=corrupt)

    def _begin(self, sql: str) -> None:
        if self.dialect == "postgresql" and not self._in_tx and _WRITES.search(sql):
            self.raw.execute("BEGIN")
            self._in_tx = True

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """Run one statement; its cursor."""
        try:
            self._begin(sql)
            if self.dialect == "postgresql":  # binary results: blobs as bytes, not hex
                return self.raw.execute(_pg_sql(sql), tuple(args), binary=True)
            return self.raw.execute(sql, args)
        except self._errors as exc:
            raise self._error(exc) from exc

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each of ``rows``."""
        if not rows:
            return
        try:
            self._begin(sql)
            if self.dialect == "postgresql":
                with self.raw.cursor() as cur:
                    cur.executemany(_pg_sql(sql), [tuple(r) for r in rows])
            else:
                self.raw.executemany(sql, rows)
        except self._errors as exc:
            raise self._error(exc) from exc

    def commit(self) -> None:
        """Commit the open transaction."""
        try:
            if self.dialect == "postgresql":
                if self._in_tx:
                    self.raw.execute("COMMIT")
            else:
                self.raw.commit()
        except self._errors as exc:
            raise self._error(exc) from exc
        finally:
            self._in_tx = False

    def rollback(self) -> None:
        """Undo the open transaction (nothing when none is open)."""
        try:
            if self.dialect == "postgresql":
                if self._in_tx:
                    self.raw.execute("ROLLBACK")
            else:
                self.raw.rollback()
        except self._errors as exc:
            raise self._error(exc) from exc
        finally:
            self._in_tx = False

    @property
    def usable(self) -> bool:
        """False once the server closed or broke the connection (a restart, a network
        cut): the registry then opens a new one for the next call."""
        return self.dialect != "postgresql" or not (self.raw.closed or self.raw.broken)

    def close(self) -> None:
        """Close the connection (an open transaction is rolled back)."""
        try:
            self.raw.close()
        except self._errors:
            pass


class Database:
    """Connections to one registry database, and what differs between the two kinds."""

    def __init__(self, where: RegistryURL) -> None:
        self.where = where
        self.dialect = where.dialect
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        if self.dialect == "postgresql":
            try:
                import psycopg
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ConfigError("storage.registry is PostgreSQL but psycopg is not "
                                  "installed: pip install 'edgecl[scale]'") from exc
            self._psycopg = psycopg
            self._errors: tuple[type[BaseException], ...] = (psycopg.Error,)
        else:
            self._errors = (sqlite3.Error,)

    @property
    def shared(self) -> bool:
        """Several service processes may use it at once (PostgreSQL)."""
        return self.where.shared

    @property
    def skip_locked(self) -> str:
        """The suffix that lets concurrent claimers pass rows another one locked."""
        return " FOR UPDATE SKIP LOCKED" if self.dialect == "postgresql" else ""

    def connect(self) -> Connection:
        """A new connection (:class:`DatabaseError` when the database is unreachable)."""
        if self.dialect == "postgresql":
            try:
                raw = self._psycopg.connect(self.where.url, autocommit=True,
                                            connect_timeout=10)
            except self._psycopg.Error as exc:
                raise DatabaseError(f"cannot connect to {self.where.redacted()}: "
                                    f"{exc}") from exc
            return Connection(raw, self.dialect, self._errors)
        assert self.where.path is not None
        try:
            raw = sqlite3.connect(self.where.path, timeout=30, check_same_thread=False)
            raw.execute("PRAGMA journal_mode=WAL")
            raw.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(f"not a readable SQLite database ({exc})",
                                corrupt=True) from exc
        return Connection(raw, self.dialect, self._errors)

    def next_seqs(self, conn: Connection, count: int) -> list[int] | None:
        """``count`` new sample sequence numbers from the database's sequence (None on
        SQLite: one process numbers them itself)."""
        if self.dialect != "postgresql":
            return None
        rows = conn.execute("SELECT nextval('sample_seq') FROM generate_series(1, ?)",
                            (count,)).fetchall()
        return [int(r[0]) for r in rows]

    def announce(self, conn: Connection) -> None:
        """Inside a transaction: on commit, tell every replica that what devices may be
        served changed (PostgreSQL; SQLite has only this process)."""
        if self.dialect == "postgresql":
            conn.execute(f"NOTIFY {SERVED_CHANNEL}")

    def listen(self, served: Callable[[], None]) -> None:
        """Call ``served`` when a replica :meth:`announce` d a change to what devices are
        served (PostgreSQL; nothing on SQLite, where every writer is in this process)."""
        if self.dialect != "postgresql" or self._listener is not None:
            return
        self._listener = threading.Thread(target=self._listen, args=(served,),
                                          name="edgecl-registry-listen", daemon=True)
        self._listener.start()

    def _listen(self, served: Callable[[], None]) -> None:
        while not self._stop.is_set():
            try:
                with self._psycopg.connect(self.where.url, autocommit=True,
                                           connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {SERVED_CHANNEL}")
                    served()  # anything committed while not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            served()
            except self._psycopg.Error as exc:
                log.warning("registry change listener lost its connection; retrying",
                            extra={"error": str(exc)})
                self._stop.wait(1.0)

    def close(self) -> None:
        """Stop the change listener."""
        self._stop.set()
