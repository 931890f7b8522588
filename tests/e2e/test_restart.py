"""``kill -9`` of the server loses nothing: records stay, sandboxes are re-adopted and run."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.executing import run
from tests.serverproc import ServerProcess


def test_sandboxes_survive_a_server_crash(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    server.start()
    try:
        with server.client() as api:
            sandbox_id = api.post("/v1/sandboxes", json={"metadata": {"k": "v"}}).json()["id"]
            ctx = run(api, sandbox_id, code="survivor = 'still here'")["context_id"]
            destroyed_id = api.post("/v1/sandboxes", json={}).json()["id"]
            api.delete(f"/v1/sandboxes/{destroyed_id}")
        server.kill9()
        server.start()
        with server.client() as api:
            got = api.get(f"/v1/sandboxes/{sandbox_id}").json()
            assert got["status"] == "running"
            assert got["metadata"] == {"k": "v"}
            assert api.get(f"/v1/sandboxes/{destroyed_id}").json()["status"] == "destroyed"
            again = run(api, sandbox_id, code="survivor", context_id=ctx)
            assert again["items"] == [{"is_primary": True, "text": "'still here'"}]
    finally:
        try:
            server.destroy_all()
        finally:
            server.purge()
