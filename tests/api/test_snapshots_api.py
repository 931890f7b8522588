"""Memory snapshots through the API: hibernate and resume, ``auto_resume``, ``timeout_action:
hibernate``, snapshots and forks, templates, and the 422 of a backend without snapshots."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandcastle.store.models import SandboxRow
from tests.api.conftest import AppFactory, Harness, assert_envelope, make_settings, running_app
from tests.fakeclock import FakeClock
from tests.fakes import FakeRuntime, SnapshottingFakeRuntime
from tests.helpers import until

#: A backend with memory snapshots.
FAKE_RUNTIME = SnapshottingFakeRuntime


@pytest.fixture
def fake(harness: Harness) -> SnapshottingFakeRuntime:
    assert isinstance(harness.runtime, SnapshottingFakeRuntime)
    return harness.runtime


@pytest.fixture
async def plain(root: Path, database_url: str) -> AsyncIterator[Harness]:
    """An app over a backend without memory snapshots (like bwrap)."""
    backend = FakeRuntime()
    try:
        async with running_app(make_settings(root, database_url=database_url), backend) as h:
            yield h
    finally:
        await backend.shutdown()


async def post_ok(client: httpx.AsyncClient, url: str, status: int = 200) -> dict[str, Any]:
    response = await client.post(url)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


async def get(h: Harness, sandbox_id: str) -> dict[str, Any]:
    response = await h.client.get(f"/v1/sandboxes/{sandbox_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def row_of(h: Harness, sandbox_id: str) -> SandboxRow:
    async with h.db.session() as session:
        row = await session.get(SandboxRow, sandbox_id)
    assert row is not None
    return row


async def with_context(h: Harness, **create: Any) -> tuple[str, str]:
    """A running sandbox with a context holding ``x = 41``: (sandbox id, context id)."""
    sandbox_id = (await h.create(**create))["id"]
    result = await h.execute(sandbox_id, code="x = 41")
    return sandbox_id, result["context_id"]


async def hibernate(h: Harness, sandbox_id: str) -> dict[str, Any]:
    return await post_ok(h.client, f"/v1/sandboxes/{sandbox_id}/hibernate")


def image(h: Harness, image_id: str) -> Path:
    return h.settings.data_dir / "snapshots" / image_id


async def gated(h: Harness, sandbox_id: str, context_id: str) -> asyncio.Task[httpx.Response]:
    """An execution in flight (waiting on gate ``g``) in the sandbox."""
    task = asyncio.create_task(
        h.client.post(
            f"/v1/sandboxes/{sandbox_id}/execute",
            json={"code": "# gate: g\n1", "context_id": context_id},
        )
    )
    agent = h.runtime.agent(sandbox_id)

    async def waiting() -> bool:
        return agent.waiting == 1

    await until(waiting, "the execution waits on its gate")
    return task


# --- hibernate and resume ---------------------------------------------------------------------


async def test_hibernate_saves_the_memory_and_ends_the_processes(
    harness: Harness, fake: SnapshottingFakeRuntime
) -> None:
    sandbox_id, _ = await with_context(harness)
    body = await hibernate(harness, sandbox_id)
    assert body["status"] == "paused"
    assert body["snapshot_id"].startswith("snap_")
    assert body["timeout_at"] is None and body["expires_at"] is None
    assert image(harness, body["snapshot_id"]).is_dir()
    assert fake.checkpoints == [(sandbox_id, image(harness, body["snapshot_id"]), False)]
    assert not (await fake.poll(sandbox_id)).alive
    assert (await row_of(harness, sandbox_id)).pause_reason == "user"
    # GET shows snapshot_id while hibernated, also through the field mask.
    assert (await get(harness, sandbox_id))["snapshot_id"] == body["snapshot_id"]
    masked = await harness.client.get(
        f"/v1/sandboxes/{sandbox_id}", params={"fields": "id,snapshot_id"}
    )
    assert masked.json() == {"id": sandbox_id, "snapshot_id": body["snapshot_id"]}
    again = await harness.client.post(f"/v1/sandboxes/{sandbox_id}/hibernate")
    assert_envelope(again, 409, "conflict_error")


async def test_resume_restores_a_hibernated_sandbox_with_its_contexts(
    harness: Harness, fake: SnapshottingFakeRuntime
) -> None:
    sandbox_id, context_id = await with_context(harness)
    image_id = (await hibernate(harness, sandbox_id))["snapshot_id"]
    body = await post_ok(harness.client, f"/v1/sandboxes/{sandbox_id}/resume")
    assert body["status"] == "running"
    assert "snapshot_id" not in body and "snapshot_id" not in await get(harness, sandbox_id)
    assert body["timeout_at"] is not None  # a new deadline from the resume
    assert not image(harness, image_id).exists()
    assert [spec.sandbox_id for spec, _ in fake.restores] == [sandbox_id]
    result = await harness.execute(sandbox_id, code="x + 1", context_id=context_id)
    assert result["items"][0]["text"] == "42"
    row = await row_of(harness, sandbox_id)
    assert (row.snapshot_id, row.pause_reason, row.paused_at) == (None, None, None)


async def test_a_frozen_sandbox_has_no_snapshot_id_and_is_thawed_to_hibernate(
    harness: Harness, fake: SnapshottingFakeRuntime
) -> None:
    sandbox_id, context_id = await with_context(harness)
    paused = await post_ok(harness.client, f"/v1/sandboxes/{sandbox_id}/pause")
    assert paused["status"] == "paused" and "snapshot_id" not in paused
    body = await hibernate(harness, sandbox_id)  # the fake refuses to save frozen processes
    assert body["status"] == "paused" and body["snapshot_id"].startswith("snap_")
    await post_ok(harness.client, f"/v1/sandboxes/{sandbox_id}/resume")
    result = await harness.execute(sandbox_id, code="x", context_id=context_id)
    assert result["items"][0]["text"] == "41"


async def test_a_hibernated_sandbox_is_never_marked_dead_adopted_or_an_orphan(
    start_app: AppFactory, runtime: SnapshottingFakeRuntime
) -> None:
    async with start_app() as h:
        sandbox_id, context_id = await with_context(h)
        image_id = (await hibernate(h, sandbox_id))["snapshot_id"]
        assert sandbox_id in await runtime.list_sandboxes()  # its layer is still there
        await h.services.reconciler.reconcile()
    async with start_app() as h:  # a restart: adoption must leave it alone
        await h.services.reconciler.reconcile()
        body = await get(h, sandbox_id)
        assert (body["status"], body["snapshot_id"]) == ("paused", image_id)
        assert sandbox_id not in runtime.destroyed
        await post_ok(h.client, f"/v1/sandboxes/{sandbox_id}/resume")
        result = await h.execute(sandbox_id, code="x", context_id=context_id)
        assert result["items"][0]["text"] == "41"


async def test_destroying_a_hibernated_sandbox_deletes_its_image(
    harness: Harness, fake: SnapshottingFakeRuntime
) -> None:
    sandbox_id, _ = await with_context(harness)
    image_id = (await hibernate(harness, sandbox_id))["snapshot_id"]
    deleted = await harness.client.delete(f"/v1/sandboxes/{sandbox_id}")
    assert deleted.status_code == 200 and deleted.json()["status"] == "destroyed"
    assert "snapshot_id" not in deleted.json()
    assert not image(harness, image_id).exists()
    assert (await row_of(harness, sandbox_id)).snapshot_id is None
    assert sandbox_id in fake.destroyed


async def test_a_failed_restore_leaves_the_sandbox_in_error(
    harness: Harness, fake: SnapshottingFakeRuntime
) -> None:
    sandbox_id, _ = await with_context(harness)
    image_id = (await hibernate(harness, sandbox_id))["snapshot_id"]
    fake.fail_restore = True
    response = await harness.client.post(f"/v1/sandboxes/{sandbox_id}/resume")
    assert_envelope(response, 500, "server_error")
    body = await get(harness, sandbox_id)
    assert body["status"] == "error"
    assert "restore failed" in body["status_reason"]
    assert "snapshot_id" not in body
    assert not image(harness, image_id).exists()
    assert sandbox_id not in await fake.list_sandboxes()


async def test_a_server_without_snapshots_keeps_hibernated_sandboxes_for_later(
    start_app: AppFactory, root: Path, database_url: str
) -> None:
    async with start_app() as h:
        sandbox_id, _ = await with_context(h)
        image_id = (await hibernate(h, sandbox_id))["snapshot_id"]
    backend = FakeRuntime()
    try:
        async with running_app(make_settings(root, database_url=database_url), backend) as h:
            refused = await h.client.post(f"/v1/sandboxes/{sandbox_id}/resume")
            assert_envelope(refused, 409, "conflict_error")
            body = await get(h, sandbox_id)
            assert (body["status"], body["snapshot_id"]) == ("paused", image_id)
            assert image(h, image_id).is_dir()
    finally:
        await backend.shutdown()


# --- auto_resume --------------------------------------------------------------------------------


async def test_agent_requests_to_a_hibernated_sandbox_are_409_without_auto_resume(
    harness: Harness,
) -> None:
    sandbox_id, context_id = await with_context(harness)
    assert (await get(harness, sandbox_id))["auto_resume"] is False
    await hibernate(harness, sandbox_id)
    base = f"/v1/sandboxes/{sandbox_id}"
    for response in (
        await harness.client.post(f"{base}/execute", json={"code": "1"}),
        await harness.client.post(f"{base}/execute", json={"code": "1", "context_id": context_id}),
        await harness.client.post(f"{base}/contexts", json={"language": "python"}),
        await harness.client.get(f"{base}/files", params={"path": "/home/user"}),
        await harness.client.post(f"{base}/snapshots"),
    ):
        body = assert_envelope(response, 409, "conflict_error")
        assert "hibernated" in body["detail"]
    assert (await get(harness, sandbox_id))["status"] == "paused"


async def test_auto_resume_restores_once_for_concurrent_requests(
    harness: Harness, fake: SnapshottingFakeRuntime
) -> None:
    sandbox_id, context_id = await with_context(harness, auto_resume=True)
    assert (await get(harness, sandbox_id))["auto_resume"] is True
    await hibernate(harness, sandbox_id)
    results = await asyncio.gather(
        *(harness.execute(sandbox_id, code="x + 1", context_id=context_id) for _ in range(3))
    )
    assert [r["items"][0]["text"] for r in results] == ["42"] * 3
    assert len(fake.restores) == 1
    body = await get(harness, sandbox_id)
    assert body["status"] == "running" and "snapshot_id" not in body


async def test_queued_runs_resume_a_hibernated_sandbox_only_with_auto_resume(
    harness: Harness,
) -> None:
    async def run_status(sandbox_id: str, run_id: str) -> str:
        response = await harness.client.get(f"/v1/sandboxes/{sandbox_id}/code/runs/{run_id}")
        status: str = response.json()["status"]
        return status

    async def submit(sandbox_id: str, context_id: str) -> str:
        response = await harness.client.post(
            f"/v1/sandboxes/{sandbox_id}/code/runs",
            json={"code": "x + 1", "context_id": context_id},
        )
        assert response.status_code == 202, response.text
        run_id: str = response.json()["id"]
        return run_id

    waking, waking_ctx = await with_context(harness, auto_resume=True)
    sleeping, sleeping_ctx = await with_context(harness)
    await hibernate(harness, waking)
    await hibernate(harness, sleeping)
    woken_run = await submit(waking, waking_ctx)
    queued_run = await submit(sleeping, sleeping_ctx)

    async def woken_done() -> bool:
        return await run_status(waking, woken_run) == "succeeded"

    await until(woken_done, "the run resumed its sandbox and succeeded")
    assert (await get(harness, waking))["status"] == "running"
    await asyncio.sleep(0.05)
    assert await run_status(sleeping, queued_run) == "queued"
    assert (await get(harness, sleeping))["status"] == "paused"
    await post_ok(harness.client, f"/v1/sandboxes/{sleeping}/resume")
    harness.services.run_dispatcher.wake()

    async def queued_done() -> bool:
        return await run_status(sleeping, queued_run) == "succeeded"

    await until(queued_done, "the queued run ran once its sandbox was resumed")


# --- timeout_action: hibernate ------------------------------------------------------------------


async def test_the_deadline_hibernates_and_a_resume_starts_a_new_one(
    start_app: AppFactory, runtime: SnapshottingFakeRuntime
) -> None:
    clock = FakeClock()
    async with start_app(clock=clock) as h:
        sandbox_id, context_id = await with_context(
            h, timeout_ms=60_000, timeout_action="hibernate"
        )
        clock.advance(59)
        await h.services.reconciler.reconcile()
        assert (await get(h, sandbox_id))["status"] == "running"
        clock.advance(2)
        await h.services.reconciler.reconcile()
        body = await get(h, sandbox_id)
        assert (body["status"], body["timeout_at"]) == ("paused", None)
        assert body["snapshot_id"].startswith("snap_")
        assert (await row_of(h, sandbox_id)).pause_reason == "timeout"
        clock.advance(3600)  # no deadline while hibernated: nothing happens
        await h.services.reconciler.reconcile()
        assert (await get(h, sandbox_id))["status"] == "paused"
        assert sandbox_id not in runtime.destroyed
        resumed = await post_ok(h.client, f"/v1/sandboxes/{sandbox_id}/resume")
        deadline = clock.now + timedelta(seconds=60)
        assert resumed["timeout_at"] == deadline.isoformat().replace("+00:00", "Z")
        result = await h.execute(sandbox_id, code="x", context_id=context_id)
        assert result["items"][0]["text"] == "41"


async def test_a_busy_sandbox_is_hibernated_at_the_first_pass_after_it_is_idle(
    start_app: AppFactory, runtime: SnapshottingFakeRuntime
) -> None:
    clock = FakeClock()
    async with start_app(clock=clock) as h:
        sandbox_id, context_id = await with_context(
            h, timeout_ms=60_000, timeout_action="hibernate"
        )
        task = await gated(h, sandbox_id, context_id)
        clock.advance(61)
        await h.services.reconciler.reconcile()
        assert (await get(h, sandbox_id))["status"] == "running"  # busy: tried again later
        runtime.agent(sandbox_id).gates["g"].set()
        assert (await task).status_code == 200
        await h.services.reconciler.reconcile()
        assert (await get(h, sandbox_id))["status"] == "paused"


async def test_a_sandbox_that_cannot_be_saved_at_its_deadline_is_destroyed(
    start_app: AppFactory, runtime: SnapshottingFakeRuntime
) -> None:
    clock = FakeClock()
    async with start_app(clock=clock) as h:
        sandbox_id = (await h.create(timeout_ms=60_000, timeout_action="hibernate"))["id"]
        await runtime.kill(sandbox_id)  # nothing left to save
        clock.advance(61)
        await h.services.reconciler.reconcile()
        body = await get(h, sandbox_id)
        assert (body["status"], body["status_reason"]) == ("destroyed", "timeout")
        assert list((h.settings.data_dir / "snapshots").iterdir()) == []


# --- snapshots ----------------------------------------------------------------------------------


async def test_snapshot_create_get_list_delete(
    harness: Harness, fake: SnapshottingFakeRuntime
) -> None:
    sandbox_id, context_id = await with_context(harness, metadata={"team": "a"})
    body = await post_ok(harness.client, f"/v1/sandboxes/{sandbox_id}/snapshots", 201)
    assert body["id"].startswith("snap_")
    assert body["sandbox_id"] == sandbox_id and body["template"] == "python"
    assert body["size_bytes"] > 0
    assert body["config"] == {"vcpus": 1, "memory_mb": 512, "disk_mb": 1024}
    assert body["contexts"] == [{"id": context_id, "language": "python", "cwd": "/home/user"}]
    assert body["metadata"] == {"team": "a"}
    assert body["created_at"].endswith("Z")
    assert fake.checkpoints[-1] == (sandbox_id, image(harness, body["id"]), True)
    # The sandbox runs on.
    assert (await harness.execute(sandbox_id, code="x", context_id=context_id))["items"][0][
        "text"
    ] == "41"
    got = await harness.client.get(f"/v1/snapshots/{body['id']}")
    assert got.status_code == 200 and got.json() == body

    more = [await post_ok(harness.client, f"/v1/sandboxes/{sandbox_id}/snapshots", 201)]
    more.append(await post_ok(harness.client, f"/v1/sandboxes/{sandbox_id}/snapshots", 201))
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = (await harness.client.get("/v1/snapshots", params=params)).json()
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted([body["id"], *(s["id"] for s in more)])
    assert len(seen) == 3

    deleted = await harness.client.delete(f"/v1/snapshots/{body['id']}")
    assert deleted.status_code == 204
    assert not image(harness, body["id"]).exists()
    assert_envelope(await harness.client.get(f"/v1/snapshots/{body['id']}"), 404, "not_found_error")
    gone = await harness.client.delete(f"/v1/snapshots/{body['id']}")
    assert_envelope(gone, 404, "not_found_error")


async def test_only_a_running_idle_sandbox_can_be_snapshotted(harness: Harness) -> None:
    sandbox_id, context_id = await with_context(harness)
    url = f"/v1/sandboxes/{sandbox_id}/snapshots"
    task = await gated(harness, sandbox_id, context_id)
    busy = assert_envelope(await harness.client.post(url), 409, "conflict_error")
    assert "running code" in busy["detail"]
    hibernating = await harness.client.post(f"/v1/sandboxes/{sandbox_id}/hibernate")
    assert_envelope(hibernating, 409, "conflict_error")
    harness.runtime.agent(sandbox_id).gates["g"].set()
    assert (await task).status_code == 200
    assert list(image(harness, "x").parent.iterdir()) == []  # refused saves left nothing
    await post_ok(harness.client, f"/v1/sandboxes/{sandbox_id}/pause")
    assert_envelope(await harness.client.post(url), 409, "conflict_error")
    await harness.client.delete(f"/v1/sandboxes/{sandbox_id}")
    assert_envelope(await harness.client.post(url), 409, "conflict_error")


# --- forks --------------------------------------------------------------------------------------


async def test_two_forks_of_one_snapshot_run_independently(
    harness: Harness, fake: SnapshottingFakeRuntime
) -> None:
    sandbox_id, context_id = await with_context(
        harness, vcpus=2, memory_mb=1024, cwd="/home/user/work", metadata={"a": 1, "b": 1}
    )
    await harness.execute(
        sandbox_id, code="write_file('notes.txt', 'saved')", context_id=context_id
    )
    snapshot = await post_ok(harness.client, f"/v1/sandboxes/{sandbox_id}/snapshots", 201)
    forks = []
    for _ in range(2):
        forks.append(
            await harness.create(snapshot_id=snapshot["id"], metadata={"b": 2}, timeout_ms=120_000)
        )
    for fork in forks:
        assert fork["id"] != sandbox_id and fork["status"] == "running"
        assert fork["source_snapshot_id"] == snapshot["id"]
        assert fork["config"] == {"vcpus": 2, "memory_mb": 1024, "disk_mb": 1024}
        assert (fork["template"], fork["cwd"]) == ("python", "/home/user/work")
        assert fork["metadata"] == {"a": 1, "b": 2}
        assert fork["timeout_ms"] == 120_000
        assert "warm_pool_checkout" not in fork and "snapshot_id" not in fork
        (context,) = (await harness.client.get(f"/v1/sandboxes/{fork['id']}/contexts")).json()[
            "items"
        ]
        assert context["id"] != context_id and context["language"] == "python"
        renames = [p for m, p in fake.agent(fork["id"]).requests if m == "context.rename"]
        assert renames == [{"ids": {context_id: context["id"]}}]
        fork["context_id"] = context["id"]
        content = await harness.client.get(
            f"/v1/sandboxes/{fork['id']}/files/content",
            params={"path": "/home/user/work/notes.txt"},
        )
        assert content.status_code == 200 and content.text == "saved"
    first, second = forks
    await harness.execute(first["id"], code="x = 100", context_id=first["context_id"])
    for sid, ctx, value in (
        (second["id"], second["context_id"], "41"),
        (sandbox_id, context_id, "41"),
        (first["id"], first["context_id"], "100"),
    ):
        assert (await harness.execute(sid, code="x", context_id=ctx))["items"][0]["text"] == value
    # A fork outlives its snapshot.
    assert (await harness.client.delete(f"/v1/snapshots/{snapshot['id']}")).status_code == 204
    after = await harness.execute(first["id"], code="x + 1", context_id=first["context_id"])
    assert after["items"][0]["text"] == "101"


async def test_a_fork_takes_template_config_and_network_from_the_snapshot(
    harness: Harness,
) -> None:
    sandbox_id, _ = await with_context(harness)
    snapshot = await post_ok(harness.client, f"/v1/sandboxes/{sandbox_id}/snapshots", 201)
    for field, value in (
        ("template", "python"),
        ("vcpus", 2),
        ("memory_mb", 1024),
        ("cwd", "/tmp"),
        ("network", {"internet": True}),
    ):
        response = await harness.client.post(
            "/v1/sandboxes", json={"snapshot_id": snapshot["id"], field: value}
        )
        body = assert_envelope(response, 422, "validation_error")
        assert body["errors"][0]["loc"] == ["body", field]
    missing = await harness.client.post("/v1/sandboxes", json={"snapshot_id": "snap_0"})
    assert_envelope(missing, 404, "not_found_error")


async def test_a_fork_is_admitted_like_a_create_and_fails_cleanly(
    harness: Harness, fake: SnapshottingFakeRuntime
) -> None:
    sandbox_id, _ = await with_context(harness)
    snapshot = await post_ok(harness.client, f"/v1/sandboxes/{sandbox_id}/snapshots", 201)
    limits = await harness.client.patch(
        "/v1/orgs/default/limits", json={"max_concurrent_sandboxes": 1}
    )
    assert limits.status_code == 200, limits.text
    full = await harness.client.post("/v1/sandboxes", json={"snapshot_id": snapshot["id"]})
    assert_envelope(full, 429, "org_sandbox_capacity_exceeded_error")
    await harness.client.patch("/v1/orgs/default/limits", json={"max_concurrent_sandboxes": 10})
    fake.fail_restore = True
    failed = await harness.client.post("/v1/sandboxes", json={"snapshot_id": snapshot["id"]})
    assert_envelope(failed, 500, "server_error")
    listed = (await harness.client.get("/v1/sandboxes", params={"status": "error"})).json()
    (errored,) = listed["items"]
    assert errored["source_snapshot_id"] == snapshot["id"]
    assert errored["status_reason"].startswith("start failed")
    assert image(harness, snapshot["id"]).is_dir()  # the snapshot is intact
    fake.fail_restore = False
    assert (await harness.create(snapshot_id=snapshot["id"]))["status"] == "running"


# --- templates ----------------------------------------------------------------------------------


async def test_templates_are_listed_and_deleted_only_when_nothing_needs_them(
    harness: Harness,
) -> None:
    (python,) = (await harness.client.get("/v1/templates")).json()["items"]
    assert set(python) == {
        "name", "template_id", "public", "defaults", "build_id", "built_at", "size_bytes",
        "snapshots", "runtime",
    }  # fmt: skip
    assert (python["name"], python["size_bytes"], python["snapshots"]) == ("python", 4096, 0)
    assert (python["template_id"], python["public"]) == ("python", True)
    sandbox_id, _ = await with_context(harness)
    snapshot = await post_ok(harness.client, f"/v1/sandboxes/{sandbox_id}/snapshots", 201)
    (python,) = (await harness.client.get("/v1/templates")).json()["items"]
    assert python["snapshots"] == 1

    body = assert_envelope(
        await harness.client.delete("/v1/templates/python"), 409, "conflict_error"
    )
    assert "snapshots" in body["detail"]
    await harness.client.delete(f"/v1/snapshots/{snapshot['id']}")
    body = assert_envelope(
        await harness.client.delete("/v1/templates/python"), 409, "conflict_error"
    )
    assert "live sandboxes" in body["detail"]
    await hibernate(harness, sandbox_id)  # a hibernated sandbox needs it too
    assert_envelope(await harness.client.delete("/v1/templates/python"), 409, "conflict_error")

    member = await harness.client.post(
        "/v1/orgs/default/members", json={"email": "m@example.com", "role": "member"}
    )
    key = await harness.client.post(
        "/v1/orgs/default/keys", json={"member_id": member.json()["id"]}
    )
    async with harness.as_key(key.json()["key"]) as as_member:
        refused = await as_member.delete("/v1/templates/python")
        assert_envelope(refused, 403, "forbidden_error")
    # Another org's owner neither: templates are shared by every org.
    _, other_owner = await harness.add_org("acme")
    async with harness.as_key(other_owner) as as_other:
        refused = await as_other.delete("/v1/templates/python")
        assert "operators" in assert_envelope(refused, 403, "forbidden_error")["detail"]

    await harness.client.delete(f"/v1/sandboxes/{sandbox_id}")
    assert (await harness.client.delete("/v1/templates/python")).status_code == 204
    assert not (harness.settings.resolved_templates_dir / "python").exists()
    assert (await harness.client.get("/v1/templates")).json() == {"items": []}
    for name in ("python", "..", ".build-python"):
        gone = await harness.client.delete(f"/v1/templates/{name}")
        assert_envelope(gone, 404, "not_found_error")


# --- a backend without memory snapshots -----------------------------------------------------------


async def test_a_backend_without_snapshots_refuses_them_naming_itself(plain: Harness) -> None:
    sandbox_id = (await plain.create())["id"]
    for response in (
        await plain.client.post(f"/v1/sandboxes/{sandbox_id}/hibernate"),
        await plain.client.post(f"/v1/sandboxes/{sandbox_id}/snapshots"),
        await plain.client.post("/v1/sandboxes", json={"snapshot_id": "snap_0123456789abcdef"}),
        await plain.client.post("/v1/sandboxes", json={"timeout_action": "hibernate"}),
        await plain.client.post(
            f"/v1/sandboxes/{sandbox_id}/timeout",
            json={"timeout_ms": 60_000, "timeout_action": "hibernate"},
        ),
    ):
        body = assert_envelope(response, 422, "validation_error")
        assert "memory snapshots" in body["detail"] and "fake" in body["detail"]
    assert (await get(plain, sandbox_id))["status"] == "running"


async def test_sandboxes_with_the_internet_are_not_saved_where_the_backend_cannot(
    harness: Harness,
) -> None:
    sandbox_id = (await harness.create(network={"internet": True}))["id"]
    for response in (
        await harness.client.post(f"/v1/sandboxes/{sandbox_id}/hibernate"),
        await harness.client.post(f"/v1/sandboxes/{sandbox_id}/snapshots"),
        await harness.client.post(
            "/v1/sandboxes", json={"network": {"internet": True}, "timeout_action": "hibernate"}
        ),
        await harness.client.post(
            f"/v1/sandboxes/{sandbox_id}/timeout",
            json={"timeout_ms": 60_000, "timeout_action": "hibernate"},
        ),
    ):
        body = assert_envelope(response, 422, "validation_error")
        assert "network.internet" in body["detail"] and "fake" in body["detail"]
    assert (await get(harness, sandbox_id))["status"] == "running"
    # Without the internet the same backend saves it.
    plain_id = (await harness.create())["id"]
    await post_ok(harness.client, f"/v1/sandboxes/{plain_id}/snapshots", 201)


async def test_an_org_keeps_at_most_its_quota_of_snapshots(start_app: AppFactory) -> None:
    async with start_app(org_max_snapshots=2) as h:
        sandbox_id, _ = await with_context(h)
        url = f"/v1/sandboxes/{sandbox_id}/snapshots"
        first = await post_ok(h.client, url, 201)
        await post_ok(h.client, url, 201)
        refused = assert_envelope(await h.client.post(url), 403, "forbidden_error")
        assert "org_max_snapshots" in refused["detail"]
        # Nothing was saved for the refused one; deleting a snapshot makes room again.
        assert len(list((h.settings.data_dir / "snapshots").iterdir())) == 2
        assert (await h.client.delete(f"/v1/snapshots/{first['id']}")).status_code == 204
        await post_ok(h.client, url, 201)
        # Another org has a quota of its own.
        _, key = await h.add_org("neighbour")
        async with h.as_key(key) as neighbour:
            created = await neighbour.post("/v1/sandboxes", json={})
            assert created.status_code == 201, created.text
            taken = await neighbour.post(f"/v1/sandboxes/{created.json()['id']}/snapshots")
            assert taken.status_code == 201, taken.text


async def test_snapshot_bytes_are_bounded_per_org(start_app: AppFactory) -> None:
    async with start_app(org_max_snapshot_mb=0) as h:
        sandbox_id, _ = await with_context(h)
        refused = await h.client.post(f"/v1/sandboxes/{sandbox_id}/snapshots")
        body = assert_envelope(refused, 403, "forbidden_error")
        assert "org_max_snapshot_mb" in body["detail"]
