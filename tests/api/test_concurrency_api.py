"""Many clients at once on one store: every request answers with what it documents, never a
server error, and every sandbox a client deleted ends ``destroyed``."""

from __future__ import annotations

import asyncio
import collections

import httpx

from sandcastle.domain.sandbox import SandboxStatus
from tests.api.conftest import Harness

CLIENTS = 100
ALL = ",".join(status.value for status in SandboxStatus)


async def one_client(client: httpx.AsyncClient, n: int, seen: collections.Counter[str]) -> None:
    def note(kind: str, response: httpx.Response, *expected: int) -> None:
        seen[f"{kind} {response.status_code}"] += 1
        assert response.status_code in expected, (kind, response.text)

    created = await client.post("/v1/sandboxes", json={"metadata": {"client": str(n)}})
    note("create", created, 201)
    sandbox_id = created.json()["id"]
    base = f"/v1/sandboxes/{sandbox_id}"
    for _ in range(3):
        note("execute", await client.post(f"{base}/execute", json={"code": "1+1"}), 200)
    context = await client.post(f"{base}/contexts", json={"language": "python"})
    note("context", context, 201)
    executed = await client.post(
        f"{base}/execute", json={"code": "x = 2", "context_id": context.json()["id"]}
    )
    note("execute in context", executed, 200)
    note("pause", await client.post(f"{base}/pause"), 200)
    note("resume", await client.post(f"{base}/resume"), 200)
    note("list", await client.get("/v1/sandboxes", params={"limit": 5}), 200)
    note("delete", await client.delete(base), 200)


async def test_concurrent_clients_get_no_server_error_and_leave_nothing_running(
    harness: Harness,
) -> None:
    seen: collections.Counter[str] = collections.Counter()
    results = await asyncio.gather(
        *(one_client(harness.client, n, seen) for n in range(CLIENTS)), return_exceptions=True
    )
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    assert failures == [], (failures[:3], seen)
    listing = await harness.client.get("/v1/sandboxes", params={"limit": 200, "status": ALL})
    statuses = collections.Counter(s["status"] for s in listing.json()["items"])
    assert statuses == {"destroyed": CLIENTS}, statuses
    assert await harness.runtime.list_sandboxes() == []
