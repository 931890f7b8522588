"""Memory snapshots through HTTP against the real backends: hibernate/resume, snapshots, forks.

The state checked is real: a 100 MB NumPy array's checksum, a variable, an open file with its
offset, a background thread that keeps counting, and a file in the writable layer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.executing import run
from tests.helpers import eventually as wait_for
from tests.serverproc import ServerProcess

SETUP = """
import hashlib, threading, time
import numpy as np
arr = np.random.default_rng(7).integers(0, 255, size=100 * 1024 * 1024, dtype=np.uint8)
digest = hashlib.sha256(arr.tobytes()).hexdigest()
counter = {"n": 0}
def _tick():
    while True:
        counter["n"] += 1
        time.sleep(0.02)
threading.Thread(target=_tick, daemon=True).start()
fh = open("/home/user/notes.txt", "w+")
fh.write("line one\\n"); fh.flush()
open("/home/user/layer.txt", "w").write("written before")
name = "kept"
"""

CHECK = """
import json, os
start = counter["n"]; time.sleep(0.3)
fh.write("line two\\n"); fh.flush(); fh.seek(0)
print(json.dumps({
    "array": hashlib.sha256(arr.tobytes()).hexdigest() == digest,
    "name": name,
    "thread": counter["n"] > start,
    "file": fh.read(),
    "layer": open("/home/user/layer.txt").read(),
    "cwd": os.getcwd(),
}))
"""


def _state(api: httpx.Client, sandbox_id: str, context_id: str) -> dict[str, Any]:
    result = run(api, sandbox_id, code=CHECK, context_id=context_id, timeout_ms=60_000)
    assert result["error"] is None, result["error"]
    logs: Any = result["logs"]
    state: dict[str, Any] = json.loads(logs["stdout"][0])
    return state


def _prepared(api: httpx.Client, sandbox_id: str) -> str:
    result = run(api, sandbox_id, code=SETUP, timeout_ms=120_000)
    assert result["error"] is None, result["error"]
    return str(result["context_id"])


def _expect_kept(state: dict[str, Any], *, lines: str) -> None:
    assert state["array"] is True
    assert state["name"] == "kept"
    assert state["thread"] is True
    assert state["file"] == lines
    assert state["layer"] == "written before"
    assert state["cwd"] == "/home/user"


@pytest.fixture
def gvisor_only(backend: str) -> None:
    if backend != "gvisor":
        pytest.skip("memory snapshots need the gvisor backend (bwrap refuses them: tested below)")


def test_backends_without_memory_snapshots_refuse_them(
    api: httpx.Client, sandbox: dict[str, Any], backend: str
) -> None:
    if backend == "gvisor":
        pytest.skip("gvisor has memory snapshots")
    sid = sandbox["id"]
    for path in (f"/v1/sandboxes/{sid}/hibernate", f"/v1/sandboxes/{sid}/snapshots"):
        response = api.post(path)
        assert response.status_code == 422, response.text
        assert "bwrap" in response.json()["detail"]
    created = api.post("/v1/sandboxes", json={"timeout_action": "hibernate"})
    assert created.status_code == 422


def test_hibernate_and_resume_keep_every_kind_of_state(
    api: httpx.Client, sandbox: dict[str, Any], gvisor_only: None
) -> None:
    sid = sandbox["id"]
    ctx = _prepared(api, sid)
    # A background process nobody is reading is saved with the rest, and goes on after.
    script = "echo before; while [ ! -e /tmp/wake ]; do sleep 0.05; done; echo after"
    process = api.post(f"/v1/sandboxes/{sid}/processes", json={"shell": script, "timeout_ms": 0})
    assert process.status_code == 201, process.text
    hibernated = api.post(f"/v1/sandboxes/{sid}/hibernate")
    assert hibernated.status_code == 200, hibernated.text
    body = hibernated.json()
    assert body["status"] == "paused"
    assert body["snapshot_id"].startswith("snap_")
    assert api.get(f"/v1/sandboxes/{sid}").json()["snapshot_id"] == body["snapshot_id"]
    # Without auto_resume, work on a hibernated sandbox is refused, not silently lost.
    refused = api.post(f"/v1/sandboxes/{sid}/execute", json={"code": "1", "context_id": ctx})
    assert refused.status_code == 409, refused.text
    resumed = api.post(f"/v1/sandboxes/{sid}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "running"
    assert "snapshot_id" not in resumed.json() or resumed.json()["snapshot_id"] is None
    _expect_kept(_state(api, sid, ctx), lines="line one\nline two\n")
    processes = f"/v1/sandboxes/{sid}/processes/{process.json()['pid']}"
    assert api.get(processes).json()["running"] is True
    run(api, sid, code="open('/tmp/wake', 'w').close()", context_id=ctx)
    with api.stream("GET", f"{processes}/stream") as response:
        events = [json.loads(line) for line in response.iter_lines() if line]
    assert "".join(e["text"] for e in events if e["type"] == "stdout") == "before\nafter\n"
    assert events[-1]["type"] == "end" and events[-1]["process"]["exit_code"] == 0


def test_auto_resume_wakes_a_hibernated_sandbox_on_use(
    api: httpx.Client, gvisor_only: None
) -> None:
    created = api.post("/v1/sandboxes", json={"auto_resume": True, "timeout_ms": 600_000})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    try:
        ctx = run(api, sid, code="value = 6 * 7")["context_id"]
        assert api.post(f"/v1/sandboxes/{sid}/hibernate").status_code == 200
        again = run(api, sid, code="value", context_id=ctx)
        assert again["items"] == [{"is_primary": True, "text": "42"}]
        assert api.get(f"/v1/sandboxes/{sid}").json()["status"] == "running"
    finally:
        api.delete(f"/v1/sandboxes/{sid}")


def test_snapshot_forks_are_independent_copies(
    api: httpx.Client, sandbox: dict[str, Any], gvisor_only: None
) -> None:
    sid = sandbox["id"]
    ctx = _prepared(api, sid)
    taken = api.post(f"/v1/sandboxes/{sid}/snapshots")
    assert taken.status_code == 201, taken.text
    snapshot = taken.json()
    assert snapshot["id"].startswith("snap_")
    assert snapshot["template"] == "python"
    assert snapshot["size_bytes"] > 100 * 1024 * 1024 // 4  # the array, even compressed
    assert api.get(f"/v1/snapshots/{snapshot['id']}").status_code == 200
    assert snapshot["id"] in [s["id"] for s in api.get("/v1/snapshots").json()["items"]]
    # The source keeps running and keeps its state.
    run(api, sid, code="name = 'changed in the source'", context_id=ctx)
    forks = []
    try:
        for _ in range(2):
            fork = api.post(
                "/v1/sandboxes", json={"snapshot_id": snapshot["id"], "timeout_ms": 600_000}
            )
            assert fork.status_code == 201, fork.text
            assert fork.json()["status"] == "running"
            forks.append(fork.json()["id"])
        for fork_id in forks:
            contexts = api.get(f"/v1/sandboxes/{fork_id}/contexts").json()
            items = contexts["items"] if isinstance(contexts, dict) else contexts
            assert len(items) == 1
            fork_ctx = items[0]["id"]
            assert fork_ctx != ctx
            _expect_kept(_state(api, fork_id, fork_ctx), lines="line one\nline two\n")
        # Forks do not share writes: one fork's file is not the other's.
        run(api, forks[0], code="open('/home/user/own.txt', 'w').write('mine')")
        missing = run(api, forks[1], code="import os; os.path.exists('/home/user/own.txt')")
        assert missing["items"][0]["text"] == "False"
        assert run(api, sid, code="name", context_id=ctx)["items"][0]["text"] == (
            "'changed in the source'"
        )
    finally:
        for fork_id in forks:
            api.delete(f"/v1/sandboxes/{fork_id}")
    assert api.delete(f"/v1/snapshots/{snapshot['id']}").status_code in (200, 204)
    assert api.get(f"/v1/snapshots/{snapshot['id']}").status_code == 404


def test_snapshot_during_a_running_execution_is_refused(
    api: httpx.Client, sandbox: dict[str, Any], gvisor_only: None
) -> None:
    import threading

    sid = sandbox["id"]
    ctx = run(api, sid, code="import time")["context_id"]
    done: list[int] = []
    slow = threading.Thread(
        target=lambda: done.append(
            api.post(
                f"/v1/sandboxes/{sid}/execute",
                json={
                    "code": "open('/tmp/started', 'w').close(); time.sleep(3)",
                    "context_id": ctx,
                },
            ).status_code
        )
    )
    slow.start()
    try:
        wait_for(
            lambda: (
                api.get(
                    f"/v1/sandboxes/{sid}/files/stat", params={"path": "/tmp/started"}
                ).status_code
                == 200
            )
        )
        refused = api.post(f"/v1/sandboxes/{sid}/snapshots")
        assert refused.status_code == 409, refused.text
        assert "running code" in refused.json()["detail"]
    finally:
        slow.join(30)
    assert done == [200]
    assert api.post(f"/v1/sandboxes/{sid}/snapshots").status_code == 201


def _only_current_images(images: Path, stale: Path) -> bool:
    present = list(images.iterdir())
    return stale not in present and all((p / "checkpoint.img").exists() for p in present)


def test_a_hibernated_sandbox_survives_a_server_crash(tmp_path: Path, backend: str) -> None:
    if backend != "gvisor":
        pytest.skip("memory snapshots need the gvisor backend")
    server = ServerProcess(
        tmp_path / "data", env={"SANDCASTLE_RUNTIME": "gvisor", "SANDCASTLE_WARM_POOL": "{}"}
    )
    images = tmp_path / "data" / "template-images"
    server.start()
    try:
        with server.client() as api:
            sid = api.post("/v1/sandboxes", json={"timeout_ms": 600_000}).json()["id"]
            ctx = _prepared(api, sid)
            assert api.post(f"/v1/sandboxes/{sid}/hibernate").status_code == 200
        server.kill9()
        # The image of a template build that is gone: the next start deletes it, keeps the rest.
        stale = images / "0123456789abcdef0123"
        stale.mkdir(parents=True)
        server.start()
        wait_for(lambda: _only_current_images(images, stale), timeout=120)
        with server.client() as api:
            got = api.get(f"/v1/sandboxes/{sid}").json()
            assert got["status"] == "paused"
            assert got["snapshot_id"].startswith("snap_")
            resumed = api.post(f"/v1/sandboxes/{sid}/resume")
            assert resumed.status_code == 200, resumed.text
            _expect_kept(_state(api, sid, ctx), lines="line one\nline two\n")
    finally:
        try:
            server.destroy_all()
        finally:
            server.purge()
