"""Engines and write transactions for the two databases the store runs on: a SQLite file (one
machine, several server workers writing it) and PostgreSQL (a team's shared store).

SQLite: WAL journal, so readers (the dashboard) never block the writers; a busy timeout, so workers
wait for each other's write lock instead of failing; foreign keys on (SQLite's default is off). Python's
sqlite3 module would start transactions only before DML, leaving a migration's DDL outside them, so
its own transaction handling is turned off and SQLAlchemy's `begin` issues BEGIN itself: IMMEDIATE for
writes, which takes the write lock at once and so waits its turn under the busy timeout (a deferred
transaction that later needs to write fails with "database is locked" without waiting).

PostgreSQL: the same serialisation, where the store needs it, comes from transaction-scoped advisory
locks (the migration lock; the files lock that keeps `purge` from deleting a file a write is reusing).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

SUPPORTED_BACKENDS = ("sqlite", "postgresql")
POSTGRESQL_DRIVER = "postgresql+psycopg"  # what a plain postgresql:// URL connects with
BUSY_TIMEOUT_MS = 30_000  # a worker waits this long for another's write lock
_WRITE = "dfguard_write"  # execution option: this connection's transactions write
# PostgreSQL advisory lock keys: (the store's namespace, the lock).
_NAMESPACE = 0x64666764  # "dfgd"
MIGRATION_LOCK = 1
FILES_LOCK = 2


def make_engine(url: str) -> Engine:
    """An engine for a SQLite file or a PostgreSQL URL; any other database is refused."""
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise ValueError(
            f"prediction store URL {parsed.render_as_string(hide_password=True)!r}: backend {backend!r} "
            f"is not supported (use {' or '.join(SUPPORTED_BACKENDS)})"
        )
    # NaN is not JSON: refused on the way in, as PostgreSQL would, instead of written by SQLite only.
    serializer = partial(json.dumps, allow_nan=False)
    if backend == "postgresql":
        if parsed.drivername == backend:
            # SQLAlchemy's default PostgreSQL driver is psycopg2; dfguard installs psycopg (3), so the
            # plain `postgresql://` URL the docs show must name it (an explicit `+driver` is kept).
            parsed = parsed.set(drivername=POSTGRESQL_DRIVER)
        return sa.create_engine(parsed, json_serializer=serializer, pool_pre_ping=True)
    database = parsed.database or ""
    if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
        # Each pooled connection would get its own empty database: the writer thread and the readers
        # must share one file.
        raise ValueError("the prediction store needs a SQLite file, not an in-memory database")
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, json_serializer=serializer)
    sa.event.listen(engine, "connect", _sqlite_connect)
    sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's `begin` (below) issues BEGIN
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # WAL is a property of the file, set once: switching needs a lock that busy_timeout does not wait
        # for, so a connection opened while another process writes must not ask again.
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql(
        "BEGIN IMMEDIATE" if connection.get_execution_options().get(_WRITE) else "BEGIN"
    )


@contextmanager
def write_transaction(engine: Engine, lock: int | None = None, shared: bool = False) -> Iterator[Connection]:
    """A transaction that writes, committed when the block ends without an exception.

    On SQLite it holds the database's write lock from the start, which already serialises all writers.
    On PostgreSQL, `lock` (MIGRATION_LOCK, FILES_LOCK) is taken until the transaction ends: `shared`
    by writers that may run side by side, exclusive by the one that must run alone.
    """
    with engine.connect() as connection:
        connection.execution_options(**{_WRITE: True})
        with connection.begin():
            if lock is not None and connection.dialect.name == "postgresql":
                function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
                connection.execute(
                    sa.text(f"SELECT {function}(:namespace, :lock)"), {"namespace": _NAMESPACE, "lock": lock}
                )
            yield connection


def masked_url(url: str) -> str:
    """The URL with any password replaced by ***, for logs and terminals."""
    return sa.make_url(url).render_as_string(hide_password=True)
