"""Schema versions of the registry, for SQLite and PostgreSQL alike: Alembic revisions in
``edgecl/cloud/migrations/versions`` applied at start-up (under a lock, so replicas
starting together migrate once)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from edgecl._exceptions import StorageError
from edgecl.cloud._database import RegistryURL

MIGRATIONS = Path(__file__).with_name("migrations")
#: The revision every registry made before Alembic is stamped with (schema 7).
BASE_REVISION = "0001"
#: Any constant: the PostgreSQL advisory lock replicas take while migrating.
_MIGRATION_LOCK = 7_350_001


def _engine_url(where: RegistryURL) -> str:
    if where.dialect == "postgresql":
        return "postgresql+psycopg://" + where.url.split("://", 1)[1]
    return f"sqlite:///{where.path}"


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest schema revision this edgecl knows."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def upgrade(where: RegistryURL, *, stamp_legacy: bool = False) -> str:
    """Bring the registry at ``where`` to the newest revision (``stamp_legacy``: it is a
    pre-Alembic schema-7 registry, stamped with :data:`BASE_REVISION` first); the
    revision it is at. :class:`StorageError` when the registry was made by a newer
    edgecl (a revision this one does not know)."""
    import sqlalchemy
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    scripts = ScriptDirectory.from_config(config)
    engine = sqlalchemy.create_engine(_engine_url(where), poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.begin() as conn:
            if where.dialect == "postgresql":
                conn.execute(sqlalchemy.text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
            current = MigrationContext.configure(conn).get_current_revision()
            if current is not None and current not in {s.revision for s in
                                                       scripts.walk_revisions()}:
                raise StorageError(f"registry {where.redacted()} is at schema revision "
                                   f"{current}, newer than this edgecl knows "
                                   f"({scripts.get_current_head()}); upgrade edgecl")
            config.attributes["connection"] = conn
            if current is None and stamp_legacy:
                command.stamp(config, BASE_REVISION)
            if current != scripts.get_current_head():
                command.upgrade(config, "head")
        return scripts.get_current_head() or ""
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StorageError(f"registry {where.redacted()}: schema upgrade failed: "
                           f"{exc}") from exc
    finally:
        engine.dispose()
