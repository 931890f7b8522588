"""``/v1/sandboxes``: the sandbox object of ``sandbox-get.txt``, listing, lifecycle, reconciliation."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from sandcastle.domain.sandbox import SandboxStatus, TimeoutAction
from sandcastle.errors import AgentUnavailableError
from sandcastle.runtime.base import LaunchSpec
from sandcastle.runtime.channel import AgentLink
from sandcastle.services.reconciler import Reconciler
from sandcastle.store.models import SandboxRow
from sandcastle.waiting import until
from sandcastle.wiring import build_services
from tests.api.conftest import AppFactory, Harness, assert_envelope
from tests.fakes import FakeRuntime
from tests.helpers import parse_time


async def list_all(client: httpx.AsyncClient, limit: int) -> tuple[list[str], int]:
    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get("/v1/sandboxes", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"items", "next_cursor"}
        assert len(page["items"]) <= limit
        pages += 1
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen, pages


# --- create and get -------------------------------------------------------------------------


async def test_create_answers_with_the_documented_sandbox_object(harness: Harness) -> None:
    body = await harness.create()
    assert re.fullmatch(r"sb_[0-9a-f]{8}", body["id"])
    assert body["status"] == "running"
    assert body["config"] == {"vcpus": 1, "memory_mb": 512, "disk_mb": 1024}
    assert body["template"] == "python"
    assert body["metadata"] == {}
    assert body["timeout_ms"] == 300_000
    assert body["timeout_action"] == "destroy"
    created, started = parse_time(body["created_at"]), parse_time(body["started_at"])
    assert created <= started
    assert parse_time(body["timeout_at"]) == started + timedelta(milliseconds=300_000)
    assert body["expires_at"] == body["timeout_at"]
    # Only while paused, only when a warm pool was considered, only when in error.
    for absent in ("snapshot_id", "warm_pool_checkout", "status_reason"):
        assert absent not in body


async def test_sandboxes_start_a_few_at_a_time_and_the_rest_wait_their_turn(
    start_app: AppFactory, runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    launch = runtime.launch
    starting = peak = 0

    async def slow_launch(spec: LaunchSpec) -> AgentLink:
        nonlocal starting, peak
        starting += 1
        peak = max(peak, starting)
        try:
            await asyncio.sleep(0.05)
            return await launch(spec)
        finally:
            starting -= 1

    monkeypatch.setattr(runtime, "launch", slow_launch)
    async with start_app(starts_max_concurrent=2) as h:
        answers = await asyncio.gather(*(h.client.post("/v1/sandboxes", json={}) for _ in range(6)))
        assert [a.status_code for a in answers] == [201] * 6
    assert peak == 2


async def test_create_launches_the_template_with_the_resolved_config(harness: Harness) -> None:
    body = await harness.create(
        vcpus=2,
        memory_mb=1024,
        disk_mb=2048,
        timeout_ms=60_000,
        cwd="/home/user/project",
        metadata={"owner": "agent-7", "nested": {"list": [1, {"x": None}]}, "n": 1.5},
    )
    assert body["config"] == {"vcpus": 2, "memory_mb": 1024, "disk_mb": 2048}
    assert body["timeout_ms"] == 60_000
    assert body["cwd"] == "/home/user/project"
    assert body["metadata"] == {"owner": "agent-7", "nested": {"list": [1, {"x": None}]}, "n": 1.5}
    [spec] = harness.runtime.launched
    assert spec.sandbox_id == body["id"]
    assert spec.rootfs == harness.settings.resolved_templates_dir / "python" / "rootfs"
    assert (spec.vcpus, spec.memory_mb, spec.disk_mb) == (2, 1024, 2048)
    assert spec.pids_max == harness.settings.pids_max
    assert spec.cwd == "/home/user/project"
    # The agent really dialed the link and introduced itself.
    link = harness.runtime.link(body["id"])
    assert link is not None and link.connected
    assert link.hello is not None and link.hello["sandbox_id"] == body["id"]


async def test_get_returns_what_create_returned(harness: Harness) -> None:
    created = await harness.create(metadata={"k": "v"})
    got = await harness.client.get(f"/v1/sandboxes/{created['id']}")
    assert got.status_code == 200
    assert got.json() == created


async def test_unknown_sandbox_is_a_404_envelope(harness: Harness) -> None:
    response = await harness.client.get("/v1/sandboxes/sb_00000000")
    assert assert_envelope(response, 404, "not_found_error") == {
        "code": 404,
        "detail": "sandbox sb_00000000 not found",
        "type": "not_found_error",
    }


async def test_another_tenants_sandbox_does_not_exist_for_you(harness: Harness) -> None:
    mine = await harness.create()
    other_key = await harness.add_tenant()
    other = {"Authorization": f"Bearer {other_key}"}
    for method in ("GET", "DELETE"):
        response = await harness.anon.request(method, f"/v1/sandboxes/{mine['id']}", headers=other)
        assert_envelope(response, 404, "not_found_error")
    executed = await harness.anon.post(
        f"/v1/sandboxes/{mine['id']}/execute", json={"code": "1"}, headers=other
    )
    assert executed.status_code == 404
    listed = await harness.anon.get("/v1/sandboxes", headers=other)
    assert listed.json() == {"items": [], "next_cursor": None}
    assert (await harness.client.get(f"/v1/sandboxes/{mine['id']}")).json()["status"] == "running"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"memory_mb": "lots"}, ["body", "memory_mb"]),
        ({"vcpus": 0}, ["body", "vcpus"]),
        ({"template": ""}, ["body", "template"]),
        ({"timeout_action": "explode"}, ["body", "timeout_action"]),
        ({"colour": "blue"}, ["body", "colour"]),
        ({"metadata": []}, ["body", "metadata"]),
    ],
)
async def test_create_validation_errors_name_the_field(
    harness: Harness, body: dict[str, object], loc: list[str]
) -> None:
    response = await harness.client.post("/v1/sandboxes", json=body)
    envelope = assert_envelope(response, 422, "validation_error")
    assert [error["loc"] for error in envelope["errors"]] == [loc]
    assert harness.runtime.launched == []


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({"memory_mb": 10**7}, "memory_mb"),
        ({"memory_mb": 64}, "memory_mb"),
        ({"vcpus": 64}, "vcpus"),
        ({"disk_mb": 10**7}, "disk_mb"),
        ({"timeout_ms": 999}, "timeout_ms"),
        ({"timeout_ms": 86_400_001}, "timeout_ms"),
    ],
)
async def test_values_outside_server_bounds_are_refused_before_launch(
    harness: Harness, body: dict[str, object], name: str
) -> None:
    response = await harness.client.post("/v1/sandboxes", json=body)
    envelope = assert_envelope(response, 422, "validation_error")
    assert envelope["detail"].startswith(f"{name} must be between")
    assert harness.runtime.launched == []
    assert (await harness.client.get("/v1/sandboxes")).json()["items"] == []


async def test_unknown_template_is_404(harness: Harness) -> None:
    response = await harness.client.post("/v1/sandboxes", json={"template": "nope"})
    body = assert_envelope(response, 404, "not_found_error")
    assert "nope" in body["detail"]
    assert harness.runtime.launched == []


async def test_hibernate_is_refused_naming_the_backend(harness: Harness) -> None:
    response = await harness.client.post("/v1/sandboxes", json={"timeout_action": "hibernate"})
    body = assert_envelope(response, 422, "validation_error")
    assert "hibernate" in body["detail"]
    assert "fake backend" in body["detail"]
    assert harness.runtime.launched == []
    assert (await harness.client.get("/v1/sandboxes")).json()["items"] == []


# --- list -----------------------------------------------------------------------------------


async def test_empty_list(harness: Harness) -> None:
    response = await harness.client.get("/v1/sandboxes")
    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


async def test_list_is_newest_first_and_pages_cover_everything_once(harness: Harness) -> None:
    ids = [(await harness.create())["id"] for _ in range(5)]
    newest_first = list(reversed(ids))
    everything = (await harness.client.get("/v1/sandboxes")).json()
    assert [item["id"] for item in everything["items"]] == newest_first
    assert everything["next_cursor"] is None
    for limit, expected_pages in ((1, 5), (2, 3), (5, 1), (200, 1)):
        seen, pages = await list_all(harness.client, limit)
        assert seen == newest_first, limit
        assert pages == expected_pages, limit


async def test_list_items_are_full_sandbox_objects(harness: Harness) -> None:
    created = await harness.create(metadata={"a": 1})
    listed = (await harness.client.get("/v1/sandboxes")).json()["items"]
    assert listed == [created]


async def test_cursor_is_stable_while_sandboxes_are_created(harness: Harness) -> None:
    first, second = (await harness.create())["id"], (await harness.create())["id"]
    page = (await harness.client.get("/v1/sandboxes", params={"limit": 1})).json()
    assert [item["id"] for item in page["items"]] == [second]
    await harness.create()  # newer than the cursor: must not shift the next page
    rest = await harness.client.get(
        "/v1/sandboxes", params={"limit": 1, "cursor": page["next_cursor"]}
    )
    assert [item["id"] for item in rest.json()["items"]] == [first]
    assert rest.json()["next_cursor"] is None


@pytest.mark.parametrize("limit", ["0", "-1", "201", "1000", "ten", "1.5"])
async def test_limit_outside_1_to_200_is_a_422_envelope(harness: Harness, limit: str) -> None:
    response = await harness.client.get("/v1/sandboxes", params={"limit": limit})
    body = assert_envelope(response, 422, "validation_error")
    assert [error["loc"] for error in body["errors"]] == [["query", "limit"]]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "%%%",
        _b64(b"not json"),
        _b64(json.dumps({"a": 1}).encode()),
        _b64(json.dumps([1, 2]).encode()),
        _b64(json.dumps(["yesterday", "sb_00000000"]).encode()),
        _b64(json.dumps(["2025-01-01T00:00:00+00:00", "sb_0", "extra"]).encode()),
    ],
)
async def test_bad_cursor_is_a_422_envelope(harness: Harness, cursor: str) -> None:
    response = await harness.client.get("/v1/sandboxes", params={"cursor": cursor})
    body = assert_envelope(response, 422, "validation_error")
    assert "cursor" in body["detail"]


async def test_cursor_with_a_naive_timestamp_is_a_422(harness: Harness) -> None:
    cursor = _b64(json.dumps(["2025-01-01T00:00:00", "sb_00000000"]).encode())
    response = await harness.client.get("/v1/sandboxes", params={"cursor": cursor})
    assert_envelope(response, 422, "validation_error")


# --- destroy --------------------------------------------------------------------------------


async def test_destroy_keeps_the_record_and_releases_the_runtime(harness: Harness) -> None:
    sandbox_id = (await harness.create())["id"]
    agent = harness.runtime.agent(sandbox_id)
    deleted = await harness.client.delete(f"/v1/sandboxes/{sandbox_id}")
    assert deleted.status_code == 200
    assert deleted.json()["status"] == "destroyed"
    assert sandbox_id in harness.runtime.destroyed
    assert harness.runtime.link(sandbox_id) is None
    assert await harness.runtime.list_sandboxes() == []
    assert not (await harness.runtime.poll(sandbox_id)).alive
    assert agent.contexts == {}
    got = await harness.client.get(f"/v1/sandboxes/{sandbox_id}")
    assert got.json()["status"] == "destroyed"
    listed = (await harness.client.get("/v1/sandboxes")).json()["items"]
    assert [(s["id"], s["status"]) for s in listed] == [(sandbox_id, "destroyed")]


async def test_destroy_is_idempotent(harness: Harness) -> None:
    sandbox_id = (await harness.create())["id"]
    first = await harness.client.delete(f"/v1/sandboxes/{sandbox_id}")
    second = await harness.client.delete(f"/v1/sandboxes/{sandbox_id}")
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()


async def test_destroy_unknown_is_404(harness: Harness) -> None:
    response = await harness.client.delete("/v1/sandboxes/sb_00000000")
    assert_envelope(response, 404, "not_found_error")


async def test_destroy_an_errored_sandbox(harness: Harness) -> None:
    sandbox_id = (await harness.create())["id"]
    await harness.runtime.kill(sandbox_id)
    await harness.services.reconciler.reconcile()
    deleted = await harness.client.delete(f"/v1/sandboxes/{sandbox_id}")
    assert deleted.status_code == 200
    assert deleted.json()["status"] == "destroyed"


# --- launch failures: a sandbox never stays ``creating`` ------------------------------------


async def _only_sandbox(harness: Harness) -> dict[str, object]:
    listed = (await harness.client.get("/v1/sandboxes")).json()["items"]
    assert len(listed) == 1, listed
    only: dict[str, object] = listed[0]
    return only


async def test_runtime_failure_makes_the_sandbox_error(harness: Harness) -> None:
    harness.runtime.fail_launch = True
    response = await harness.client.post("/v1/sandboxes", json={})
    assert_envelope(response, 500, "server_error")
    sandbox = await _only_sandbox(harness)
    assert sandbox["status"] == "error"
    assert sandbox["status_reason"] == "start failed: injected launch failure"
    assert sandbox["id"] in harness.runtime.destroyed  # whatever was set up is undone


async def test_os_error_during_launch_makes_the_sandbox_error(harness: Harness) -> None:
    harness.runtime.fail_launch = PermissionError(13, "Permission denied")
    response = await harness.client.post("/v1/sandboxes", json={})
    assert response.status_code == 500
    sandbox = await _only_sandbox(harness)
    assert sandbox["status"] == "error"
    assert "Permission denied" in str(sandbox["status_reason"])


async def test_unexpected_launch_exception_still_makes_the_sandbox_error(
    harness: Harness,
) -> None:
    harness.runtime.fail_launch = ValueError("a bug in the backend")
    response = await harness.client.post("/v1/sandboxes", json={})
    assert_envelope(response, 500, "server_error")
    assert (await _only_sandbox(harness))["status"] == "error"


async def test_agent_that_never_connects_makes_the_sandbox_error(
    start_app: AppFactory, runtime: FakeRuntime
) -> None:
    runtime.agent_connects = False
    async with start_app(agent_connect_timeout_s=0.1) as harness:
        response = await harness.client.post("/v1/sandboxes", json={})
        body = assert_envelope(response, 502, "bad_gateway_error")
        assert "did not connect within 0.1 s" in body["detail"]
        sandbox = await _only_sandbox(harness)
        assert sandbox["status"] == "error"
        assert str(sandbox["status_reason"]).startswith("start failed: the agent of sandbox")
        assert sandbox["id"] in runtime.destroyed
        assert runtime.link(str(sandbox["id"])) is None


async def test_a_request_waiting_for_an_agent_answers_409_when_its_sandbox_is_destroyed(
    harness: Harness,
) -> None:
    sandbox_id = (await harness.create())["id"]
    await harness.runtime.stop_agent(sandbox_id)
    link = harness.runtime.link(sandbox_id)
    assert link is not None
    assert await until(lambda: not link.connected, timeout_s=5)
    waiting = asyncio.create_task(
        harness.client.post(f"/v1/sandboxes/{sandbox_id}/execute", json={"code": "1"})
    )
    await asyncio.sleep(0.2)  # it waits for the agent to redial
    assert (await harness.client.delete(f"/v1/sandboxes/{sandbox_id}")).status_code == 200
    async with asyncio.timeout(5):  # not the 10 s it would wait for a redial
        response = await waiting
    body = assert_envelope(response, 409, "conflict_error")
    assert re.search("is (being )?destroyed", body["detail"]), body


# --- reconciliation -------------------------------------------------------------------------


async def test_reconcile_marks_a_sandbox_whose_processes_died(harness: Harness) -> None:
    dead, alive = (await harness.create())["id"], (await harness.create())["id"]
    await harness.runtime.kill(dead)
    await harness.services.reconciler.reconcile()
    got = (await harness.client.get(f"/v1/sandboxes/{dead}")).json()
    assert got["status"] == "error"
    assert got["status_reason"] == "the sandbox's processes exited unexpectedly"
    assert dead in harness.runtime.destroyed
    assert (await harness.client.get(f"/v1/sandboxes/{alive}")).json()["status"] == "running"
    assert alive not in harness.runtime.destroyed
    await harness.services.reconciler.reconcile()  # a second pass changes nothing
    assert (await harness.client.get(f"/v1/sandboxes/{dead}")).json() == got


async def test_reconcile_applies_timeout_deadlines(harness: Harness) -> None:
    short = await harness.create(timeout_ms=1000)
    long = await harness.create(timeout_ms=600_000)
    deadline = parse_time(short["timeout_at"])

    def service_at(now: datetime) -> Reconciler:
        return build_services(
            harness.settings, harness.db, harness.runtime, clock=lambda: now
        ).reconciler

    await service_at(deadline - timedelta(milliseconds=1)).reconcile()
    assert (await harness.client.get(f"/v1/sandboxes/{short['id']}")).json()["status"] == "running"

    await service_at(deadline).reconcile()
    expired = (await harness.client.get(f"/v1/sandboxes/{short['id']}")).json()
    assert expired["status"] == "destroyed"
    assert expired["status_reason"] == "timeout"
    assert short["id"] in harness.runtime.destroyed
    assert (await harness.client.get(f"/v1/sandboxes/{long['id']}")).json()["status"] == "running"
    async with harness.db.session() as session:
        row = await session.get(SandboxRow, short["id"])
        assert row is not None and row.destroyed_at == deadline


async def test_a_create_left_unfinished_is_abandoned_at_its_deadline(harness: Harness) -> None:
    # The create's processes run, but its last write never landed (a store error, a cancelled
    # task): the record says ``creating`` and nobody will finish it.
    body = await harness.create()
    async with harness.db.session() as session:
        row = await session.get(SandboxRow, body["id"])
        assert row is not None
        row.status, created = "creating", row.created_at
    deadline = created + timedelta(seconds=harness.settings.create_deadline_s)

    def reconciler_at(now: datetime) -> Reconciler:
        return build_services(
            harness.settings, harness.db, harness.runtime, clock=lambda: now
        ).reconciler

    await reconciler_at(deadline - timedelta(seconds=1)).reconcile()
    assert (await harness.client.get(f"/v1/sandboxes/{body['id']}")).json()["status"] == (
        "creating"
    )
    assert body["id"] not in harness.runtime.destroyed
    await reconciler_at(deadline).reconcile()
    got = (await harness.client.get(f"/v1/sandboxes/{body['id']}")).json()
    assert got["status"] == "error"
    assert got["status_reason"] == "the create did not finish within 300 s"
    assert body["id"] in harness.runtime.destroyed


async def test_timeout_of_destroyed_sandbox_is_left_alone(harness: Harness) -> None:
    short = await harness.create(timeout_ms=1000)
    await harness.client.delete(f"/v1/sandboxes/{short['id']}")
    later = parse_time(short["timeout_at"]) + timedelta(hours=1)
    await build_services(
        harness.settings, harness.db, harness.runtime, clock=lambda: later
    ).reconciler.reconcile()
    got = (await harness.client.get(f"/v1/sandboxes/{short['id']}")).json()
    assert got["status"] == "destroyed" and "status_reason" not in got


# --- server restart: re-adoption ------------------------------------------------------------


async def test_restart_readopts_live_sandboxes_and_marks_the_rest(
    start_app: AppFactory, runtime: FakeRuntime
) -> None:
    async with start_app() as first:
        survivor = (await first.create())["id"]
        victim = (await first.create())["id"]
        ctx = (await first.execute(survivor, code="kept = 'yes'"))["context_id"]
        key = first.key
    # While the server is down, one sandbox dies and one create was left half-done.
    await runtime.kill(victim)
    async with first.db.session() as session:
        template = await session.get(SandboxRow, survivor)
        assert template is not None
        session.add(
            SandboxRow(
                id="sb_0000abcd",
                org_id=template.org_id,
                project_id=template.project_id,
                status=SandboxStatus.CREATING.value,
                template="python",
                vcpus=1,
                memory_mb=512,
                disk_mb=1024,
                metadata_json={},
                timeout_ms=1000,
                timeout_action=TimeoutAction.DESTROY.value,
                runtime="fake",
                created_at=template.created_at,
                oom_kills_seen=0,
            )
        )
    await first.db.aclose()

    async with start_app() as second:
        assert second.key == key  # the admin key is minted once
        got = {s["id"]: s for s in (await second.client.get("/v1/sandboxes")).json()["items"]}
        assert got[survivor]["status"] == "running"
        assert got[victim]["status"] == "error"
        assert got["sb_0000abcd"]["status"] == "error"
        assert "restarted" in got["sb_0000abcd"]["status_reason"]
        # The agent redials the new server's link and the context's state is still there.
        link = runtime.link(survivor)
        assert link is not None
        await link.wait_connected(5)
        after = await second.execute(survivor, code="kept", context_id=ctx)
        assert after["items"] == [{"is_primary": True, "text": "'yes'"}]


async def test_agent_link_survives_an_agent_restart(harness: Harness) -> None:
    sandbox_id = (await harness.create())["id"]
    await harness.runtime.restart_agent(sandbox_id)
    result = await harness.execute(sandbox_id, code="6 * 7")
    assert result["items"] == [{"is_primary": True, "text": "42"}]
    link = harness.runtime.link(sandbox_id)
    assert link is not None
    await link.aclose()
    with pytest.raises(AgentUnavailableError):
        await link.call("ping", {})


async def test_rows_and_runtime_agree_after_a_mixed_workload(harness: Harness) -> None:
    kept = (await harness.create())["id"]
    gone = (await harness.create())["id"]
    await harness.client.delete(f"/v1/sandboxes/{gone}")
    async with harness.db.session() as session:
        rows = {row.id: row.status for row in (await session.scalars(select(SandboxRow))).all()}
    assert rows == {kept: "running", gone: "destroyed"}
    assert await harness.runtime.list_sandboxes() == [kept]


async def test_health_needs_no_key_and_names_the_backend(harness: Harness) -> None:
    response = await harness.anon.get("/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["runtime"] == "fake"
    assert body["runtime_reason"] is None
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", body["version"])


async def test_health_says_why_the_backend_was_chosen(start_app: AppFactory) -> None:
    async with start_app(runtime_reason="gvisor unavailable: runsc not found (runsc)") as h:
        body = (await h.anon.get("/v1/health")).json()
    assert body["runtime_reason"] == "gvisor unavailable: runsc not found (runsc)"
