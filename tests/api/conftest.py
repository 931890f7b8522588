"""The API in process: ``create_app`` with a real SQLite store and a :class:`FakeRuntime`.

Requests go through ``httpx.ASGITransport`` with the app's lifespan running, so migrations,
the admin key, adoption and the services are the real ones; only the isolation backend is fake.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from sandcastle.api.app import create_app
from sandcastle.config import Settings
from sandcastle.domain.clock import utcnow
from sandcastle.services.auth import new_key_row
from sandcastle.store.db import Database
from sandcastle.store.models import OrgRow, ProjectRow
from sandcastle.wiring import Services
from tests import pgcluster
from tests.fakes import FakeRuntime

#: ``type`` values the error envelope may carry (``org-sandboxes-list.txt``).
ALLOWED_TYPES = frozenset(
    """already_exists_error app_error authentication_error conflict_error aws_error
    configuration_error database_error dynamodb_error e2b_error e2b_rate_limit_error
    expired_signature_error expired_token_error forbidden_error group_error invalid_error
    invalid_flag_error invalid_username_error mail_error member_exists_error
    member_limit_exceeded_error migration_lock_timeout_error not_found_error oauth_config_error
    org_sandbox_capacity_exceeded_error bad_gateway_error gateway_timeout_error s3_error
    server_error task_error stripe_error token_error upgrade_required_error
    usage_limit_exceeded_error user_verification_error validation_error""".split()
)


def write_template(templates_dir: Path, name: str = "python") -> Path:
    """A built template as ``load_template`` reads it: a manifest and a ``rootfs/``."""
    directory = templates_dir / name
    (directory / "rootfs" / "usr").mkdir(parents=True)
    manifest = {
        "name": name,
        "build_id": str(uuid.uuid4()),
        "built_at": "2025-01-01T00:00:00+00:00",
        "recipe_digest": "0" * 64,
        "size_bytes": 4096,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def assert_envelope(response: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    """The control plane's error envelope: ``{code, detail, type, errors?}``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) <= {"code", "detail", "type", "errors"}, body
    assert {"code", "detail", "type"} <= set(body), body
    assert body["code"] == status
    assert body["type"] == type_
    assert type_ in ALLOWED_TYPES
    assert isinstance(body["detail"], str) and body["detail"]
    for item in body.get("errors", []):
        assert set(item) == {"loc", "msg", "type"}, item
        assert isinstance(item["loc"], list)
        assert isinstance(item["msg"], str) and isinstance(item["type"], str)
    return body


@dataclass
class Harness:
    """A running app and what a test needs to reach into it."""

    app: FastAPI
    client: httpx.AsyncClient
    anon: httpx.AsyncClient
    runtime: FakeRuntime
    settings: Settings
    db: Database
    key: str

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    async def create(self, **body: Any) -> dict[str, Any]:
        response = await self.client.post("/v1/sandboxes", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def execute(self, sandbox_id: str, **body: Any) -> dict[str, Any]:
        response = await self.client.post(f"/v1/sandboxes/{sandbox_id}/execute", json=body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def add_tenant(self) -> str:
        """A second organisation with its own project and key; returns that key."""
        now = datetime.now(UTC)
        org = OrgRow(id=str(uuid.uuid4()), slug="other", name="Other", created_at=now)
        project = ProjectRow(
            id=str(uuid.uuid4()), org_id=org.id, key="other", name="Other", created_at=now
        )
        key, row = new_key_row(
            org_id=org.id, project_id=project.id, name="other", role="owner", now=now
        )
        async with self.db.session() as session:
            session.add_all([org, project])
            await session.flush()
            session.add(row)
        return key

    async def add_org(self, slug: str) -> tuple[dict[str, Any], str]:
        """A new org made through the API by the operator (the admin key); returns the org
        and the key of its owner."""
        response = await self.client.post("/v1/orgs", json={"slug": slug})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body["org"], body["key"]["key"]

    def as_key(self, key: str) -> httpx.AsyncClient:
        """A client of the same app that sends ``key`` (close it, or use ``async with``)."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, raise_app_exceptions=False),
            base_url="http://test",
            headers={"Authorization": f"Bearer {key}"},
        )


def make_settings(root: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": root / "data",
        "templates_dir": root / "templates",
        # Tests reconcile by hand, deterministically; the background loop must not race them.
        "reconcile_interval_s": 3600.0,
        # Likewise credit deductions: tests run them with ``services.accounting.run_pass()``.
        "credit_interval_s": 3600.0,
        "agent_connect_timeout_s": 5.0,
        # No warm pool unless a test asks for one: creates stay deterministic.
        "warm_pool": {},
        # Tests poll in tight loops; the rate-limit tests turn the per-key limit on themselves.
        "rate_limit_per_s": 0.0,
        **overrides,
    }
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_app(
    settings: Settings,
    runtime: FakeRuntime,
    clock: Callable[[], datetime] | None = None,
    runtime_reason: str | None = None,
) -> AsyncIterator[Harness]:
    """Start the app's lifespan (migrations, admin key, adoption) and yield clients for it.

    ``clock``: the app's wall clock (lifecycles and metering), for tests that move time.
    """
    db = Database(settings.resolved_database_url)
    app = create_app(
        settings,
        db,
        runtime,
        runtime_reason=runtime_reason,
        clock=clock or utcnow,
    )
    async with app.router.lifespan_context(app):
        key = settings.admin_key_path.read_text().strip()
        # Like a real server, an exception that escapes is a 500 response, not a test crash.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with (
            httpx.AsyncClient(
                transport=transport,
                base_url="http://test",
                headers={"Authorization": f"Bearer {key}"},
            ) as client,
            httpx.AsyncClient(transport=transport, base_url="http://test") as anon,
        ):
            yield Harness(app, client, anon, runtime, settings, db, key)


AppFactory = Callable[..., contextlib.AbstractAsyncContextManager[Harness]]


@pytest.fixture
async def runtime(request: pytest.FixtureRequest) -> AsyncIterator[FakeRuntime]:
    """The fake backend; a module sets ``FAKE_RUNTIME`` for another one (e.g. with memory
    snapshots)."""
    fake: FakeRuntime = getattr(request.module, "FAKE_RUNTIME", FakeRuntime)()
    yield fake
    await fake.shutdown()


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty database at the newest schema, made once and copied into each test."""
    path = tmp_path_factory.mktemp("schema") / "sandcastle.db"

    async def migrate() -> None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            await db.migrate()
        finally:
            await db.aclose()

    asyncio.run(migrate())
    return path


@pytest.fixture(scope="session")
def postgres_template(postgres_url: str) -> str:
    """A database at the newest schema on the run's PostgreSQL, cloned for each test."""
    name = f"schema_{uuid.uuid4().hex[:12]}"

    async def migrate() -> None:
        db = Database(await pgcluster.create_database(postgres_url, name))
        try:
            await db.migrate()
        finally:
            await db.aclose()

    # Asked for from inside a test's event loop (``database_url``), so it runs on its own.
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, migrate()).result()
    return name


#: API modules that run on SQLite only: they exercise request handling (validation, error
#: shapes, limits, streaming, E2B's shapes) over the same store calls the others make on both.
SQLITE_ONLY = frozenset(
    {
        "test_errors_api.py",
        "test_execute_api.py",
        "test_request_limits_api.py",
        "test_processes_api.py",
        "test_e2b_api.py",
        "test_docs_api.py",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    dropped = [
        item
        for item in items
        if item.path.name in SQLITE_ONLY
        and getattr(getattr(item, "callspec", None), "params", {}).get("database_url")
        == "postgresql"
    ]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        gone = {id(item) for item in dropped}
        items[:] = [item for item in items if id(item) not in gone]


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, root: Path) -> AsyncIterator[str]:
    """Every API test runs on both stores: SQLite in the data directory (the default), and a
    database of its own on the run's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{root / 'data' / 'sandcastle.db'}"
        return
    cluster: str = request.getfixturevalue("postgres_url")
    template: str = request.getfixturevalue("postgres_template")
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = await pgcluster.create_database(cluster, name, template=template)
    yield url
    await pgcluster.drop_database(cluster, name)


@pytest.fixture
def root(tmp_path: Path, migrated_db: Path) -> Path:
    write_template(tmp_path / "templates")
    (tmp_path / "data").mkdir()
    # The lifespan still runs the migrations; on an up-to-date schema they are a quick no-op.
    shutil.copyfile(migrated_db, tmp_path / "data" / "sandcastle.db")
    return tmp_path


@pytest.fixture
def start_app(root: Path, runtime: FakeRuntime, database_url: str) -> AppFactory:
    """``async with start_app(**settings_overrides) as h:`` for tests that need other settings."""

    def start(**overrides: Any) -> contextlib.AbstractAsyncContextManager[Harness]:
        clock = overrides.pop("clock", None)
        reason = overrides.pop("runtime_reason", None)
        overrides.setdefault("database_url", database_url)
        return running_app(make_settings(root, **overrides), runtime, clock, reason)

    return start


@pytest.fixture
async def harness(start_app: AppFactory) -> AsyncIterator[Harness]:
    async with start_app() as h:
        yield h


@pytest.fixture
async def sandbox_id(harness: Harness) -> str:
    """A running sandbox of the harness's app."""
    return str((await harness.create())["id"])
