"""The warm pool through the API, in process: checkout, misses, invisibility, refills."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from sandcastle.store.models import SandboxRow
from tests.api.conftest import AppFactory, Harness


async def wait_ready(harness: Harness, ready: int) -> None:
    for _ in range(500):
        health = (await harness.client.get("/v1/health")).json()
        if health["warm_pools"]["python"]["ready"] >= ready:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the pool did not fill")


async def pool_rows(harness: Harness) -> int:
    async with harness.db.session() as session:
        count = await session.scalar(
            select(func.count()).select_from(SandboxRow).where(SandboxRow.pool.is_not(None))
        )
    return int(count or 0)


async def test_hit_miss_and_refill(start_app: AppFactory) -> None:
    async with start_app(warm_pool={"python": 2}) as h:
        await wait_ready(h, 2)
        assert (await h.client.get("/v1/sandboxes")).json()["items"] == []  # invisible
        hit = (await h.client.post("/v1/sandboxes", json={"metadata": {"a": 1}})).json()
        assert hit["warm_pool_checkout"] == {"hit": True, "id": "wp_python"}
        assert hit["metadata"] == {"a": 1} and hit["status"] == "running"
        listed = (await h.client.get("/v1/sandboxes")).json()["items"]
        assert [s["id"] for s in listed] == [hit["id"]]
        miss = (await h.client.post("/v1/sandboxes", json={"vcpus": 2})).json()
        assert miss["warm_pool_checkout"] == {"hit": False, "id": "wp_python"}
        no_pool = await h.client.post("/v1/sandboxes", json={"network": {"internet": True}})
        assert no_pool.json()["warm_pool_checkout"]["hit"] is False
        await wait_ready(h, 2)  # refilled in the background
        assert await pool_rows(h) == 2


async def test_concurrent_creates_never_share_an_entry(start_app: AppFactory) -> None:
    async with start_app(warm_pool={"python": 3}) as h:
        await wait_ready(h, 3)
        responses = await asyncio.gather(
            *(h.client.post("/v1/sandboxes", json={}) for _ in range(6))
        )
        bodies = [r.json() for r in responses]
        assert all(r.status_code == 201 for r in responses)
        ids = [b["id"] for b in bodies]
        assert len(set(ids)) == 6
        # Refills race the creates, so more than three may hit; none may share an entry.
        assert any(b["warm_pool_checkout"]["hit"] for b in bodies)


async def test_no_pool_for_a_template_means_not_considered(start_app: AppFactory) -> None:
    async with start_app(warm_pool={}) as h:
        created = (await h.client.post("/v1/sandboxes", json={})).json()
        assert "warm_pool_checkout" not in created


async def test_a_dead_pool_entry_is_replaced(start_app: AppFactory) -> None:
    async with start_app(warm_pool={"python": 1}) as h:
        await wait_ready(h, 1)
        async with h.db.session() as session:
            (entry,) = (
                await session.scalars(select(SandboxRow.id).where(SandboxRow.pool.is_not(None)))
            ).all()
        await h.runtime.kill(entry)
        await h.app.state.services.reconciler.reconcile()
        await wait_ready(h, 1)
        async with h.db.session() as session:
            assert await session.get(SandboxRow, entry) is None  # forgotten, not an error row
            replacement = (
                await session.scalars(select(SandboxRow.id).where(SandboxRow.pool.is_not(None)))
            ).all()
        assert replacement and replacement[0] != entry


async def test_an_entry_is_taken_only_once_its_spare_kernel_is_ready(start_app: AppFactory) -> None:
    async with start_app(warm_pool={"python": 1}) as h:
        await wait_ready(h, 1)
        hit = (await h.client.post("/v1/sandboxes", json={})).json()
        assert hit["warm_pool_checkout"]["hit"] is True
        asked = [method for method, _params in h.runtime.agent(hit["id"]).requests]
        assert asked[0] == "warm"
        (params,) = [p for m, p in h.runtime.agent(hit["id"]).requests if m == "warm"]
        assert params == {"languages": ["python"]}
