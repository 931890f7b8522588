"""Asynchronous code runs (``code-runs-list.txt``) through HTTP, real kernels, real sandboxes.

A run is held ``running`` for as long as a test needs by a cell that waits for a gate file,
which the test then creates from another context — no sleeps decide an outcome.
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.code_runs import (
    RUN_FIELDS,
    finished,
    gate_code,
    get_run,
    open_gate,
    submit,
    wait_status,
)
from tests.e2e.executing import new_context, run
from tests.helpers import eventually as wait_for
from tests.serverproc import ServerProcess

# --- outcomes ---------------------------------------------------------------------------------


def test_a_run_succeeds_with_every_documented_field(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    sid = sandbox["id"]
    created = submit(api, sid, code="print('hello')\n21 * 2")
    assert set(created) == RUN_FIELDS
    assert created["id"].startswith("run_") and created["expires_at"] and created["created_at"]
    done = finished(api, sid, created["id"])
    assert set(done) == RUN_FIELDS
    assert done["status"] == "succeeded", done
    assert done["context_id"].startswith("ctx_")
    assert done["started_at"] and done["completed_at"] and done["failure_reason"] is None
    execution = done["execution"]
    assert execution["logs"] == {"stdout": ["hello\n"], "stderr": []}
    assert execution["error"] is None and execution["execution_count"] == 1
    (result,) = execution["results"]
    assert result["is_main_result"] is True
    assert result["text"] == "42" and result["data"] == {"text/plain": "42"}
    # The run's new context is a real one: /execute continues in it.
    again = run(api, sid, code="_ + 1", context_id=done["context_id"])
    assert again["items"][0]["text"] == "43"


def test_an_exception_fails_the_run_with_its_error(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    sid = sandbox["id"]
    done = finished(api, sid, submit(api, sid, code="{}['missing']")["id"])
    assert done["status"] == "failed"
    assert done["execution"]["error"]["name"] == "KeyError"
    assert "KeyError" in done["execution"]["error"]["traceback"]
    assert done["failure_reason"] == "the code raised KeyError: 'missing'"


def test_a_run_past_its_timeout_fails_and_says_so(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    sid = sandbox["id"]
    ctx = run(api, sid, code="kept = 1")["context_id"]
    slow = submit(api, sid, context_id=ctx, code="import time\ntime.sleep(60)", timeout_secs=1)
    done = finished(api, sid, slow["id"])
    assert done["status"] == "failed"
    assert done["timeout_secs"] == 1
    assert done["failure_reason"].startswith("timeout")
    # Interrupted, not killed: the context keeps its state.
    assert run(api, sid, code="kept", context_id=ctx)["items"][0]["text"] == "1"


def test_a_displayed_figure_is_a_result_not_an_artifact(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    sid = sandbox["id"]
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"
    done = finished(api, sid, submit(api, sid, code=code)["id"])
    assert done["status"] == "succeeded", done
    pngs = [r for r in done["execution"]["results"] if r["png"]]
    assert len(pngs) == 1 and "image/png" in pngs[0]["data"]
    assert done["execution"]["artifacts"] == []


# --- ordering, concurrency, cancel ------------------------------------------------------------


def test_one_context_runs_in_order_while_others_run_alongside(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    sid = sandbox["id"]
    ctx = new_context(api, sid)["id"]
    run(api, sid, code="order = []", context_id=ctx)
    first = submit(api, sid, context_id=ctx, code=gate_code("order-gate", "order.append(1)"))
    second = submit(api, sid, context_id=ctx, code="order.append(2)")
    third = submit(api, sid, context_id=ctx, code="order.append(3)\norder")
    wait_status(api, sid, first["id"], {"running"})
    # Another context is not held up by the blocked one.
    elsewhere = finished(api, sid, submit(api, sid, code="'free'")["id"])
    assert elsewhere["status"] == "succeeded"
    assert get_run(api, sid, second["id"])["status"] == "queued"
    assert get_run(api, sid, third["id"])["status"] == "queued"
    open_gate(api, sid, "order-gate")
    done = finished(api, sid, third["id"])
    assert done["execution"]["results"][0]["text"] == "[1, 2, 3]"


def test_cancel_a_queued_run_and_a_running_one(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    sid = sandbox["id"]
    ctx = new_context(api, sid)["id"]
    run(api, sid, code="ran = []", context_id=ctx)
    spinning = submit(api, sid, context_id=ctx, code="import time\nwhile True: time.sleep(0.05)")
    queued = submit(api, sid, context_id=ctx, code="ran.append('queued')")
    wait_status(api, sid, spinning["id"], {"running"})

    response = api.post(f"/v1/sandboxes/{sid}/code/runs/{queued['id']}/cancel")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "cancelled"
    assert response.json()["cancel_requested_at"] is not None

    response = api.post(f"/v1/sandboxes/{sid}/code/runs/{spinning['id']}/cancel")
    assert response.status_code == 202, response.text
    assert response.json()["cancel_requested_at"] is not None
    done = finished(api, sid, spinning["id"])
    assert done["status"] == "cancelled" and done["failure_reason"] == "cancelled by user"

    # The queued run never ran, and the context still works. The running one was interrupted:
    # its state is kept if the kernel went idle within the interrupt's grace, else the kernel
    # was restarted (docs/AGENT_PROTOCOL.md), which a loaded machine can make happen.
    assert get_run(api, sid, queued["id"])["started_at"] is None
    kept = run(api, sid, code="ran", context_id=ctx)
    if kept["error"] is None:
        assert kept["items"][0]["text"] == "[]"
    else:
        assert kept["error"]["name"] == "NameError", kept  # a fresh kernel: nothing ran in it
    after = finished(api, sid, submit(api, sid, context_id=ctx, code="'alive'")["id"])
    assert after["status"] == "succeeded"

    again = api.post(f"/v1/sandboxes/{sid}/code/runs/{spinning['id']}/cancel")
    assert again.status_code == 409 and again.json()["type"] == "conflict_error"


def test_destroying_the_sandbox_cancels_its_runs(api: httpx.Client) -> None:
    sid = api.post("/v1/sandboxes", json={}).json()["id"]
    ctx = new_context(api, sid)["id"]
    running = submit(api, sid, context_id=ctx, code=gate_code("never"))
    queued = submit(api, sid, context_id=ctx, code="1")
    wait_status(api, sid, running["id"], {"running"})
    assert api.delete(f"/v1/sandboxes/{sid}").status_code == 200
    for item in (running, queued):
        done = finished(api, sid, item["id"])
        assert done["status"] == "cancelled", done
        assert done["failure_reason"] == "the sandbox was destroyed"


# --- listing ------------------------------------------------------------------------------


def test_paging_450_runs_while_more_arrive_has_no_duplicates_or_gaps(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    sid = sandbox["id"]
    contexts = [new_context(api, sid)["id"] for _ in range(3)]

    def one(i: int) -> str:
        run_id: str = submit(api, sid, context_id=contexts[i % 3], code=str(i))["id"]
        return run_id

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        submitted = list(pool.map(one, range(450)))
    seen: list[dict[str, Any]] = []
    cursor = None
    arrived: list[str] = []
    while True:
        params: dict[str, Any] = {"limit": 37, **({"cursor": cursor} if cursor else {})}
        response = api.get(f"/v1/sandboxes/{sid}/code/runs", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"items", "next_cursor"} and len(page["items"]) <= 37
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        arrived.append(submit(api, sid, context_id=contexts[0], code="'late'")["id"])
    ids = [item["id"] for item in seen]
    assert len(ids) == len(set(ids)) == 450
    assert set(ids) == set(submitted)
    assert not set(arrived) & set(ids)
    for item in seen:
        assert set(item) == RUN_FIELDS

    first = api.get(
        f"/v1/sandboxes/{sid}/code/runs", params={"context_id": contexts[1], "limit": 200}
    ).json()
    assert len(first["items"]) == 150 and first["next_cursor"] is None
    assert {item["context_id"] for item in first["items"]} == {contexts[1]}
    for params in ({"limit": 0}, {"limit": 201}, {"status": "nope"}):
        bad = api.get(f"/v1/sandboxes/{sid}/code/runs", params=params)
        assert bad.status_code == 422 and bad.json()["type"] == "validation_error"
    # The queue drains: every run ends.
    wait_for(
        lambda: (
            api.get(
                f"/v1/sandboxes/{sid}/code/runs", params={"status": "queued", "limit": 1}
            ).json()["items"]
            == []
        ),
        # A bound on waiting, not a speed claim: ~460 runs, each with two file snapshots,
        # take minutes under gVisor on a loaded 2-core machine.
        timeout=600,
    )
    succeeded = api.get(
        f"/v1/sandboxes/{sid}/code/runs", params={"status": "succeeded", "limit": 200}
    ).json()
    assert succeeded["next_cursor"] is not None
    assert all(item["status"] == "succeeded" for item in succeeded["items"])


# --- restarts -----------------------------------------------------------------------------


def test_after_kill_9_the_running_run_fails_and_queued_runs_still_run(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    server.start()
    try:
        with server.client() as api:
            sid = api.post("/v1/sandboxes", json={"timeout_ms": 600_000}).json()["id"]
            ctx = new_context(api, sid)["id"]
            run(api, sid, code="state = 'kept'", context_id=ctx)
            running = submit(api, sid, context_id=ctx, code=gate_code("restart-gate"))
            queued = submit(api, sid, context_id=ctx, code="state")
            wait_status(api, sid, running["id"], {"running"})
        server.kill9()
        server.start()
        with server.client() as api:
            crashed = get_run(api, sid, running["id"])
            assert crashed["status"] == "failed"
            assert "server restarted" in crashed["failure_reason"]
            assert crashed["completed_at"] is not None
            done = finished(api, sid, queued["id"])
            assert done["status"] == "succeeded", done
            assert done["execution"]["results"][0]["text"] == "'kept'"
            listed = api.get(f"/v1/sandboxes/{sid}/code/runs", params={"status": "running"})
            assert listed.json()["items"] == []
    finally:
        try:
            server.destroy_all()
        finally:
            server.purge()


def test_queued_runs_survive_kill_9_before_they_start(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    server.start()
    try:
        with server.client() as api:
            sid = api.post("/v1/sandboxes", json={"timeout_ms": 600_000}).json()["id"]
            assert api.post(f"/v1/sandboxes/{sid}/pause").status_code == 200
            waiting = [submit(api, sid, code=f"{i} * 10")["id"] for i in range(3)]
            time.sleep(0.2)  # the dispatcher had its chance; a paused sandbox's runs wait
            assert {get_run(api, sid, r)["status"] for r in waiting} == {"queued"}
        server.kill9()
        server.start()
        with server.client() as api:
            assert api.post(f"/v1/sandboxes/{sid}/resume").status_code == 200
            results = [finished(api, sid, r) for r in waiting]
            assert [r["status"] for r in results] == ["succeeded"] * 3
            assert [r["execution"]["results"][0]["text"] for r in results] == ["0", "10", "20"]
    finally:
        try:
            server.destroy_all()
        finally:
            server.purge()
