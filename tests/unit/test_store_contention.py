"""The store under contention: SQLite transactions take the write lock at BEGIN and wait for it,
and one that still cannot get it is a :class:`StoreBusyError` (a 504), with nothing written."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from sandcastle.errors import StoreBusyError
from sandcastle.store.db import Database


async def make(path: Path, busy_timeout_ms: int) -> Database:
    db = Database(f"sqlite+aiosqlite:///{path}", busy_timeout_ms=busy_timeout_ms)
    async with db.session() as session:
        await session.execute(sa.text("CREATE TABLE IF NOT EXISTS t (n INTEGER)"))
    return db


async def test_a_read_then_write_transaction_waits_for_a_concurrent_writer(
    tmp_path: Path,
) -> None:
    db = await make(tmp_path / "s.db", busy_timeout_ms=10_000)
    try:
        # Deferred transactions that read and then write would fail at once here (the second's
        # snapshot is stale when it upgrades); immediate ones queue and all commit.
        async def bump() -> None:
            async with db.session() as session:
                count = (await session.execute(sa.text("SELECT count(*) FROM t"))).scalar_one()
                await asyncio.sleep(0.01)
                await session.execute(sa.text("INSERT INTO t VALUES (:n)"), {"n": count})

        await asyncio.gather(*(bump() for _ in range(20)))
        async with db.session() as session:
            rows = (await session.execute(sa.text("SELECT n FROM t ORDER BY n"))).scalars()
            # Serialised: each saw all the ones before it.
            assert list(rows) == list(range(20))
    finally:
        await db.aclose()


async def test_a_lock_held_past_the_timeout_is_a_store_busy_error_and_writes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    db = await make(path, busy_timeout_ms=200)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreBusyError, match="try again"):
            async with db.session() as session:
                await session.execute(sa.text("INSERT INTO t VALUES (1)"))
        other.execute("ROLLBACK")
        async with db.session() as session:
            assert (await session.execute(sa.text("SELECT count(*) FROM t"))).scalar_one() == 0
    finally:
        other.close()
        await db.aclose()
