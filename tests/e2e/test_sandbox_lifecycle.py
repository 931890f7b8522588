"""Create, get, list and destroy through HTTP against real bwrap sandboxes."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx

from tests.serverproc import ServerProcess


def _running(pid: int) -> bool:
    """The process exists and is not a zombie waiting for its parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_create_returns_running_sandbox_with_documented_fields(sandbox: dict[str, object]) -> None:
    assert re.fullmatch(r"sb_[0-9a-f]{8}", str(sandbox["id"]))
    assert sandbox["status"] == "running"
    assert sandbox["config"] == {"vcpus": 1, "memory_mb": 512, "disk_mb": 1024}
    assert sandbox["template"] == "python"
    assert sandbox["timeout_ms"] == 600_000
    assert sandbox["expires_at"] == sandbox["timeout_at"]
    assert sandbox["started_at"] and sandbox["created_at"]
    assert "snapshot_id" not in sandbox  # only while paused
    # The server keeps a warm pool for "python", so create considered it.
    checkout = sandbox["warm_pool_checkout"]
    assert isinstance(checkout, dict) and checkout["id"] == "wp_python"
    assert isinstance(checkout["hit"], bool)
    assert "traffic_access_token" not in sandbox  # only when asked for


def test_metadata_is_stored_verbatim_and_get_returns_it(api: httpx.Client) -> None:
    metadata = {"owner": "agent-7", "nested": {"list": [1, 2, {"x": None}]}, "n": 1.5}
    created = api.post("/v1/sandboxes", json={"template": "python", "metadata": metadata})
    assert created.status_code == 201, created.text
    sandbox_id = created.json()["id"]
    try:
        got = api.get(f"/v1/sandboxes/{sandbox_id}")
        assert got.status_code == 200
        assert got.json()["metadata"] == metadata
    finally:
        api.delete(f"/v1/sandboxes/{sandbox_id}")


def test_delete_keeps_the_record_as_destroyed_and_removes_processes(
    api: httpx.Client, server: ServerProcess
) -> None:
    sandbox_id = api.post("/v1/sandboxes", json={}).json()["id"]
    layer = server.data_dir / "sandboxes" / sandbox_id
    (cgroup,) = Path("/sys/fs/cgroup/pids/sandcastle").glob(f"*/{sandbox_id}")
    (run_dir,) = Path("/run/sandcastle").glob(f"*/{sandbox_id}")
    socket = run_dir / "chan" / "agent.sock"
    pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
    assert layer.exists() and socket.exists() and pids
    assert os.path.ismount(run_dir / "root") and os.path.ismount(layer / "layer")
    deleted = api.delete(f"/v1/sandboxes/{sandbox_id}")
    assert deleted.status_code == 200
    assert deleted.json()["status"] == "destroyed"
    assert api.get(f"/v1/sandboxes/{sandbox_id}").json()["status"] == "destroyed"
    assert not layer.exists()
    assert not cgroup.exists()
    assert not run_dir.exists() and not socket.exists()
    assert not any(_running(pid) for pid in pids)
    assert str(run_dir) not in Path("/proc/mounts").read_text()
    executed = api.post(f"/v1/sandboxes/{sandbox_id}/execute", json={"code": "1"})
    assert executed.status_code == 409
    assert executed.json()["type"] == "conflict_error"


def test_list_is_newest_first_and_paginates_without_gaps(api: httpx.Client) -> None:
    ids = [api.post("/v1/sandboxes", json={}).json()["id"] for _ in range(3)]
    try:
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, str | int] = {"limit": 1}
            if cursor:
                params["cursor"] = cursor
            page = api.get("/v1/sandboxes", params=params).json()
            assert "next_cursor" in page
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen))
        positions = [seen.index(i) for i in ids]
        assert positions == sorted(positions, reverse=True)  # newest first
    finally:
        for sandbox_id in ids:
            api.delete(f"/v1/sandboxes/{sandbox_id}")


def test_bad_input_gets_the_envelope(api: httpx.Client, server: ServerProcess) -> None:
    unknown_template = api.post("/v1/sandboxes", json={"template": "nope"})
    assert unknown_template.status_code == 404
    assert unknown_template.json()["type"] == "not_found_error"

    malformed = api.post(
        "/v1/sandboxes", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 422
    assert malformed.json()["type"] == "validation_error"
    assert malformed.json()["code"] == 422

    wrong_type = api.post("/v1/sandboxes", json={"memory_mb": "lots"})
    body = wrong_type.json()
    assert wrong_type.status_code == 422
    assert body["errors"][0]["loc"] == ["body", "memory_mb"]
    assert {"loc", "msg", "type"} <= set(body["errors"][0])

    too_big = api.post("/v1/sandboxes", json={"memory_mb": 10**7})
    assert too_big.status_code == 422

    missing = api.get("/v1/sandboxes/sb_00000000")
    assert missing.status_code == 404
    assert missing.json() == {
        "code": 404,
        "detail": "sandbox sb_00000000 not found",
        "type": "not_found_error",
    }

    for headers in ({}, {"Authorization": "Bearer sc_wrong"}):
        unauth = httpx.get(server.url + "/v1/sandboxes", headers=headers)
        assert unauth.status_code == 401
        assert unauth.json()["type"] == "authentication_error"

    no_route = api.get("/v1/nothing-here")
    assert no_route.status_code == 404 and no_route.json()["type"] == "not_found_error"
    wrong_method = api.put("/v1/sandboxes")
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == 405
