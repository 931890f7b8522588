"""Pause/resume, timeouts, limits, fields, filters and reconciliation on real sandboxes."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandcastle.config import Settings
from sandcastle.runtime.base import LaunchSpec
from sandcastle.runtime.bwrap import instance_name
from sandcastle.runtime.sentry import sentry_memory_mb
from tests.e2e.executing import run
from tests.helpers import eventually as wait_for
from tests.serverproc import ServerProcess


def cgroup_dir(controller: str, sandbox_id: str) -> Path:
    (path,) = Path(f"/sys/fs/cgroup/{controller}/sandcastle").glob(f"*/{sandbox_id}")
    return path


def test_pause_freezes_and_resume_keeps_state(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    sid = sandbox["id"]
    ctx = run(api, sid, code="counter = 41")["context_id"]
    paused = api.post(f"/v1/sandboxes/{sid}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    freezer = cgroup_dir("freezer", sid) / "freezer.state"
    assert freezer.read_text().strip() == "FROZEN"
    usage = cgroup_dir("cpuacct", sid) / "cpuacct.usage"
    before = int(usage.read_text())
    time.sleep(0.5)
    assert int(usage.read_text()) == before  # frozen: not one nanosecond of CPU
    blocked = api.post(f"/v1/sandboxes/{sid}/execute", json={"code": "1", "context_id": ctx})
    assert blocked.status_code == 409 and blocked.json()["type"] == "conflict_error"
    again = api.post(f"/v1/sandboxes/{sid}/pause")
    assert again.status_code == 409
    resumed = api.post(f"/v1/sandboxes/{sid}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "running"
    assert freezer.read_text().strip() == "THAWED"
    after = run(api, sid, code="counter + 1", context_id=ctx)
    assert after["items"] == [{"is_primary": True, "text": "42"}]
    assert api.post(f"/v1/sandboxes/{sid}/resume").status_code == 409


def test_an_execute_in_flight_when_the_sandbox_pauses_answers_409_and_its_code_goes_on(
    api: httpx.Client, sandbox: dict[str, Any], server: ServerProcess
) -> None:
    sid = sandbox["id"]
    ctx = run(api, sid, code="ticks = 0")["context_id"]
    code = "import time\nfor _ in range(40):\n    time.sleep(0.1)\n    ticks += 1\nticks"
    answered: list[httpx.Response] = []

    def execute() -> None:
        with server.client() as client:
            body = {"code": code, "context_id": ctx, "timeout_ms": 60_000}
            answered.append(client.post(f"/v1/sandboxes/{sid}/execute", json=body))

    worker = threading.Thread(target=execute)
    worker.start()
    time.sleep(1.0)
    assert api.post(f"/v1/sandboxes/{sid}/pause").status_code == 200
    started = time.monotonic()
    worker.join(15)
    assert answered, "the execute still waits on the frozen sandbox"
    assert time.monotonic() - started < 15
    assert answered[0].status_code == 409, answered[0].text
    assert "paused while this ran" in answered[0].json()["detail"]
    assert api.post(f"/v1/sandboxes/{sid}/resume").status_code == 200
    # Frozen, not interrupted: the loop finishes after the resume (the kernel runs one cell at
    # a time, so this one waits for it).
    after = run(api, sid, code="ticks", context_id=ctx)
    assert after["items"] == [{"is_primary": True, "text": "40"}]


def test_timeout_endpoint_sets_a_new_deadline_that_destroys(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    sid = sandbox["id"]
    updated = api.post(f"/v1/sandboxes/{sid}/timeout", json={"timeout_ms": 1500})
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert body["timeout_ms"] == 1500 and body["expires_at"] == body["timeout_at"]
    gone = wait_for(lambda: api.get(f"/v1/sandboxes/{sid}").json()["status"] == "destroyed")
    assert gone
    assert api.get(f"/v1/sandboxes/{sid}").json()["status_reason"] == "timeout"


def test_hibernate_is_refused_on_bwrap_naming_the_backend(
    api: httpx.Client, sandbox: dict[str, Any], backend: str
) -> None:
    if backend != "bwrap":
        pytest.skip("this backend has memory snapshots (tests/e2e/test_snapshots.py)")
    created = api.post("/v1/sandboxes", json={"timeout_action": "hibernate"})
    assert created.status_code == 422
    assert "bwrap" in created.json()["detail"]
    updated = api.post(
        f"/v1/sandboxes/{sandbox['id']}/timeout",
        json={"timeout_ms": 60_000, "timeout_action": "hibernate"},
    )
    assert updated.status_code == 422 and "bwrap" in updated.json()["detail"]


def test_limits_are_bounded_and_enforced(api: httpx.Client, backend: str) -> None:
    for body in ({"vcpus": 99}, {"memory_mb": 16}, {"disk_mb": 10**9}, {"timeout_ms": 10}):
        response = api.post("/v1/sandboxes", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["type"] == "validation_error"
    created = api.post(
        "/v1/sandboxes", json={"vcpus": 2, "memory_mb": 384, "disk_mb": 96, "cwd": "/tmp/./w/"}
    )
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    try:
        assert created.json()["cwd"] == "/tmp/w"
        cpu = cgroup_dir("cpu", sid)
        assert int((cpu / "cpu.cfs_quota_us").read_text()) == 2 * int(
            (cpu / "cpu.cfs_period_us").read_text()
        )
        memory = int((cgroup_dir("memory", sid) / "memory.limit_in_bytes").read_text())
        if backend == "gvisor":  # the host also grants the Sentry its share, beyond memory_mb
            spec = LaunchSpec(sid, Path("/"), 2, 384, 96, Settings().pids_max, "/")
            assert memory == sentry_memory_mb(spec) * 1024 * 1024 > 384 * 1024 * 1024
        else:
            assert memory == 384 * 1024 * 1024
        # disk_mb: writing past it fails inside with ENOSPC; the sandbox stays usable.
        fill = run(
            api,
            sid,
            code=(
                "import errno, os\n"
                "written = 0\n"
                "try:\n"
                "    with open('/tmp/fill', 'wb') as f:\n"
                "        for _ in range(200):\n"
                "            f.write(b'x' * (1 << 20)); f.flush(); os.fsync(f.fileno())\n"
                "            written += 1\n"
                "    outcome = 'no error'\n"
                "except OSError as exc:\n"
                "    outcome = errno.errorcode[exc.errno]\n"
                "(outcome, written, os.getcwd())"
            ),
        )
        outcome, written, cwd = eval(fill["items"][0]["text"])  # our own repr
        assert outcome == "ENOSPC"
        assert written < 96
        assert cwd == "/tmp/w"
        after = run(api, sid, code="import os; os.remove('/tmp/fill'); 'ok'")
        assert after["items"] == [{"is_primary": True, "text": "'ok'"}]
    finally:
        api.delete(f"/v1/sandboxes/{sid}")


def test_fields_mask(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    sid = sandbox["id"]
    masked = api.get(f"/v1/sandboxes/{sid}", params={"fields": "id,status,traffic_access_token"})
    assert masked.status_code == 200
    body = masked.json()
    assert set(body) == {"id", "status", "traffic_access_token"}
    assert len(body["traffic_access_token"]) >= 24
    assert "traffic_access_token" not in api.get(f"/v1/sandboxes/{sid}").json()
    bad = api.get(f"/v1/sandboxes/{sid}", params={"fields": "id,nonsense"})
    assert bad.status_code == 422 and bad.json()["type"] == "validation_error"
    assert bad.json()["errors"][0]["loc"] == ["query", "fields"]
    listed = api.get("/v1/sandboxes", params={"fields": "id", "limit": 5}).json()
    assert listed["items"] and all(set(item) == {"id"} for item in listed["items"])


def test_list_filters(api: httpx.Client) -> None:
    tag = os.urandom(4).hex()
    a = api.post("/v1/sandboxes", json={"metadata": {"tag": tag, "n": 1}}).json()["id"]
    b = api.post("/v1/sandboxes", json={"metadata": {"tag": tag, "n": 2}}).json()["id"]
    try:
        api.delete(f"/v1/sandboxes/{b}")

        def ids(**params: Any) -> set[str]:
            response = api.get("/v1/sandboxes", params={"limit": 200, **params})
            assert response.status_code == 200, response.text
            return {item["id"] for item in response.json()["items"]}

        assert ids(**{"metadata[tag]": tag}) == {a, b}
        assert ids(**{"metadata[tag]": tag, "metadata[n]": "2"}) == {b}
        assert ids(**{"metadata[tag]": tag, "status": "running"}) == {a}
        assert ids(**{"metadata[tag]": tag, "status": "running,destroyed"}) == {a, b}
        both = api.get(
            "/v1/sandboxes",
            params=[("metadata[tag]", tag), ("status", "running"), ("status", "destroyed")],
        )
        assert {item["id"] for item in both.json()["items"]} == {a, b}
        assert ids(**{"metadata[tag]": tag, "template": "other"}) == set()
        assert api.get("/v1/sandboxes", params={"status": "sleeping"}).status_code == 422
        assert api.get("/v1/sandboxes", params={"limit": 0}).status_code == 422
        assert api.get("/v1/sandboxes", params={"limit": 201}).status_code == 422
    finally:
        api.delete(f"/v1/sandboxes/{a}")


def test_dead_sandbox_becomes_error_and_orphans_are_destroyed(
    api: httpx.Client, server: ServerProcess
) -> None:
    sid = api.post("/v1/sandboxes", json={}).json()["id"]
    for pid in (cgroup_dir("pids", sid) / "cgroup.procs").read_text().split():
        # Killing the sandbox's PID 1 ends its whole pid namespace: later pids may be gone.
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    errored = wait_for(lambda: api.get(f"/v1/sandboxes/{sid}").json()["status"] == "error")
    assert errored
    assert "exited" in api.get(f"/v1/sandboxes/{sid}").json()["status_reason"]
    # An orphan: resources with no record are removed by the next reconciliation.
    orphan = Path("/sys/fs/cgroup/pids/sandcastle") / instance_name(server.data_dir) / "sb_0rphan00"
    orphan.mkdir()
    wait_for(lambda: not orphan.exists())
    assert api.get("/v1/health").json()["status"] == "ok"
