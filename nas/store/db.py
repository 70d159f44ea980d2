"""Engines, sessions and migrations for the one database of record (``NAS_DATABASE_URL``): the service's tables
through :func:`get_engine`, Optuna's through :func:`optuna_storage`, both with the options of :func:`engine_options`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from nas.store.outage import call_with_retry

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "services" / "migrations"
VERSION_TABLE = "nas_alembic_version"  # Optuna's own Alembic uses the default "alembic_version"
# The newest migration, read from the file names (NNNN_what.py, NNNN its revision; a test holds this equal to
# Alembic's head) so a short command can tell a current schema without importing Alembic.
SCHEMA_HEAD = max(
    (path.name.split("_", 1)[0] for path in (MIGRATIONS_DIR / "versions").glob("[0-9]*_*.py")), default=""
)


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use the psycopg 3 driver for them."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def engine_options(url: str) -> dict[str, Any]:
    """``create_engine`` options for ``url``: SQLite waits up to 30 s for a lock (the search writes while the API
    and dashboard read); a server database checks pooled connections before use (it may have restarted)."""
    return {"connect_args": {"timeout": 30}} if normalise_url(url).startswith("sqlite") else {"pool_pre_ping": True}


@lru_cache(maxsize=16)
def get_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, **engine_options(url))

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _record):  # WAL lets readers (API, dashboard) run beside the writer
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, **engine_options(url))


@lru_cache(maxsize=16)
def optuna_storage(url: str):
    """One Optuna ``RDBStorage`` per database URL and process (it is thread-safe, and each one holds a pool), which
    waits out database outages (:mod:`nas.store.resilient_storage`)."""
    from nas.store.resilient_storage import ResilientRDBStorage

    return call_with_retry(
        lambda: ResilientRDBStorage(normalise_url(url), engine_kwargs=engine_options(url)), "opening Optuna's storage"
    )


@lru_cache(maxsize=16)
def _session_factory(url: str) -> sessionmaker:
    return sessionmaker(get_engine(url), expire_on_commit=False)


def new_session(url: str) -> Session:
    """A session of its own (no I/O yet: it takes a pooled connection at its first query); the caller ends it."""
    return _session_factory(url)()


def end_session(session: Session, commit: bool) -> None:
    """Commit (or roll back), then close: how every session of ours ends."""
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    session = new_session(url)
    try:
        yield session
    except BaseException:
        end_session(session, commit=False)
        raise
    end_session(session, commit=True)


def upgrade(url: str) -> None:
    """Optuna's tables, then ``alembic upgrade head`` for the service tables (idempotent; one transaction on
    PostgreSQL, retried while the database is out, so a service that starts beside its database waits for it).

    Optuna's come first because a migration indexes one of them (0003, remade by 0005 and 0006).
    """
    call_with_retry(lambda: _upgrade_under_lock(url), "upgrading the schema")


def _upgrade_under_lock(url: str) -> None:
    with schema_lock(url):
        optuna_storage(url)
        _upgrade_service_tables(url)


# Any constant shared by every nas process: pg_advisory_lock's key for "the schema is being upgraded".
SCHEMA_LOCK_KEY = 0x55_4E_41_53_5C_E3_A0_01


@contextmanager
def schema_lock(url: str) -> Iterator[None]:
    """One schema upgrade at a time per database. The API and a runner started together on a new database (as
    docker-compose does) both created Alembic's version table, and the second died on a duplicate key; Optuna's
    ``create_all`` races the same way. PostgreSQL: a session advisory lock on a connection of its own. SQLite (one
    machine): an exclusive ``flock`` on a file beside the database. An in-memory database needs none."""
    url = normalise_url(url)
    if url.startswith("postgresql"):
        from sqlalchemy import text

        with get_engine(url).connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            connection.commit()  # the lock belongs to the session, not to this transaction
            try:
                yield
            finally:
                try:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK_KEY})
                    connection.commit()
                except Exception:  # the database went away: close the session for real, which ends its lock
                    connection.invalidate()
        return
    database = get_engine(url).url.database if url.startswith("sqlite") else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    import fcntl

    with open(f"{database}.schema-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_service_schema(url: str) -> None:
    """For commands that read only the service's own tables (``nas studies list``): one indexed read of the
    version row, and the whole :func:`upgrade` only when the schema is behind or absent. Optuna and Alembic stay
    unimported on the fast path (a third of a second of a short command's start-up)."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with get_engine(url).connect() as connection:
            current = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    except SQLAlchemyError:  # no version table yet, or the database is out: upgrade() creates or waits
        current = None
    if current != SCHEMA_HEAD:
        upgrade(url)


def _upgrade_service_tables(url: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_table", VERSION_TABLE)
    with get_engine(url).begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


MARKS_INDEX = "ix_nas_trial_user_attributes_marked"  # made by migration 0003


def remake_marks_index(keys: tuple[str, ...]) -> None:
    """Inside a migration: the partial index on Optuna's ``trial_user_attributes`` over the mark keys ``keys``,
    dropped and made again under the same name (a migration that adds a mark calls it with the new list, its
    downgrade with the old one). Only where the table exists (Optuna creates it after ``alembic upgrade head`` on
    a new database) and the dialect has partial indexes (others would build a full one over every attribute)."""
    import sqlalchemy as sa
    from alembic import op

    table = "trial_user_attributes"
    bind = op.get_bind()
    if bind.dialect.name not in ("postgresql", "sqlite") or not sa.inspect(bind).has_table(table):
        return
    op.drop_index(MARKS_INDEX, table_name=table, if_exists=True)
    where = sa.text("key IN ({})".format(", ".join(f"'{key}'" for key in keys)))
    op.create_index(
        MARKS_INDEX, table, ["key", "trial_id"], postgresql_where=where, sqlite_where=where, if_not_exists=True
    )
