"""Engines and sessions for the metadata store, and the schema check on open.

SQLite: WAL journal so readers never wait for a writer, a long busy timeout, and write
transactions opened with ``BEGIN IMMEDIATE`` so two pushers cannot both read the same
``last_number`` and then collide when upgrading to a write lock.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import DatabaseBehind, DatabaseError

SQLITE_BUSY_TIMEOUT_S = 60
# Key of the PostgreSQL advisory lock that makes concurrent migrations of one database take turns.
MIGRATION_LOCK_KEY = 0x6C6F72616D6772  # "loramgr"


def _migrations_dir() -> Path:
    import loramgr.migrations

    return Path(loramgr.migrations.__file__).parent


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_migrations_dir()))
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    path = url.split("sqlite:///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (see the "begin" hook).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        _use_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _use_wal(cursor) -> None:
    """Put the file in WAL mode. The mode is stored in the file, so only the first open of a new
    database converts it. The conversion needs the file to itself and SQLite fails it at once,
    without the busy handler, while another connection holds a lock (several processes opening
    a new store together): so retry within the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")  # answers "memory" for :memory:, kept as is
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


class Database:
    """The metadata store behind a URL: a read engine, a write engine and the schema check."""

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        try:
            if self.is_sqlite:
                self.read_engine = _sqlite_engine(url, immediate=False)
                self.write_engine = _sqlite_engine(url, immediate=True)
            else:
                self.read_engine = self.write_engine = create_engine(url, pool_pre_ping=True)
        except Exception as exc:  # bad URL, missing driver
            raise DatabaseError(f"cannot open the metadata store {url!r}: {exc}") from None
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """One transaction: committed at the end of the block, rolled back on any error."""
        with self._write() as session, session.begin():
            yield session

    def current_revision(self) -> str | None:
        with self.write_engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def upgrade(self) -> tuple[str | None, str]:
        """Apply every pending migration; returns (revision before, revision after)."""
        with self.write_engine.begin() as connection:
            _lock_for_migration(connection)
            before = MigrationContext.configure(connection).get_current_revision()
            _upgrade(connection)
        return before, head_revision()

    def ensure_current(self) -> None:
        """Upgrade an empty database; refuse one whose schema is behind this version of loramgr."""
        try:
            revision = self.current_revision()
            if revision is None:
                self._initialise()
            elif revision != head_revision():
                raise DatabaseBehind(f"the registry database is at schema revision {revision}, "
                                     f"this loramgr needs {head_revision()}: run `loramgr db upgrade`")
        except OperationalError as exc:
            raise DatabaseError(f"cannot open the metadata store: {exc.orig}") from None

    def _initialise(self) -> None:
        """Create the schema in an empty database. Several processes may open a fresh database
        at once: they take turns (migration lock), and the later ones find the schema made."""
        with self.write_engine.begin() as connection:
            _lock_for_migration(connection)
            if MigrationContext.configure(connection).get_current_revision() is not None:
                return
            if inspect(connection).get_table_names():
                raise DatabaseBehind(f"{self.url} holds tables but no loramgr schema revision; "
                                     "point LORAMGR_DATABASE_URL at an empty database")
            _upgrade(connection)

    def dispose(self) -> None:
        self.read_engine.dispose()
        self.write_engine.dispose()


def _lock_for_migration(connection: Connection) -> None:
    """Serialise migrations until the transaction ends. SQLite needs nothing: the write
    engine's transactions start with BEGIN IMMEDIATE. PostgreSQL: a transaction-scoped
    advisory lock (DDL alone would race: two CREATE TABLEs of one name both start)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
