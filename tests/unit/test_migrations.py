"""The Alembic migrations produce exactly the schema the models describe, with one head."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from sandcastle.store.db import MIGRATIONS_DIR, Database
from sandcastle.store.models import Base


def test_one_head() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1


def test_migrated_schema_matches_the_models(tmp_path: Path) -> None:
    path = tmp_path / "schema.db"

    async def migrate() -> None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            await db.migrate()
        finally:
            await db.aclose()

    asyncio.run(migrate())
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    # SQLite reports FLOAT for a Double column; a type-name difference is not drift.
    # Column changes come as lists of tuples; everything else as one tuple.
    changes = [c for d in diff for c in (d if isinstance(d, list) else [d])]
    drift = [c for c in changes if c[0] != "modify_type"]
    assert drift == []
