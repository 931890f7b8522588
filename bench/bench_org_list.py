"""``GET /api/v1/org/{org}/sandboxes`` over 10,000 sandboxes, in process.

Run by hand from the repository root::

    .venv/bin/python -m bench.bench_org_list [--rows 10000] [--rounds 5]

Seeds ``--rows`` sandbox rows straight into a fresh SQLite database (one bulk insert; a mix of
running, paused, destroyed and errored sandboxes over three projects, a fifth created by a plain
member), then pages through the list with ``limit=100`` through ``httpx.ASGITransport`` against
``create_app`` (the fake runtime: no sandbox is started), as the owner (every sandbox), as the
member (their own) and with ``state=running``. Prints the median and p95 per page beside the
baselines: the same page's bare SQL on the same file through ``sqlite3`` (with its query plan),
and an authenticated request that reads one row (``GET /v1/orgs``): what any request costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, select

from bench.common import p95
from sandcastle.api.app import create_app
from sandcastle.config import Settings
from sandcastle.store.db import Database
from sandcastle.store.models import MemberRow, OrgRow, ProjectRow, SandboxRow
from tests.fakes import FakeRuntime

URL = "/api/v1/org/default/sandboxes"
#: The page's SQL as the service issues it (first page; later pages add the keyset bound).
PAGE_SQL = """
SELECT s.*, p.key, p.name, w.key FROM sandboxes AS s
LEFT OUTER JOIN projects AS p ON p.id = s.project_id
LEFT OUTER JOIN workspaces AS w ON w.id = s.workspace_id
WHERE s.org_id = ? {extra}
ORDER BY s.created_at DESC, s.id DESC LIMIT 101
"""
KEYSET = "AND (s.created_at < ? OR (s.created_at = ? AND s.id < ?))"


def write_template(templates: Path) -> None:
    rootfs = templates / "python" / "rootfs"
    rootfs.mkdir(parents=True)
    manifest = {
        "name": "python",
        "build_id": str(uuid.uuid4()),
        "built_at": "2025-01-01T00:00:00+00:00",
        "recipe_digest": "0" * 64,
        "size_bytes": 0,
    }
    (templates / "python" / "manifest.json").write_text(json.dumps(manifest))


async def seed(db: Database, rows: int) -> tuple[str, str]:
    """Insert ``rows`` sandboxes into org ``default``; returns (org id, a member id)."""
    async with db.session() as session:
        org = (await session.scalars(select(OrgRow).where(OrgRow.slug == "default"))).one()
        owner = (await session.scalars(select(MemberRow))).one()
        default_project = (await session.scalars(select(ProjectRow))).one()
    now = datetime.now(UTC)
    rng = random.Random(1)
    projects = [default_project.id]
    async with db.session() as session:
        for key in ("ml", "web"):
            project = ProjectRow(
                id=str(uuid.uuid4()), org_id=org.id, key=key, name=key, created_at=now
            )
            session.add(project)
            projects.append(project.id)
    member_id = await plain_member(db, org.id)
    statuses = ["destroyed"] * 6 + ["error"] + ["running"] * 2 + ["paused"]
    values: list[dict[str, Any]] = []
    for i in range(rows):
        created = now - timedelta(seconds=rows - i)
        status = rng.choice(statuses)
        values.append(
            {
                "id": f"sb_{i:08x}",
                "uuid": str(uuid.uuid4()),
                "org_id": org.id,
                "project_id": rng.choice(projects),
                "member_id": member_id if i % 5 == 0 else owner.id,
                "status": status,
                "template": "python",
                "build_id": str(uuid.uuid4()),
                "vcpus": 1,
                "memory_mb": 512,
                "disk_mb": 1024,
                "metadata_json": {},
                "timeout_ms": 300_000,
                "timeout_at": created + timedelta(minutes=5),
                "timeout_action": "destroy",
                "runtime": "fake",
                "created_at": created,
                "started_at": created,
                "destroyed_at": created + timedelta(seconds=30) if status == "destroyed" else None,
                "paused_at": created + timedelta(seconds=10) if status == "paused" else None,
                "killed_at": created + timedelta(seconds=30)
                if status in ("destroyed", "error")
                else None,
                "meter_since": created,
                "meter_units": rng.randrange(10**12),
                "billed_credits": rng.randrange(10**4),
                "runtime_ms": rng.randrange(10**6),
                "oom_kills_seen": 0,
                "internet": False,
                "sandbox_kind": "runtime",
            }
        )
    started = time.perf_counter()
    async with db.session() as session:
        await session.execute(insert(SandboxRow), values)
    print(f"seeded {rows} sandboxes in {(time.perf_counter() - started) * 1000:.0f} ms")
    return org.id, member_id


async def plain_member(db: Database, org_id: str) -> str:
    from sandcastle.store.models import UserRow

    now = datetime.now(UTC)
    async with db.session() as session:
        user = UserRow(id=str(uuid.uuid4()), email="m@bench.test", name="m", created_at=now)
        session.add(user)
        await session.flush()
        member = MemberRow(
            id=str(uuid.uuid4()), org_id=org_id, user_id=user.id, role="member", created_at=now
        )
        session.add(member)
    return member.id


async def pages(client: httpx.AsyncClient, params: dict[str, str]) -> tuple[list[float], int]:
    """Page through everything; the time of each page (ms) and the items seen."""
    times: list[float] = []
    seen = 0
    cursor = None
    while True:
        query = {**params, "limit": "100", **({"cursor": cursor} if cursor else {})}
        started = time.perf_counter()
        response = await client.get(URL, params=query)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        body = response.json()
        seen += len(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return times, seen


def sql_pages(path: Path, org_id: str, extra: str, args: tuple[Any, ...]) -> list[float]:
    """The same pages as bare SQL through ``sqlite3``: the floor under the endpoint."""
    times: list[float] = []
    with sqlite3.connect(path) as conn:
        bound: tuple[Any, ...] | None = None
        while True:
            sql = PAGE_SQL.format(extra=extra + (" " + KEYSET if bound else ""))
            started = time.perf_counter()
            rows = conn.execute(sql, (org_id, *args, *(bound or ()))).fetchall()
            times.append((time.perf_counter() - started) * 1000)
            if len(rows) <= 100:
                return times
            last = rows[99]
            created, row_id = last[_column(conn, "created_at")], last[_column(conn, "id")]
            bound = (created, created, row_id)


def _column(conn: sqlite3.Connection, name: str) -> int:
    names = [r[1] for r in conn.execute("PRAGMA table_info(sandboxes)")]
    return names.index(name)


def plan(path: Path, org_id: str, extra: str, args: tuple[Any, ...]) -> str:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "EXPLAIN QUERY PLAN " + PAGE_SQL.format(extra=extra), (org_id, *args)
        ).fetchall()
    return "; ".join(str(r[-1]) for r in rows)


def report(label: str, endpoint: list[float], sql: list[float], seen: int) -> None:
    print(
        f"{label:<22} pages {len(endpoint) // max(1, ROUNDS):>4}  items {seen:>6}  "
        f"endpoint median {statistics.median(endpoint):6.2f} ms  p95 {p95(endpoint):6.2f} ms   "
        f"bare SQL median {statistics.median(sql):5.2f} ms  p95 {p95(sql):5.2f} ms"
    )


ROUNDS = 5


async def main(rows: int, rounds: int) -> None:
    global ROUNDS
    ROUNDS = rounds
    with tempfile.TemporaryDirectory(prefix="bench-org-list-") as tmp:
        root = Path(tmp)
        write_template(root / "templates")
        settings = Settings(
            data_dir=root / "data",
            templates_dir=root / "templates",
            warm_pool={},
            reconcile_interval_s=3600,
            credit_interval_s=3600,
            rate_limit_per_s=0,
        )
        db_path = root / "data" / "sandcastle.db"
        db = Database(f"sqlite+aiosqlite:///{db_path}")
        runtime = FakeRuntime()
        app = create_app(settings, db, runtime)
        async with app.router.lifespan_context(app):
            key = settings.admin_key_path.read_text().strip()
            org_id, member_id = await seed(db, rows)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://bench",
                headers={"Authorization": f"Bearer {key}"},
            ) as owner:
                made = await owner.post(
                    "/v1/orgs/default/keys", json={"member_id": member_id, "name": "bench"}
                )
                member_key = made.json()["key"]
                async with httpx.AsyncClient(
                    transport=transport,
                    base_url="http://bench",
                    headers={"Authorization": f"Bearer {member_key}"},
                ) as member:
                    cases = [
                        ("owner, all", owner, {}, "", ()),
                        ("member, own", member, {}, "AND s.member_id = ?", (member_id,)),
                        (
                            "owner, state=running",
                            owner,
                            {"state": "running"},
                            "AND s.status IN (?, ?)",
                            ("running", "creating"),
                        ),
                    ]
                    await pages(owner, {})  # warm up
                    floor: list[float] = []
                    for _ in range(200):
                        started = time.perf_counter()
                        (await owner.get("/v1/orgs")).raise_for_status()
                        floor.append((time.perf_counter() - started) * 1000)
                    print(
                        f"{'floor: GET /v1/orgs':<22} an authenticated request that reads one "
                        f"row: median {statistics.median(floor):.2f} ms  p95 {p95(floor):.2f} ms"
                    )
                    for label, client, params, extra, args in cases:
                        endpoint: list[float] = []
                        sql: list[float] = []
                        seen = 0
                        for _ in range(rounds):
                            times, seen = await pages(client, params)
                            endpoint += times
                            sql += sql_pages(db_path, org_id, extra, args)
                        report(label, endpoint, sql, seen)
                        print(f"{'':<22} plan: {plan(db_path, org_id, extra, args)}")
        await runtime.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    asyncio.run(main(options.rows, options.rounds))
