"""``/v1/sandboxes/{id}/code/runs`` and artifacts, in process over the fake runtime.

The fake agent runs cells in this process; a cell whose first line is ``# gate: NAME`` waits
until the test opens that gate, which is how a run is kept ``running`` for as long as a test
needs, without sleeping. ``write_file(name, data)`` in a cell writes into the context's
directory of the fake sandbox's filesystem.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from sandcastle.domain.runs import Reasons
from sandcastle.services import runs as runs_service
from sandcastle.store.db import Database
from sandcastle.store.models import RunRow
from tests.api.conftest import AppFactory, Harness, assert_envelope
from tests.helpers import parse_time, until

RUN_FIELDS = {
    "id", "sandbox_id", "context_id", "status", "timeout_secs", "created_at", "expires_at",
    "started_at", "completed_at", "cancel_requested_at", "execution", "failure_reason",
}  # fmt: skip
RESULT_FIELDS = {
    "text", "html", "markdown", "svg", "png", "jpeg", "pdf", "latex", "json", "javascript",
    "data", "is_main_result",
}  # fmt: skip
ARTIFACT_FIELDS = {
    "id", "context_id", "mime_type", "name", "size_bytes", "sha256", "created_at",
    "execution_count", "expires_at", "preview_url", "download_url", "metadata",
}  # fmt: skip
FINISHED = {"succeeded", "failed", "cancelled"}
CSP = "default-src 'none'; sandbox"


async def submit(h: Harness, sandbox_id: str, **body: Any) -> dict[str, Any]:
    response = await h.client.post(f"/v1/sandboxes/{sandbox_id}/code/runs", json=body)
    assert response.status_code == 202, response.text
    run: dict[str, Any] = response.json()
    return run


async def get_run(h: Harness, sandbox_id: str, run_id: str) -> dict[str, Any]:
    response = await h.client.get(f"/v1/sandboxes/{sandbox_id}/code/runs/{run_id}")
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()
    return run


async def finished(h: Harness, sandbox_id: str, run_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        run = await get_run(h, sandbox_id, run_id)
        return run if run["status"] in FINISHED else None

    result: dict[str, Any] = await until(check, f"run {run_id} finished")
    return result


async def status_is(h: Harness, sandbox_id: str, run_id: str, status: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        run = await get_run(h, sandbox_id, run_id)
        return run if run["status"] == status else None

    result: dict[str, Any] = await until(check, f"run {run_id} {status}")
    return result


async def waiting(h: Harness, sandbox_id: str, count: int) -> None:
    agent = h.runtime.agent(sandbox_id)

    async def check() -> bool:
        return agent.waiting == count

    await until(check, f"{count} executions waiting at their gate")


async def test_submit_answers_202_with_a_queued_run_that_then_succeeds(
    harness: Harness, sandbox_id: str
) -> None:
    run = await submit(harness, sandbox_id, code="print('hi')\n6 * 7")
    assert set(run) == RUN_FIELDS
    assert re.fullmatch(r"run_[0-9a-f]{16}", run["id"])
    assert run["status"] == "queued"
    assert run["sandbox_id"] == sandbox_id
    assert run["context_id"] is None
    assert run["timeout_secs"] == 300
    assert parse_time(run["expires_at"]) > parse_time(run["created_at"])
    assert run["started_at"] is run["completed_at"] is run["cancel_requested_at"] is None
    assert run["execution"] is None and run["failure_reason"] is None

    done = await finished(harness, sandbox_id, run["id"])
    assert done["status"] == "succeeded", done
    assert done["context_id"].startswith("ctx_")
    assert parse_time(done["created_at"]) <= parse_time(done["started_at"])
    assert parse_time(done["started_at"]) <= parse_time(done["completed_at"])
    assert parse_time(done["expires_at"]) > parse_time(done["completed_at"])
    assert done["failure_reason"] is None
    execution = done["execution"]
    assert set(execution) == {"results", "artifacts", "logs", "error", "execution_count"}
    assert execution["logs"] == {"stdout": ["hi\n"], "stderr": []}
    assert execution["error"] is None
    assert execution["execution_count"] == 1
    assert execution["artifacts"] == []
    (result,) = execution["results"]
    assert set(result) == RESULT_FIELDS
    assert result["is_main_result"] is True
    assert result["text"] == "42"
    assert result["data"] == {"text/plain": "42"}
    assert result["html"] is None and result["png"] is None and result["json"] is None


async def test_rich_results_keep_the_raw_bundle_and_the_mime_fields(
    harness: Harness, sandbox_id: str
) -> None:
    code = (
        "class Table:\n"
        "    def _repr_html_(self): return '<b>t</b>'\n"
        "    def _repr_mimebundle_(self): return {'application/vnd.custom+json': {'a': 1}}\n"
        "display(Table())"
    )
    run = await finished(harness, sandbox_id, (await submit(harness, sandbox_id, code=code))["id"])
    (result,) = run["execution"]["results"]
    assert result["is_main_result"] is False
    assert result["html"] == "<b>t</b>"
    assert result["data"]["text/html"] == "<b>t</b>"
    assert result["data"]["application/vnd.custom+json"] == {"a": 1}
    assert result["data"]["text/plain"].startswith("<")


async def test_an_exception_fails_the_run_with_the_error_and_a_reason(
    harness: Harness, sandbox_id: str
) -> None:
    run = await finished(harness, sandbox_id, (await submit(harness, sandbox_id, code="1/0"))["id"])
    assert run["status"] == "failed"
    error = run["execution"]["error"]
    assert error["name"] == "ZeroDivisionError"
    assert error["value"] == "division by zero"
    assert "\x1b[" not in error["traceback"]
    assert run["failure_reason"] == "the code raised ZeroDivisionError: division by zero"


async def test_runs_share_a_given_context_and_its_state(harness: Harness, sandbox_id: str) -> None:
    first = await finished(
        harness, sandbox_id, (await submit(harness, sandbox_id, code="x = 41"))["id"]
    )
    context_id = first["context_id"]
    second = await submit(harness, sandbox_id, code="x + 1", context_id=context_id)
    assert second["context_id"] == context_id
    done = await finished(harness, sandbox_id, second["id"])
    assert done["execution"]["results"][0]["text"] == "42"
    assert done["execution"]["execution_count"] == 2
    # ... and with /execute, which uses the same contexts.
    assert (await harness.execute(sandbox_id, code="x", context_id=context_id))["items"][0][
        "text"
    ] == "41"


async def test_env_vars_reach_the_run_and_are_not_kept(harness: Harness, sandbox_id: str) -> None:
    run = await submit(
        harness,
        sandbox_id,
        code="import os\nos.environ['TOKEN']",
        env_vars={"TOKEN": "s3cret"},
        timeout_secs=5,
    )
    done = await finished(harness, sandbox_id, run["id"])
    assert done["timeout_secs"] == 5
    assert done["execution"]["results"][0]["text"] == "'s3cret'"
    async with harness.db.session() as session:
        row = await session.get(RunRow, (await _seq_of(harness, run["id"])))
        assert row is not None and row.env_vars is None


async def _seq_of(h: Harness, run_id: str) -> int:
    async with h.db.session() as session:
        seq = await session.scalar(select(RunRow.seq).where(RunRow.id == run_id))
    assert seq is not None
    return seq


# --- validation and tenancy -----------------------------------------------------------------


async def test_invalid_submissions_are_envelope_errors(harness: Harness, sandbox_id: str) -> None:
    url = f"/v1/sandboxes/{sandbox_id}/code/runs"
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({}, 422, "validation_error"),
        ({"code": "1", "surprise": True}, 422, "validation_error"),
        ({"code": "1", "timeout_secs": 0}, 422, "validation_error"),
        ({"code": "1", "timeout_secs": 10**9}, 422, "validation_error"),
        ({"code": "1", "language": "cobol"}, 422, "validation_error"),
        ({"code": "1", "env_vars": {"A=B": "x"}}, 422, "validation_error"),
        ({"code": "1", "context_id": "ctx_missing"}, 404, "not_found_error"),
    ]
    for body, status, type_ in cases:
        assert_envelope(await harness.client.post(url, json=body), status, type_)
    assert_envelope(
        await harness.client.post("/v1/sandboxes/sb_00000000/code/runs", json={"code": "1"}),
        404,
        "not_found_error",
    )


async def test_another_tenant_sees_nothing(harness: Harness, sandbox_id: str) -> None:
    run = await submit(harness, sandbox_id, code="1")
    other = {"Authorization": f"Bearer {await harness.add_tenant()}"}
    base = f"/v1/sandboxes/{sandbox_id}/code/runs"
    for response in (
        await harness.client.get(base, headers=other),
        await harness.client.get(f"{base}/{run['id']}", headers=other),
        await harness.client.post(f"{base}/{run['id']}/cancel", headers=other),
        await harness.client.post(base, json={"code": "1"}, headers=other),
    ):
        assert_envelope(response, 404, "not_found_error")


async def test_a_destroyed_sandbox_takes_no_runs(harness: Harness, sandbox_id: str) -> None:
    await harness.client.delete(f"/v1/sandboxes/{sandbox_id}")
    response = await harness.client.post(
        f"/v1/sandboxes/{sandbox_id}/code/runs", json={"code": "1"}
    )
    assert_envelope(response, 409, "conflict_error")


# --- ordering and concurrency ---------------------------------------------------------------


async def test_runs_on_one_context_run_one_at_a_time_in_order(
    harness: Harness, sandbox_id: str
) -> None:
    ctx = (await harness.execute(sandbox_id, code="order = []"))["context_id"]
    first = await submit(harness, sandbox_id, context_id=ctx, code="# gate: a\norder.append(1)")
    second = await submit(harness, sandbox_id, context_id=ctx, code="order.append(2)")
    third = await submit(harness, sandbox_id, context_id=ctx, code="order.append(3)\norder")
    await waiting(harness, sandbox_id, 1)
    assert (await get_run(harness, sandbox_id, first["id"]))["status"] == "running"
    for queued in (second, third):
        assert (await get_run(harness, sandbox_id, queued["id"]))["status"] == "queued"
    harness.runtime.agent(sandbox_id).gates["a"].set()
    done = await finished(harness, sandbox_id, third["id"])
    assert done["execution"]["results"][0]["text"] == "[1, 2, 3]"
    starts = [
        parse_time((await get_run(harness, sandbox_id, r["id"]))["started_at"])
        for r in (first, second, third)
    ]
    assert starts == sorted(starts)


async def test_runs_on_different_contexts_run_concurrently_up_to_the_limit(
    start_app: AppFactory,
) -> None:
    async with start_app(runs_max_concurrent_per_sandbox=2) as h:
        sandbox_id = (await h.create())["id"]
        runs = [await submit(h, sandbox_id, code=f"# gate: g\n{i}") for i in range(3)]
        await waiting(h, sandbox_id, 2)
        statuses = [(await get_run(h, sandbox_id, r["id"]))["status"] for r in runs]
        assert statuses == ["running", "running", "queued"]
        h.runtime.agent(sandbox_id).gates["g"].set()
        results = [await finished(h, sandbox_id, r["id"]) for r in runs]
        assert [r["status"] for r in results] == ["succeeded"] * 3
        assert len({r["context_id"] for r in results}) == 3
        assert h.runtime.agent(sandbox_id).most_waiting == 2


async def test_a_paused_sandboxs_runs_wait_until_it_resumes(
    harness: Harness, sandbox_id: str
) -> None:
    assert (await harness.client.post(f"/v1/sandboxes/{sandbox_id}/pause")).status_code == 200
    run = await submit(harness, sandbox_id, code="'after resume'")
    for _ in range(50):
        await asyncio.sleep(0)
    assert (await get_run(harness, sandbox_id, run["id"]))["status"] == "queued"
    assert (await harness.client.post(f"/v1/sandboxes/{sandbox_id}/resume")).status_code == 200
    assert (await finished(harness, sandbox_id, run["id"]))["status"] == "succeeded"


async def test_a_run_executing_when_its_sandbox_pauses_fails_saying_so_and_the_next_runs(
    harness: Harness, sandbox_id: str
) -> None:
    run = await submit(harness, sandbox_id, code="# gate: p\n1")
    await waiting(harness, sandbox_id, 1)
    assert (await harness.client.post(f"/v1/sandboxes/{sandbox_id}/pause")).status_code == 200
    done = await finished(harness, sandbox_id, run["id"])
    assert done["status"] == "failed"
    assert done["failure_reason"] == Reasons.PAUSED
    assert (await harness.client.post(f"/v1/sandboxes/{sandbox_id}/resume")).status_code == 200
    harness.runtime.agent(sandbox_id).gates["p"].set()
    after = await submit(harness, sandbox_id, code="'after resume'")
    assert (await finished(harness, sandbox_id, after["id"]))["status"] == "succeeded"


# --- cancel ---------------------------------------------------------------------------------


async def test_cancel_a_queued_run_and_it_never_starts(harness: Harness, sandbox_id: str) -> None:
    ctx = (await harness.execute(sandbox_id, code="ran = []"))["context_id"]
    blocker = await submit(harness, sandbox_id, context_id=ctx, code="# gate: b\nNone")
    victim = await submit(harness, sandbox_id, context_id=ctx, code="ran.append('victim')")
    await waiting(harness, sandbox_id, 1)
    response = await harness.client.post(
        f"/v1/sandboxes/{sandbox_id}/code/runs/{victim['id']}/cancel"
    )
    assert response.status_code == 202, response.text
    cancelled = response.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancel_requested_at"] is not None
    assert cancelled["completed_at"] is not None and cancelled["started_at"] is None
    assert cancelled["failure_reason"] == "cancelled by user"
    assert cancelled["execution"] is None
    harness.runtime.agent(sandbox_id).gates["b"].set()
    await finished(harness, sandbox_id, blocker["id"])
    assert (await harness.execute(sandbox_id, code="ran", context_id=ctx))["items"][0][
        "text"
    ] == "[]"


async def test_cancel_a_running_run_interrupts_its_execution(
    harness: Harness, sandbox_id: str
) -> None:
    run = await submit(harness, sandbox_id, code="# gate: never\nNone")
    await waiting(harness, sandbox_id, 1)
    response = await harness.client.post(f"/v1/sandboxes/{sandbox_id}/code/runs/{run['id']}/cancel")
    assert response.status_code == 202, response.text
    assert response.json()["cancel_requested_at"] is not None
    done = await finished(harness, sandbox_id, run["id"])
    assert done["status"] == "cancelled"
    assert done["failure_reason"] == "cancelled by user"
    assert done["cancel_requested_at"] == response.json()["cancel_requested_at"]
    # The agent's execution was cancelled (the host sent ``cancel``), not left waiting.
    assert harness.runtime.agent(sandbox_id).cancelled == [done["context_id"]]
    assert harness.runtime.agent(sandbox_id).waiting == 0


async def test_cancel_a_finished_run_is_a_conflict(harness: Harness, sandbox_id: str) -> None:
    run = await finished(harness, sandbox_id, (await submit(harness, sandbox_id, code="1"))["id"])
    url = f"/v1/sandboxes/{sandbox_id}/code/runs/{run['id']}/cancel"
    assert_envelope(await harness.client.post(url), 409, "conflict_error")
    queued = await submit(harness, sandbox_id, code="# gate: q\n1")
    await waiting(harness, sandbox_id, 1)
    cancel = f"/v1/sandboxes/{sandbox_id}/code/runs/{queued['id']}/cancel"
    assert (await harness.client.post(cancel)).status_code == 202
    await finished(harness, sandbox_id, queued["id"])
    assert_envelope(await harness.client.post(cancel), 409, "conflict_error")


# --- list ---------------------------------------------------------------------------------


async def test_list_filters_and_paginates_with_a_stable_cursor(
    harness: Harness, sandbox_id: str
) -> None:
    ctx = (await harness.execute(sandbox_id, code="0"))["context_id"]
    mine = [await submit(harness, sandbox_id, context_id=ctx, code=str(i)) for i in range(7)]
    failing = await submit(harness, sandbox_id, code="1/0")
    await finished(harness, sandbox_id, failing["id"])
    await finished(harness, sandbox_id, mine[-1]["id"])
    base = f"/v1/sandboxes/{sandbox_id}/code/runs"

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await harness.client.get(base, params=params)).json()
        assert set(page) == {"items", "next_cursor"}
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # New runs never show up on later pages, nor push old ones into them twice.
        await submit(harness, sandbox_id, context_id=ctx, code="'late'")
    assert seen == [failing["id"], *[r["id"] for r in reversed(mine)]]

    by_context = (await harness.client.get(base, params={"context_id": ctx, "limit": 200})).json()
    assert {i["context_id"] for i in by_context["items"]} == {ctx}
    failed = (await harness.client.get(base, params={"status": "failed"})).json()
    assert [i["id"] for i in failed["items"]] == [failing["id"]]
    assert failed["next_cursor"] is None

    for params in ({"limit": 0}, {"limit": 201}, {"status": "done"}, {"cursor": "garbage"}):
        assert_envelope(await harness.client.get(base, params=params), 422, "validation_error")
    assert_envelope(await harness.client.get(f"{base}/run_unknown"), 404, "not_found_error")


# --- sandbox end, restart, retention --------------------------------------------------------


async def test_destroying_the_sandbox_cancels_its_queued_and_running_runs(
    harness: Harness, sandbox_id: str
) -> None:
    ctx = (await harness.execute(sandbox_id, code="0"))["context_id"]
    running = await submit(harness, sandbox_id, context_id=ctx, code="# gate: d\n1")
    queued = await submit(harness, sandbox_id, context_id=ctx, code="2")
    await waiting(harness, sandbox_id, 1)
    assert (await harness.client.delete(f"/v1/sandboxes/{sandbox_id}")).status_code == 200
    for run in (running, queued):
        done = await finished(harness, sandbox_id, run["id"])
        assert done["status"] == "cancelled", done
        assert done["failure_reason"] == "the sandbox was destroyed"


async def test_a_sandbox_whose_processes_die_cancels_its_runs(
    harness: Harness, sandbox_id: str
) -> None:
    running = await submit(harness, sandbox_id, code="# gate: k\n1")
    await waiting(harness, sandbox_id, 1)
    await harness.runtime.kill(sandbox_id)
    await harness.services.reconciler.reconcile()
    done = await finished(harness, sandbox_id, running["id"])
    assert done["status"] == "cancelled"
    assert done["failure_reason"].startswith("the sandbox failed: ")


async def test_after_a_crash_running_runs_fail_and_queued_runs_still_run(
    start_app: AppFactory,
) -> None:
    async with start_app() as h:
        sandbox_id = (await h.create())["id"]
        ctx = (await h.execute(sandbox_id, code="0"))["context_id"]
        blocker = await submit(h, sandbox_id, context_id=ctx, code="# gate: crash\n1")
        queued = await submit(h, sandbox_id, context_id=ctx, code="'still ran'")
        await waiting(h, sandbox_id, 1)
        # What a crash leaves behind: the claim committed, the outcome never written. (A
        # graceful stop would settle the run itself, so put the row back as it was.)
        seq = await _seq_of(h, blocker["id"])
    db = Database(h.db.url)
    try:
        async with db.session() as session:
            await session.execute(
                update(RunRow).where(RunRow.seq == seq).values(status="running", completed_at=None)
            )
    finally:
        await db.aclose()
    async with start_app() as h:
        crashed = await get_run(h, sandbox_id, blocker["id"])
        assert crashed["status"] == "failed"
        assert "server restarted" in crashed["failure_reason"]
        done = await finished(h, sandbox_id, queued["id"])
        assert done["status"] == "succeeded"
        assert done["execution"]["results"][0]["text"] == "'still ran'"


async def test_expired_runs_are_purged_with_their_artifacts(
    harness: Harness, sandbox_id: str
) -> None:
    run = await submit(harness, sandbox_id, code="write_file('old.txt', 'x')")
    done = await finished(harness, sandbox_id, run["id"])
    (artifact,) = done["execution"]["artifacts"]
    stored = harness.settings.artifacts_dir / run["id"] / artifact["id"]
    assert stored.is_file()
    keep = await finished(harness, sandbox_id, (await submit(harness, sandbox_id, code="1"))["id"])
    async with harness.db.session() as session:
        await session.execute(
            update(RunRow)
            .where(RunRow.id == run["id"])
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert await harness.services.runs.purge_expired() == 1
    base = f"/v1/sandboxes/{sandbox_id}"
    assert_envelope(
        await harness.client.get(f"{base}/code/runs/{run['id']}"), 404, "not_found_error"
    )
    assert_envelope(
        await harness.client.get(f"{base}/artifacts/{artifact['id']}"), 404, "not_found_error"
    )
    assert not stored.exists()
    assert (await get_run(harness, sandbox_id, keep["id"]))["status"] == "succeeded"


# --- artifacts -----------------------------------------------------------------------------


async def test_files_a_run_writes_become_artifacts_with_their_sha256(
    harness: Harness, sandbox_id: str
) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, several chunks
    ctx = (await harness.execute(sandbox_id, code="write_file('before.txt', 'old')"))["context_id"]
    harness.runtime.agent(sandbox_id).contexts[ctx].namespace["payload"] = payload
    run = await submit(
        harness,
        sandbox_id,
        context_id=ctx,
        code="write_file('out/data.bin', payload)\nwrite_file('.hidden', 'h')",
    )
    done = await finished(harness, sandbox_id, run["id"])
    (artifact,) = done["execution"]["artifacts"]
    assert set(artifact) == ARTIFACT_FIELDS
    assert artifact["id"].startswith("art_")
    assert artifact["name"] == "out/data.bin"
    assert artifact["context_id"] == ctx
    assert artifact["size_bytes"] == len(payload)
    assert artifact["sha256"] == hashlib.sha256(payload).hexdigest()
    assert artifact["mime_type"] == "application/octet-stream"
    assert artifact["execution_count"] == done["execution"]["execution_count"] == 2
    assert artifact["expires_at"] == done["expires_at"]
    assert artifact["metadata"]["run_id"] == run["id"]
    assert artifact["preview_url"] is None  # binary: nothing to preview
    download = await harness.client.get(artifact["download_url"])
    assert download.status_code == 200
    assert download.content == payload
    assert download.headers["content-disposition"] == "attachment; filename*=UTF-8''data.bin"
    assert download.headers["x-content-type-options"] == "nosniff"
    assert_envelope(
        await harness.client.get(artifact["download_url"] + "/preview"), 404, "not_found_error"
    )
    assert_envelope(await harness.anon.get(artifact["download_url"]), 401, "authentication_error")


async def test_previews_render_csv_html_and_text_under_a_strict_policy(
    harness: Harness, sandbox_id: str
) -> None:
    code = (
        "write_file('t.csv', 'name,value\\n<script>x</script>,1\\n')\n"
        "write_file('page.html', '<script>alert(1)</script><p>hi</p>')\n"
        "write_file('notes.txt', 'plain <b>text</b>')"
    )
    done = await finished(harness, sandbox_id, (await submit(harness, sandbox_id, code=code))["id"])
    artifacts = {a["name"]: a for a in done["execution"]["artifacts"]}
    assert sorted(artifacts) == ["notes.txt", "page.html", "t.csv"]

    for artifact in artifacts.values():
        preview = await harness.client.get(artifact["preview_url"])
        assert preview.status_code == 200, preview.text
        assert preview.headers["content-security-policy"] == CSP
        assert preview.headers["x-content-type-options"] == "nosniff"
    table = await harness.client.get(artifacts["t.csv"]["preview_url"])
    assert table.headers["content-type"].startswith("text/html")
    assert "<th>name</th><th>value</th>" in table.text
    assert "<td>&lt;script&gt;x&lt;/script&gt;</td><td>1</td>" in table.text
    assert "<script>" not in table.text
    page = await harness.client.get(artifacts["page.html"]["preview_url"])
    assert page.headers["content-type"].startswith("text/html")
    assert page.text == "<script>alert(1)</script><p>hi</p>"  # defused by the policy, not edited
    text = await harness.client.get(artifacts["notes.txt"]["preview_url"])
    assert text.headers["content-type"] == "text/plain; charset=utf-8"


async def test_only_new_or_changed_files_count(harness: Harness, sandbox_id: str) -> None:
    ctx = (await harness.execute(sandbox_id, code="write_file('a.txt', '1')"))["context_id"]
    done = await finished(
        harness,
        sandbox_id,
        (await submit(harness, sandbox_id, context_id=ctx, code="write_file('a.txt', '22')"))["id"],
    )
    assert [a["name"] for a in done["execution"]["artifacts"]] == ["a.txt"]
    untouched = await finished(
        harness, sandbox_id, (await submit(harness, sandbox_id, context_id=ctx, code="1"))["id"]
    )
    assert untouched["execution"]["artifacts"] == []


async def test_artifact_bounds_are_noted_in_metadata(start_app: AppFactory) -> None:
    async with start_app(run_artifacts_max_files=2, run_artifact_max_bytes=10) as h:
        sandbox_id = (await h.create())["id"]
        code = "\n".join(f"write_file('f{i}.txt', '{'x' * (5 + 10 * i)}')" for i in range(4))
        done = await finished(h, sandbox_id, (await submit(h, sandbox_id, code=code))["id"])
        small, big = done["execution"]["artifacts"]
        assert (small["name"], big["name"]) == ("f0.txt", "f1.txt")
        assert small["sha256"] is not None and small["metadata"]["omitted_files"] == 2
        assert big["sha256"] is None and big["download_url"] is None
        assert big["size_bytes"] == 15
        assert "10-byte limit" in big["metadata"]["skipped"]
        assert big["metadata"]["omitted_files"] == 2


async def test_artifacts_outlive_their_sandbox(harness: Harness, sandbox_id: str) -> None:
    run = await submit(harness, sandbox_id, code="write_file('keep.txt', 'kept')")
    (artifact,) = (await finished(harness, sandbox_id, run["id"]))["execution"]["artifacts"]
    await harness.client.delete(f"/v1/sandboxes/{sandbox_id}")
    download = await harness.client.get(artifact["download_url"])
    assert download.status_code == 200 and download.content == b"kept"
    again = await get_run(harness, sandbox_id, run["id"])
    assert again["execution"]["artifacts"][0]["sha256"] == artifact["sha256"]


async def test_an_orgs_stored_artifacts_are_bounded_and_deleting_one_frees_its_share(
    start_app: AppFactory,
) -> None:
    async with start_app(org_max_artifact_mb=1) as h:
        sandbox_id = (await h.create())["id"]
        ctx = (await h.execute(sandbox_id, code="0"))["context_id"]
        h.runtime.agent(sandbox_id).contexts[ctx].namespace["blob"] = os.urandom(700 * 1024)
        code = "write_file('{}.bin', blob)"

        async def one(name: str) -> dict[str, Any]:
            run = await submit(h, sandbox_id, context_id=ctx, code=code.format(name))
            (artifact,) = (await finished(h, sandbox_id, run["id"]))["execution"]["artifacts"]
            return artifact  # type: ignore[no-any-return]

        first = await one("first")
        refused = await one("second")
        assert first["sha256"] is not None
        assert refused["sha256"] is None and refused["download_url"] is None
        assert "quota" in refused["metadata"]["skipped"]

        deleted = await h.client.delete(f"/v1/sandboxes/{sandbox_id}/artifacts/{first['id']}")
        assert deleted.status_code == 204
        assert_envelope(await h.client.get(first["download_url"]), 404, "not_found_error")
        run = await get_run(h, sandbox_id, first["metadata"]["run_id"])
        assert run["execution"]["artifacts"] == []
        again = await h.client.delete(f"/v1/sandboxes/{sandbox_id}/artifacts/{first['id']}")
        assert_envelope(again, 404, "not_found_error")
        assert (await one("third"))["sha256"] is not None


async def test_a_page_of_runs_ends_at_its_byte_bound_and_the_cursor_goes_on(
    harness: Harness, sandbox_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs_service, "LIST_MAX_BYTES", 2500)
    ids = []
    for _ in range(4):
        run = await submit(harness, sandbox_id, code="print('x' * 1000)")
        await finished(harness, sandbox_id, run["id"])
        ids.append(run["id"])
    url = f"/v1/sandboxes/{sandbox_id}/code/runs"

    first = (await harness.client.get(url, params={"limit": 50})).json()
    second = (
        await harness.client.get(url, params={"limit": 50, "cursor": first["next_cursor"]})
    ).json()

    assert [r["id"] for r in first["items"]] == ids[::-1][:2]
    assert [r["id"] for r in second["items"]] == ids[::-1][2:]
    assert second["next_cursor"] is None


async def test_the_queue_per_sandbox_is_bounded(start_app: AppFactory) -> None:
    async with start_app(runs_max_queued_per_sandbox=2) as h:
        sandbox_id = (await h.create())["id"]
        ctx = (await h.execute(sandbox_id, code="0"))["context_id"]
        await submit(h, sandbox_id, context_id=ctx, code="# gate: full\n1")
        await waiting(h, sandbox_id, 1)
        for _ in range(2):
            await submit(h, sandbox_id, context_id=ctx, code="2")
        response = await h.client.post(
            f"/v1/sandboxes/{sandbox_id}/code/runs", json={"code": "3", "context_id": ctx}
        )
        assert_envelope(response, 422, "validation_error")
        h.runtime.agent(sandbox_id).gates["full"].set()


async def test_a_run_whose_context_is_deleted_before_it_starts_fails(
    harness: Harness, sandbox_id: str
) -> None:
    ctx = (await harness.execute(sandbox_id, code="0"))["context_id"]
    blocker = await submit(harness, sandbox_id, context_id=ctx, code="# gate: del\n1")
    orphan = await submit(harness, sandbox_id, context_id=ctx, code="2")
    await waiting(harness, sandbox_id, 1)
    deleted = await harness.client.delete(f"/v1/sandboxes/{sandbox_id}/contexts/{ctx}")
    assert deleted.status_code == 204, deleted.text
    harness.runtime.agent(sandbox_id).gates["del"].set()
    await finished(harness, sandbox_id, blocker["id"])
    done = await finished(harness, sandbox_id, orphan["id"])
    assert done["status"] == "failed"
    assert done["failure_reason"].startswith("the run's context cannot be used")
    assert done["execution"] is None
