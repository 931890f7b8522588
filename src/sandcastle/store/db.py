"""The database handle: an async engine, sessions, and migrations to the newest schema."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from sandcastle.errors import StoreBusyError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_MS = 30_000


class Database:
    """Owns the engine; hands out sessions; upgrades the schema on start."""

    def __init__(self, url: str, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(url)
        if url.startswith("sqlite"):
            pragmas = functools.partial(_sqlite_pragmas, busy_timeout_ms=busy_timeout_ms)
            event.listen(self.engine.sync_engine, "connect", pragmas)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin_immediate)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("sqlalchemy.url", self.url)
        config.attributes["configure_logger"] = False
        # "heads": independent migration branches (one per feature) all apply.
        await asyncio.to_thread(command.upgrade, config, "heads")

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed on success and rolled back on error.

        Raises :class:`StoreBusyError` when the store stayed locked past its timeout or picked
        this transaction as a deadlock's victim: the transaction is rolled back whole."""
        try:
            async with self._sessions() as session, session.begin():
                yield session
        except DBAPIError as exc:
            if is_contention(exc):
                raise StoreBusyError(
                    "the database was busy for too long; nothing was changed, try again"
                ) from exc
            raise

    async def aclose(self) -> None:
        await self.engine.dispose()


#: PostgreSQL's SQLSTATEs for a serialization failure, a deadlock and a lock not available.
_PG_CONTENTION = {"40001", "40P01", "55P03"}


def is_contention(exc: DBAPIError) -> bool:
    """A transaction lost to another one (it may be retried), not a bug or a bad row."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code in _PG_CONTENTION:
        return True
    message = str(exc.orig).lower()
    return "database is locked" in message or "database table is locked" in message


def _sqlite_pragmas(dbapi_conn: Any, _record: Any, *, busy_timeout_ms: int) -> None:
    # The driver's own BEGIN is deferred; ``_sqlite_begin_immediate`` issues ours instead.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    # WAL: readers never block the writer; synchronous=FULL so a committed row survives a crash.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # How long a transaction waits for another connection's write lock (the CLI's, another
    # server's): ours are short, so a wait this long means something is wrong.
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    cursor.close()


def _sqlite_begin_immediate(connection: Connection) -> None:
    # A deferred transaction that reads and then writes must upgrade its lock; if another
    # connection wrote meanwhile, SQLite fails the upgrade at once with "database is locked"
    # (waiting could not help: its snapshot is stale), and busy_timeout is not consulted.
    # Taking the write lock at BEGIN makes every transaction wait its turn instead. Reads
    # queue too, but transactions here are a few statements and never span a runtime call.
    connection.exec_driver_sql("BEGIN IMMEDIATE")
