"""Connection pools and the transient/permanent split of database errors."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from app.settings import DatabaseSettings

SCHEMA_SQL = (Path(__file__).parent / "schema.sql").read_text()
log = logging.getLogger(__name__)

# errors that mean "the database is away or busy", worth waiting out, never worth dead-lettering
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.AdminShutdown,
    psycopg.errors.CannotConnectNow,
    psycopg.errors.LockNotAvailable,
)
# errors about the value itself (SQLSTATE 22 data exception, 23 integrity violation, 54 value over a limit)
VALUE_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.errors.DataError,
    psycopg.errors.IntegrityError,
    psycopg.errors.ProgramLimitExceeded,
)


def is_value_error(exc: BaseException) -> bool:
    """The database refuses this value; another value would go through. Only these may be dead-lettered."""
    return isinstance(exc, VALUE_ERRORS)


def is_transient(exc: BaseException) -> bool:
    """Connection-level trouble: retry the same statement later."""
    from psycopg_pool import PoolTimeout

    return isinstance(exc, (*TRANSIENT_ERRORS, PoolTimeout)) and not is_value_error(exc)


def is_database_unavailable(exc: BaseException) -> bool:
    """Any database failure that is not about the value: down, read-only, permissions, missing table, too many
    connections, shutdown. Data must wait for the database to be fixed, never be dead-lettered or refused."""
    from psycopg_pool import PoolTimeout

    return isinstance(exc, (psycopg.Error, PoolTimeout)) and not is_value_error(exc)


def _conninfo(settings: DatabaseSettings) -> str:
    return settings.async_database_url.get_secret_value()


# a peer that vanished without closing (node loss, a dropped route) is noticed within ~25 s instead of the
# kernel's two hours: a statement waiting on it fails as OperationalError and is retried on a new connection
DEAD_PEER_DETECTION = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
                       "tcp_user_timeout": 25_000}


def _kwargs(settings: DatabaseSettings) -> dict:
    # a URL that sets any of these owns dead-peer detection (keepalives=0 included)
    url_owns_it = not DEAD_PEER_DETECTION.keys().isdisjoint(conninfo_to_dict(_conninfo(settings)))
    return ({} if url_owns_it else DEAD_PEER_DETECTION) | {
        "connect_timeout": max(1, int(settings.db_connect_timeout_seconds)), "application_name": "graphql-async"}


def sync_pool(settings: DatabaseSettings) -> ConnectionPool:
    """A pool that does not block start-up: connections come when the database does."""
    return ConnectionPool(
        _conninfo(settings), min_size=settings.db_pool_min_size, max_size=settings.db_pool_max_size,
        kwargs=_kwargs(settings), open=True, timeout=settings.db_connect_timeout_seconds * 2, name="graphql-async",
    )


def async_pool(settings: DatabaseSettings) -> AsyncConnectionPool:
    return AsyncConnectionPool(
        _conninfo(settings), min_size=settings.db_pool_min_size, max_size=settings.db_pool_max_size,
        kwargs=_kwargs(settings) | {"autocommit": True}, open=False, timeout=settings.db_connect_timeout_seconds * 2,
    )


def lazy_commit_pool(settings: DatabaseSettings, *, max_size: int = 1) -> AsyncConnectionPool:
    """A small autocommit pool whose sessions commit without waiting for the WAL flush (LAZY_COMMIT): one
    statement, one round trip, for bookkeeping a crash may lose because it is redone anyway."""
    conninfo = _conninfo(settings)
    return AsyncConnectionPool(
        conninfo, min_size=1, max_size=max_size, open=False, timeout=settings.db_connect_timeout_seconds * 2,
        kwargs=_kwargs(settings) | {"autocommit": True, "options": session_options(conninfo, LAZY_COMMIT)},
    )


# a session that resolves names in the catalog first and nowhere the database's owner can write: the client's
# options win over `ALTER DATABASE/ROLE ... SET search_path` (PostgreSQL's GUC source priority), appended last
PINNED_SEARCH_PATH = "-c search_path=pg_catalog,pg_temp"


# commits that do not wait for the WAL flush: only for work a crash may lose because it is redone anyway
# (a lost cleanup delete: the row is still expired for the next run). PostgreSQL's "asynchronous commit";
# YugabyteDB accepts the setting and commits through Raft regardless.
LAZY_COMMIT = "-c synchronous_commit=off"


def session_options(conninfo: str, extra: str) -> str:
    """The startup `options` libpq would use (the URL's own, else PGOPTIONS, as libpq picks them) with `extra`
    after them (for the same setting, the last -c wins): passing `options=` alone would drop them."""
    own = conninfo_to_dict(conninfo).get("options") or os.environ.get("PGOPTIONS", "")
    return f"{own} {extra}".strip()


def pinned_connect(conninfo: str, **kwargs) -> psycopg.Connection:
    """Connect for the bootstrap's privileged and audit work, with PINNED_SEARCH_PATH after the URL's options."""
    return psycopg.connect(conninfo, options=session_options(conninfo, PINNED_SEARCH_PATH), **kwargs)


def apply_schema(conn: psycopg.Connection) -> None:
    """Create the table, constraints and indexes; safe to run any number of times."""
    with conn.transaction():
        conn.execute(SCHEMA_SQL)
