"""Engines for SQLite and PostgreSQL, set up for a threaded server and several processes."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from metalform.store.errors import StoreError

#: How long SQLite waits for another writer before giving up with "database is locked".
SQLITE_BUSY_TIMEOUT_SECONDS = 30.0
#: Execution option naming a write transaction; on SQLite it begins with BEGIN IMMEDIATE.
WRITE_OPTION = "metalform_write"


def normalize_url(url: str) -> URL:
    """The SQLAlchemy URL of `sqlite:///path` or `postgresql://...`, with our PostgreSQL driver.

    `postgres://` (Heroku style) and a bare `postgresql://` both mean psycopg 3, the one
    PostgreSQL driver this project depends on.
    """
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"invalid database URL: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend == "sqlite":
        if parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory":
            # every pooled connection would see its own empty database
            raise StoreError("an in-memory SQLite database cannot be shared; give a file path")
    else:
        raise StoreError(
            f"unsupported database {parsed.drivername!r}: use sqlite:///PATH or postgresql://..."
        )
    return parsed


def create_store_engine(url: URL, *, pool: bool = True) -> Engine:
    """An engine for `url`; `pool=False` gives one connection per checkout (for locks)."""
    options: dict[str, Any] = {}
    if not pool:
        options["poolclass"] = NullPool
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
        engine = create_engine(url, **options)
        _configure_sqlite(engine)
        return engine
    options["pool_pre_ping"] = True
    return create_engine(url, **options)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the sqlite3 module, whose legacy mode begins
        # transactions late (only before DML); SQLAlchemy's "begin" event below emits BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
            # WAL: readers never block the writer and the writer never blocks readers, which a
            # threaded server streaming events needs. NORMAL is durable enough with WAL.
            _enable_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A write transaction takes the write lock at BEGIN, waiting up to the busy timeout.
        # A deferred transaction that reads and then writes would instead fail at once with
        # "database is locked" when another writer got in between (SQLite cannot wait there
        # without risking a deadlock).
        if connection.get_execution_options().get(WRITE_OPTION):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")


def _enable_wal(cursor: Any) -> None:
    """Switch a database to WAL, waiting for the others that connect to it at the same time.

    Changing the journal mode needs the database to itself, and SQLite answers "database is
    locked" at once, without its busy handler, while another connection holds it (replicas
    of a server starting together on a new database): so retry, up to the busy timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_SECONDS
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
