"""Database engine and units of work, for SQLite (default) and PostgreSQL.

``Database.read()`` and ``Database.write()`` are the ways services touch the database. A write
unit of work commits once at the end (or rolls back on any exception), so a service's change
and its audit record land together or not at all. One documented exception: the device
session check on every device request (``services.device_api._read_device_row``) runs a
single prebuilt SELECT on a pooled connection without a session, because it is the hot path
and a one-statement read needs no transaction.

SQLite specifics: WAL journal (readers never block the writer), ``busy_timeout`` so concurrent
writers queue instead of failing, foreign keys on, and write transactions opened with
``BEGIN IMMEDIATE``. A deferred transaction that reads and then writes can fail with
SQLITE_BUSY without waiting when another writer committed in between; taking the write lock
up front makes writers wait their turn instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["Database"]

_MIGRATIONS = Path(__file__).parent / "migrations"


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            if self.url.database not in (None, "", ":memory:"):
                # The device poll reads on the event loop (api/device.py): a checkout must never
                # wait for a connection, so the pool has no upper bound (a SQLite connection is
                # a file handle; the threads that can hold one at once bound their number).
                # Sixteen stay open, so a busy thread pool does not reconnect for every request.
                kwargs.update(pool_size=16, max_overflow=-1)
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(
            self.engine.execution_options(fw_write=True), expire_on_commit=False
        )

    def __repr__(self) -> str:
        return f"<Database {self.url.render_as_string(hide_password=True)}>"

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._writer() as session, session.begin():
            yield session

    def migrate(self) -> None:
        """Bring the schema to the newest revision (run on every server start)."""
        from alembic import command
        from sqlalchemy import text

        # Several replicas may start at once: serialise their migrations. SQLite: the
        # BEGIN IMMEDIATE write lock; PostgreSQL: a transaction-scoped advisory lock.
        engine = self.engine.execution_options(fw_write=True)
        with engine.begin() as conn:
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(724300101)"))
            command.upgrade(alembic_config(conn), "head")

    def before_commit(self, hook: Callable[[Session], None]) -> None:
        """Run ``hook`` inside every write transaction just before it commits (used to sign
        TUF metadata in the same transaction as the change it authorises).

        SQLAlchemy also fires ``before_commit`` when a savepoint (``begin_nested``) is
        released; those are skipped, so a transaction that takes 2,000 savepoints still signs
        once, at its real commit, instead of 2,000 times."""

        def outermost_only(session: Session) -> None:
            if not session.in_nested_transaction():
                hook(session)

        event.listen(self._writer, "before_commit", outermost_only)

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(connection: Any = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (see below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get("fw_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
