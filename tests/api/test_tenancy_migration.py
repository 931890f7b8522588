"""A database from before tenancy (revision 0002) upgrades with its keys and sandboxes intact."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config

from sandcastle.services.auth import hash_key
from sandcastle.store.db import MIGRATIONS_DIR
from tests.api.conftest import make_settings, running_app, write_template
from tests.fakes import FakeRuntime

KEY = "sc_legacy-admin-key"


def upgrade_to(db: Path, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", f"sqlite+aiosqlite:///{db}")
    config.attributes["configure_logger"] = False
    command.upgrade(config, revision)


async def test_keys_become_members_and_sandboxes_get_uuids(tmp_path: Path) -> None:
    db = tmp_path / "data" / "sandcastle.db"
    db.parent.mkdir()
    write_template(tmp_path / "templates")
    await asyncio.to_thread(upgrade_to, db, "0002")
    with sqlite3.connect(db) as conn:
        at = "2025-01-01 00:00:00.000000"
        conn.execute("INSERT INTO orgs VALUES ('o1', 'default', 'Default', ?)", (at,))
        conn.execute("INSERT INTO projects VALUES ('p1', 'o1', 'default', 'Default', ?)", (at,))
        conn.execute(
            "INSERT INTO api_keys (id, org_id, project_id, name, prefix, key_hash, role, "
            "created_at) VALUES ('k1', 'o1', 'p1', 'admin', 'sc_legacy', ?, 'owner', ?)",
            (hash_key(KEY), at),
        )
        conn.execute(
            "INSERT INTO sandboxes (id, org_id, project_id, status, template, vcpus, memory_mb, "
            "disk_mb, metadata, timeout_action, runtime, created_at, started_at, destroyed_at, "
            "oom_kills_seen, internet) VALUES ('sb_0000000a', 'o1', 'p1', 'destroyed', 'python', "
            "1, 512, 1024, '{}', 'destroy', 'bwrap', ?, ?, '2025-01-01 00:01:00.000000', 0, 0)",
            (at, at),
        )
    settings = make_settings(tmp_path)
    (tmp_path / "data" / "admin.key").write_text(KEY + "\n")  # made at that first start
    runtime = FakeRuntime()
    try:
        async with running_app(settings, runtime) as h:
            (org,) = (await h.client.get("/v1/orgs")).json()["items"]
            assert (org["slug"], org["role"]) == ("default", "owner")
            (item,) = (await h.client.get("/api/v1/org/default/sandboxes")).json()["items"]
            assert item["provider_sandbox_id"] == "sb_0000000a" and len(item["id"]) == 36
            assert item["state"] == "killed" and item["total_runtime_seconds"] == 60
            assert item["build_id"] == "00000000-0000-0000-0000-000000000000"
            assert item["running_credits"] == 0  # nothing before the upgrade is billed
            before = org["credit_balance"]
            await h.services.accounting.run_pass()
            assert (await h.client.get("/v1/orgs/default")).json()["credit_balance"] == before
            created = await h.client.post("/v1/sandboxes", json={})
            assert created.status_code == 201, created.text
    finally:
        await runtime.shutdown()
