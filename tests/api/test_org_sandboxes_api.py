"""``GET /api/v1/org/{org}/sandboxes`` (``org-sandboxes-list.txt``): every field, the state
mapping and filters, pagination, who sees what, and the error envelope."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.api.conftest import AppFactory, Harness, assert_envelope
from tests.fakeclock import FakeClock
from tests.helpers import RFC3339_Z

ITEM_FIELDS = {
    "billed_credits", "build_id", "build_ref", "created_at", "estimated_total_credits",
    "expires_at", "id", "killed_at", "last_credit_deduction_at", "last_started_at",
    "pause_reason", "project_id", "project_key", "project_name", "provider",
    "provider_sandbox_id", "running_credits", "sandbox_kind", "state", "stopped_at",
    "total_runtime_seconds", "workspace_id", "workspace_key",
}  # fmt: skip
REQUIRED = {
    "build_id", "created_at", "id", "killed_at", "provider", "provider_sandbox_id",
    "sandbox_kind", "state", "total_runtime_seconds", "workspace_key",
}  # fmt: skip
URL = "/api/v1/org/default/sandboxes"


async def listing(h: Harness, **params: Any) -> dict[str, Any]:
    response = await h.client.get(URL, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"items", "next_cursor"}
    return body


def by_provider_id(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["provider_sandbox_id"]: i for i in body["items"]}


async def test_an_item_carries_every_field_of_the_document(harness: Harness) -> None:
    manifest = json.loads(
        (harness.settings.resolved_templates_dir / "python" / "manifest.json").read_text()
    )
    created = await harness.create(timeout_ms=60_000, sandbox_kind="task")
    (item,) = (await listing(harness))["items"]
    assert set(item) == ITEM_FIELDS and REQUIRED <= set(item)
    assert uuid.UUID(item["id"]) and item["id"] != created["id"]
    assert item["provider"] == "fake" and item["provider_sandbox_id"] == created["id"]
    assert item["build_id"] == manifest["build_id"] and item["build_ref"] == "python"
    assert item["sandbox_kind"] == "task" and item["state"] == "running"
    assert item["created_at"] == created["created_at"]
    assert item["last_started_at"] == created["started_at"]
    assert item["expires_at"] == created["expires_at"]
    for name in ("stopped_at", "killed_at", "pause_reason", "last_credit_deduction_at"):
        assert item[name] is None, name
    for name in ("created_at", "last_started_at", "expires_at"):
        assert RFC3339_Z.match(item[name]), name
    projects = (await harness.client.get("/v1/orgs/default/projects")).json()["items"]
    assert (item["project_id"], item["project_key"], item["project_name"]) == (
        projects[0]["id"], "default", "Default",
    )  # fmt: skip
    assert item["workspace_id"] is None and item["workspace_key"] is None
    for name in ("billed_credits", "running_credits", "estimated_total_credits"):
        assert isinstance(item[name], int) and item[name] >= 0
    assert isinstance(item["total_runtime_seconds"], int)


async def test_project_and_workspace_given_at_create_are_listed(harness: Harness) -> None:
    project = (await harness.client.post("/v1/orgs/default/projects", json={"key": "ml"})).json()
    workspace = (
        await harness.client.post(
            "/v1/orgs/default/workspaces", json={"key": "exp-1", "project_id": project["id"]}
        )
    ).json()
    in_workspace = await harness.create(workspace_id=workspace["id"])  # project from workspace
    in_project = await harness.create(project_id=project["id"], sandbox_kind="evaluation")
    plain = await harness.create()
    got = by_provider_id(await listing(harness))
    assert got[in_workspace["id"]]["project_id"] == project["id"]
    assert got[in_workspace["id"]]["project_key"] == "ml"
    assert got[in_workspace["id"]]["workspace_id"] == workspace["id"]
    assert got[in_workspace["id"]]["workspace_key"] == "exp-1"
    assert got[in_project["id"]]["sandbox_kind"] == "evaluation"
    filtered = by_provider_id(await listing(harness, project_id=project["id"]))
    assert set(filtered) == {in_workspace["id"], in_project["id"]}
    assert plain["id"] not in filtered
    # A workspace of another project does not go with an explicit project.
    default_project = got[plain["id"]]["project_id"]
    mismatch = await harness.client.post(
        "/v1/sandboxes", json={"project_id": default_project, "workspace_id": workspace["id"]}
    )
    assert_envelope(mismatch, 422, "validation_error")


async def test_states_map_the_statuses_and_filter(harness: Harness) -> None:
    running = (await harness.create())["id"]
    paused = (await harness.create())["id"]
    destroyed = (await harness.create())["id"]
    failed = (await harness.create())["id"]
    assert (await harness.client.post(f"/v1/sandboxes/{paused}/pause")).status_code == 200
    assert (await harness.client.delete(f"/v1/sandboxes/{destroyed}")).status_code == 200
    await harness.runtime.kill(failed)
    await harness.services.reconciler.reconcile()

    got = by_provider_id(await listing(harness))
    assert {k: v["state"] for k, v in got.items()} == {
        running: "running", paused: "paused", destroyed: "killed", failed: "killed",
    }  # fmt: skip
    assert got[paused]["pause_reason"] == "user" and got[paused]["stopped_at"] is not None
    assert got[destroyed]["killed_at"] is not None and got[destroyed]["expires_at"] is None

    async def states(*values: str) -> set[str]:
        response = await harness.client.get(URL, params=[("state", v) for v in values])
        assert response.status_code == 200, response.text
        return {i["provider_sandbox_id"] for i in response.json()["items"]}

    assert await states("running") == {running}
    assert await states("paused") == {paused}
    assert await states("killed") == {destroyed, failed}
    assert await states("running,paused") == {running, paused}
    assert await states("running", "killed") == {running, destroyed, failed}


@pytest.mark.parametrize(
    "params",
    [
        {"state": "destroyed"},
        {"state": "running,asleep"},
        {"limit": "0"},
        {"limit": "101"},
        {"project_id": "not-a-uuid"},
        {"cursor": "garbage!"},
    ],
)
async def test_bad_parameters_are_a_422_envelope(harness: Harness, params: dict[str, str]) -> None:
    assert_envelope(await harness.client.get(URL, params=params), 422, "validation_error")


async def test_pages_are_newest_first_and_cover_everything_once(harness: Harness) -> None:
    made = [(await harness.create())["id"] for _ in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        page = await listing(harness, limit=3, **({"cursor": cursor} if cursor else {}))
        assert len(page["items"]) <= 3
        seen += [i["provider_sandbox_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(made))
    assert len((await listing(harness))["items"]) == 7  # default limit 50


async def test_members_see_their_own_and_admins_see_all(harness: Harness) -> None:
    base = "/v1/orgs/default"
    mine = (await harness.create())["id"]
    people = {}
    for email, role in (("m@x.test", "member"), ("a@x.test", "admin")):
        member = (
            await harness.client.post(f"{base}/members", json={"email": email, "role": role})
        ).json()
        key = (await harness.client.post(f"{base}/keys", json={"member_id": member["id"]})).json()
        people[role] = key["key"]
    async with harness.as_key(people["member"]) as member:
        theirs = (await member.post("/v1/sandboxes", json={})).json()["id"]
        listed = (await member.get(URL)).json()["items"]
        assert [i["provider_sandbox_id"] for i in listed] == [theirs]
    async with harness.as_key(people["admin"]) as admin:
        listed = (await admin.get(URL)).json()["items"]
        assert {i["provider_sandbox_id"] for i in listed} == {mine, theirs}
    assert {i["provider_sandbox_id"] for i in (await listing(harness))["items"]} == {mine, theirs}


async def test_a_project_scoped_key_lists_its_project_only(harness: Harness) -> None:
    base = "/v1/orgs/default"
    project = (await harness.client.post(f"{base}/projects", json={"key": "p2"})).json()
    key = (await harness.client.post(f"{base}/keys", json={"project_id": project["id"]})).json()
    outside = (await harness.create())["id"]
    async with harness.as_key(key["key"]) as scoped:
        inside = (await scoped.post("/v1/sandboxes", json={})).json()["id"]
        listed = {i["provider_sandbox_id"] for i in (await scoped.get(URL)).json()["items"]}
        assert listed == {inside}
        refused = await scoped.post(
            "/v1/sandboxes",
            json={"project_id": (await listing(harness))["items"][-1]["project_id"]},
        )
        assert_envelope(refused, 403, "forbidden_error")
    assert outside in by_provider_id(await listing(harness))


async def test_unknown_org_or_another_org_is_404_and_no_key_is_401(harness: Harness) -> None:
    await harness.create()
    body = assert_envelope(
        await harness.client.get("/api/v1/org/nope/sandboxes"), 404, "not_found_error"
    )
    assert "nope" in body["detail"]
    _org, key = await harness.add_org("acme")
    async with harness.as_key(key) as other:
        assert_envelope(await other.get(URL), 404, "not_found_error")
        assert (await other.get("/api/v1/org/acme/sandboxes")).json()["items"] == []
    assert_envelope(await harness.anon.get(URL), 401, "authentication_error")


async def test_runtime_seconds_and_timestamps_follow_the_clock(start_app: AppFactory) -> None:
    clock = FakeClock()
    async with start_app(clock=clock) as h:
        sid = (await h.create(timeout_ms=600_000))["id"]
        clock.advance(42.9)
        (item,) = (await listing(h))["items"]
        assert item["total_runtime_seconds"] == 42
        assert item["created_at"] == "2030-01-01T12:00:00Z"
        assert item["expires_at"] == "2030-01-01T12:10:00Z"
        assert (await h.client.post(f"/v1/sandboxes/{sid}/pause")).status_code == 200
        clock.advance(100)
        (item,) = (await listing(h))["items"]
        assert item["total_runtime_seconds"] == 42
        assert item["stopped_at"] == "2030-01-01T12:00:42.900000Z"
