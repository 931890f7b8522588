"""A template pinned to a backend: its sandboxes run there, whatever the server's default.

The server's runtime routes between two fakes as ``registry.select_runtime`` routes between
gVisor and bubblewrap: ``fake`` (the default, with memory snapshots) and ``plain`` (without).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from sandcastle.runtime.routing import RoutedRuntime
from sandcastle.runtime.templates.builder import pin_template
from sandcastle.store.models import SandboxRow
from tests.api.conftest import AppFactory, Harness, assert_envelope, write_template
from tests.fakes import FakeRuntime, SnapshottingFakeRuntime


class PlainRuntime(FakeRuntime):
    name = "plain"


@pytest.fixture
def default() -> SnapshottingFakeRuntime:
    return SnapshottingFakeRuntime()


@pytest.fixture
def plain() -> PlainRuntime:
    return PlainRuntime()


@pytest.fixture
async def runtime(
    default: SnapshottingFakeRuntime, plain: PlainRuntime
) -> AsyncIterator[RoutedRuntime]:
    def locate(sandbox_id: str) -> str | None:
        return "plain" if any(s.sandbox_id == sandbox_id for s in plain.launched) else None

    yield RoutedRuntime(
        default, {"plain": plain}, locate=locate, unavailable={"gvisor": "its probe failed"}
    )
    await default.shutdown()
    await plain.shutdown()


@pytest.fixture
def pinned(root: Path) -> str:
    write_template(root / "templates", "pinned")
    pin_template("pinned", root / "templates", "plain")
    return "pinned"


async def test_a_pinned_template_runs_on_its_backend_and_others_on_the_default(
    harness: Harness, pinned: str, default: SnapshottingFakeRuntime, plain: PlainRuntime
) -> None:
    on_plain = await harness.create(template=pinned)
    on_default = await harness.create(template="python")
    assert [s.sandbox_id for s in plain.launched] == [on_plain["id"]]
    assert [s.backend for s in plain.launched] == ["plain"]
    assert [s.sandbox_id for s in default.launched] == [on_default["id"]]
    # Every later call reaches the backend that started the sandbox.
    for sandbox in (on_plain, on_default):
        result = await harness.execute(sandbox["id"], code="print(6 * 7)")
        assert result["logs"]["stdout"] == ["42\n"], result
    listed = (await harness.client.get("/api/v1/org/default/sandboxes")).json()
    providers = {item["provider_sandbox_id"]: item["provider"] for item in listed["items"]}
    assert providers[on_plain["id"]] == "plain"
    assert providers[on_default["id"]] == "fake"
    response = await harness.client.delete(f"/v1/sandboxes/{on_plain['id']}")
    assert response.json()["status"] == "destroyed", response.text
    assert on_plain["id"] in plain.destroyed
    assert on_plain["id"] not in default.destroyed


async def test_what_a_sandbox_may_do_is_what_its_backend_can(harness: Harness, pinned: str) -> None:
    on_plain = await harness.create(template=pinned)
    refused = await harness.client.post(f"/v1/sandboxes/{on_plain['id']}/hibernate")
    body = assert_envelope(refused, 422, "validation_error")
    assert "plain backend" in body["detail"]
    refused = await harness.client.post(
        "/v1/sandboxes",
        json={"template": pinned, "timeout_action": "hibernate"},
    )
    assert "plain backend" in assert_envelope(refused, 422, "validation_error")["detail"]
    on_default = await harness.create(template="python")
    response = await harness.client.post(f"/v1/sandboxes/{on_default['id']}/hibernate")
    assert response.status_code == 200, response.text


async def test_a_template_pinned_to_a_backend_this_server_lacks_is_refused_saying_why(
    harness: Harness, root: Path
) -> None:
    write_template(root / "templates", "strong")
    pin_template("strong", root / "templates", "gvisor")
    refused = await harness.client.post("/v1/sandboxes", json={"template": "strong"})
    detail = assert_envelope(refused, 422, "validation_error")["detail"]
    assert "pinned to gvisor" in detail and "its probe failed" in detail
    listed = await harness.client.get("/v1/sandboxes", params={"template": "strong"})
    assert listed.json()["items"] == []


async def test_templates_and_health_show_pins_and_backends(
    harness: Harness, pinned: str, root: Path, default: SnapshottingFakeRuntime
) -> None:
    templates = (await harness.client.get("/v1/templates")).json()["items"]
    assert {t["name"]: t["runtime"] for t in templates} == {"python": None, "pinned": "plain"}
    health = (await harness.anon.get("/v1/health")).json()
    assert (health["runtime"], health["runtimes"]) == ("fake", ["fake", "plain"])
    # Unpinned again, the next create runs on the default.
    pin_template(pinned, root / "templates", None)
    manifest = json.loads((root / "templates" / pinned / "manifest.json").read_text())
    assert "runtime" not in manifest
    created = await harness.create(template=pinned)
    assert created["id"] in [s.sandbox_id for s in default.launched]
    templates = (await harness.client.get("/v1/templates")).json()["items"]
    assert {t["name"]: t["runtime"] for t in templates}["pinned"] is None


async def test_a_warm_pool_follows_its_templates_pin(
    start_app: AppFactory, pinned: str, root: Path, plain: PlainRuntime
) -> None:
    async with start_app(warm_pool={pinned: 1}) as h:
        (entry,) = await pool_entries(h, pinned, "plain")
        pin_template(pinned, root / "templates", None)
        # The entry on the old backend is never handed out...
        created = await h.create(template=pinned)
        assert created["warm_pool_checkout"] == {"hit": False, "id": f"wp_{pinned}"}
        # ...and is replaced by one on the template's backend now.
        await pool_entries(h, pinned, "fake")
        assert entry in plain.destroyed
        hit = await h.create(template=pinned)
        assert hit["warm_pool_checkout"]["hit"] is True


async def pool_entries(h: Harness, template: str, runtime: str) -> list[str]:
    """The pool's running entries once there is one, all on ``runtime``."""
    for _ in range(500):
        async with h.db.session() as session:
            rows = (
                await session.scalars(
                    select(SandboxRow).where(
                        SandboxRow.pool == template, SandboxRow.status == "running"
                    )
                )
            ).all()
        if rows and all(row.runtime == runtime for row in rows):
            return [row.id for row in rows]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no pool entry of {template} on {runtime}")
