"""Engines and sessions: the one place where SQLite and PostgreSQL differ.

``open_database(url)`` picks the implementation once. Everything else in the store writes
portable SQLAlchemy and relies on two guarantees given here:

- ``write()`` sessions are serialisable enough for "read then update" (claiming a job, checking
  an idempotency key): PostgreSQL rows are locked with ``FOR UPDATE [SKIP LOCKED]`` by the
  caller; SQLite write sessions start with ``BEGIN IMMEDIATE``, which takes the database's single
  write lock up front (SQLite's compiler drops ``FOR UPDATE``, so the same query works on both).
- ``migration_transaction()`` yields a connection holding a database-wide lock, so two
  processes starting at once migrate one after the other.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.sql.dml import Insert

from core.errors import StoreUnavailable

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Any constant will do; it only has to be the same in every loraloop process.
PG_MIGRATION_LOCK_KEY = 0x6C6F72616C6F6F70  # "loraloop"

_WRITE = "loraloop_write"  # execution option marking a write connection


class Database(ABC):
    """An engine plus the behaviours that depend on the backend. Thread-safe; build once."""

    def __init__(self, engine: Engine):
        self.engine = engine
        # A copy of the engine sharing its pool, whose connections carry the write mark.
        self._write_engine = engine.execution_options(**{_WRITE: True})
        self._read_sessions = sessionmaker(engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._write_engine, expire_on_commit=False)

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads only; rolled back at the end."""
        with _unavailable_as_domain_error(self.url), self._read_sessions() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session in one write transaction: committed on success, rolled back on error."""
        with _unavailable_as_domain_error(self.url), self._write_sessions.begin() as session:
            yield session

    @contextmanager
    def migration_transaction(self) -> Iterator[Connection]:
        """A connection in one transaction that holds the database-wide migration lock."""
        with self._write_engine.begin() as conn:
            self._lock_for_migration(conn)
            yield conn

    @abstractmethod
    def _lock_for_migration(self, conn: Connection) -> None:
        """Take a lock that lasts until ``conn``'s transaction ends."""

    @abstractmethod
    def insert_ignoring_duplicates(self, model: type[DeclarativeBase]) -> Insert:
        """``INSERT`` into ``model``'s table that skips rows whose primary key exists."""

    def dispose(self) -> None:
        self.engine.dispose()


@contextmanager
def _unavailable_as_domain_error(url: str) -> Iterator[None]:
    """A lost or refused connection becomes StoreUnavailable (503, retry), not an internal
    error. The pool's pre-ping replaces connections that died while idle; this covers the
    ones that die in use, and a database that is down. Only the driver's first line is kept:
    the full error quotes the statement's parameters (prompts, texts)."""
    try:
        yield
    except DBAPIError as e:
        if not (isinstance(e, OperationalError | InterfaceError) or e.connection_invalidated):
            raise
        lines = str(e.orig).strip().splitlines()
        reason = lines[0] if lines else type(e.orig).__name__
        raise StoreUnavailable(f"the store's database {url} is unavailable: {reason}") from e


class SQLiteDatabase(Database):
    """A SQLite file in WAL mode: readers never block the writer, one writer at a time."""

    def __init__(self, url: str, **engine_kwargs: Any):
        parsed = make_url(url)
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError(
                f"database_url {_shown(url)!r}: use a SQLite file (sqlite:///path/loraloop.db); "
                "an in-memory database cannot be shared by the service's connections"
            )
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, **engine_kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        super().__init__(engine)

    def _lock_for_migration(self, conn: Connection) -> None:
        pass  # the write connection began with BEGIN IMMEDIATE: it holds the write lock

    def insert_ignoring_duplicates(self, model: type[DeclarativeBase]) -> Insert:
        return sqlite.insert(model).on_conflict_do_nothing()


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Take transaction control away from the sqlite3 module (it skips BEGIN before SELECT and
    # DDL); _sqlite_on_begin emits BEGIN itself. Recipe from SQLAlchemy's SQLite dialect docs.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # NORMAL is durable across process crashes in WAL mode (only an OS crash can lose the
        # last commits) and avoids an fsync per commit.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock now, waiting up to busy_timeout. A deferred transaction
    # that reads and then writes can instead fail at once with SQLITE_BUSY when another
    # writer committed in between, which busy_timeout cannot retry.
    immediate = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class PostgresDatabase(Database):
    """PostgreSQL (psycopg 3), shared by several service replicas and job runners."""

    def __init__(self, url: str, **engine_kwargs: Any):
        engine_kwargs.setdefault("pool_pre_ping", True)
        super().__init__(create_engine(url, **engine_kwargs))

    def _lock_for_migration(self, conn: Connection) -> None:
        conn.execute(select(func.pg_advisory_xact_lock(PG_MIGRATION_LOCK_KEY)))

    def insert_ignoring_duplicates(self, model: type[DeclarativeBase]) -> Insert:
        return postgresql.insert(model).on_conflict_do_nothing()


_BACKENDS: dict[str, Callable[..., Database]] = {
    "sqlite": SQLiteDatabase,
    "postgresql": PostgresDatabase,
}


def _shown(url: str) -> str:
    """The URL as messages may show it: a password in it becomes ***."""
    return make_url(url).render_as_string(hide_password=True)


def open_database(url: str, **engine_kwargs: Any) -> Database:
    """The Database for a SQLAlchemy URL (``sqlite:///file`` or ``postgresql+psycopg://...``)."""
    backend = make_url(url).get_backend_name()
    if backend not in _BACKENDS:
        raise ValueError(
            f"database_url {_shown(url)!r}: unsupported backend {backend!r}; "
            "use sqlite or postgresql"
        )
    database = _BACKENDS[backend](url, **engine_kwargs)
    log.info("store database: %s", database.url)
    return database
