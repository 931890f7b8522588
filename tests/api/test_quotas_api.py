"""Per-org quotas and per-key rate limits: concurrent sandboxes, members, resources, requests."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.api.conftest import AppFactory, Harness, assert_envelope

URL = "/api/v1/org/acme/sandboxes"


async def set_limits(h: Harness, org: str, **limits: Any) -> dict[str, Any]:
    response = await h.client.patch(f"/v1/orgs/{org}/limits", json=limits)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_only_operators_change_limits(harness: Harness) -> None:
    _org, key = await harness.add_org("acme")
    async with harness.as_key(key) as owner:
        response = await owner.patch("/v1/orgs/acme/limits", json={"max_members": 1000})
        assert_envelope(response, 403, "forbidden_error")
        assert_envelope(
            await owner.patch("/v1/orgs/default/limits", json={"max_members": 1}),
            404,
            "not_found_error",
        )
    body = await set_limits(harness, "acme", max_members=3, max_vcpus=2)
    assert body["limits"]["max_members"] == 3 and body["limits"]["max_vcpus"] == 2
    reset = await set_limits(harness, "acme", max_members=None)
    assert reset["limits"]["max_members"] == harness.settings.org_max_members
    assert reset["limits"]["max_vcpus"] == 2  # untouched: only the fields sent change
    too_big = await harness.client.patch(
        "/v1/orgs/acme/limits", json={"max_vcpus": harness.settings.max_vcpus + 1}
    )
    assert_envelope(too_big, 422, "validation_error")


async def test_creates_past_the_concurrent_capacity_are_429(harness: Harness) -> None:
    _org, key = await harness.add_org("acme")
    await set_limits(harness, "acme", max_concurrent_sandboxes=2)
    async with harness.as_key(key) as owner:
        first = (await owner.post("/v1/sandboxes", json={})).json()["id"]
        second = (await owner.post("/v1/sandboxes", json={})).json()["id"]
        assert (await owner.post(f"/v1/sandboxes/{second}/pause")).status_code == 200
        third = await owner.post("/v1/sandboxes", json={})
        body = assert_envelope(third, 429, "org_sandbox_capacity_exceeded_error")
        assert "2" in body["detail"]
        # Another org is not affected.
        assert (await harness.client.post("/v1/sandboxes", json={})).status_code == 201
        assert (await owner.delete(f"/v1/sandboxes/{first}")).status_code == 200
        assert (await owner.post("/v1/sandboxes", json={})).status_code == 201


async def test_concurrent_creates_cannot_slip_past_the_capacity(harness: Harness) -> None:
    _org, key = await harness.add_org("acme")
    await set_limits(harness, "acme", max_concurrent_sandboxes=3)
    async with harness.as_key(key) as owner:
        answers = await asyncio.gather(*(owner.post("/v1/sandboxes", json={}) for _ in range(8)))
        codes = sorted(r.status_code for r in answers)
        assert codes == [201] * 3 + [429] * 5
        listed = (await owner.get(URL, params={"state": "running"})).json()["items"]
        assert len(listed) == 3


async def test_per_org_resource_bounds_narrow_the_servers(harness: Harness) -> None:
    _org, key = await harness.add_org("acme")
    await set_limits(harness, "acme", max_vcpus=1, max_memory_mb=256)
    async with harness.as_key(key) as owner:
        body = assert_envelope(
            await owner.post("/v1/sandboxes", json={"vcpus": 2}), 422, "validation_error"
        )
        assert "vcpus" in body["detail"] and "org" in body["detail"]
        assert_envelope(
            await owner.post("/v1/sandboxes", json={"memory_mb": 512}), 422, "validation_error"
        )
        # The server's default (512 MiB) is above the org's bound: the org's bound is used.
        created = await owner.post("/v1/sandboxes", json={})
        assert created.status_code == 201, created.text
        assert created.json()["config"] == {"vcpus": 1, "memory_mb": 256, "disk_mb": 1024}
    # The default org keeps the server's bounds.
    assert (await harness.client.post("/v1/sandboxes", json={"vcpus": 2})).status_code == 201


async def test_the_member_limit_refuses_members_and_pauses_those_past_it(
    harness: Harness,
) -> None:
    _org, key = await harness.add_org("acme")
    async with harness.as_key(key) as owner:
        keys = {}
        for email in ("a@acme.test", "b@acme.test"):
            member = (await owner.post("/v1/orgs/acme/members", json={"email": email})).json()
            made = await owner.post("/v1/orgs/acme/keys", json={"member_id": member["id"]})
            keys[email] = made.json()["key"]
        await set_limits(harness, "acme", max_members=3)
        full = await owner.post("/v1/orgs/acme/members", json={"email": "c@acme.test"})
        assert_envelope(full, 403, "member_limit_exceeded_error")

        async with (
            harness.as_key(keys["a@acme.test"]) as a,
            harness.as_key(keys["b@acme.test"]) as b,
        ):
            kept = (await a.post("/v1/sandboxes", json={})).json()["id"]
            late = (await b.post("/v1/sandboxes", json={})).json()["id"]
            # Lowered to two: the owner ranks first, then by joining; b is past the limit.
            await set_limits(harness, "acme", max_members=2)
            states = {i["provider_sandbox_id"]: i for i in (await owner.get(URL)).json()["items"]}
            assert states[kept]["state"] == "running"
            assert states[late]["state"] == "paused"
            assert states[late]["pause_reason"] == "member_limit_exceeded"
            members = (await owner.get("/v1/orgs/acme/members")).json()["items"]
            assert [m["over_limit"] for m in members] == [False, False, True]
            assert_envelope(
                await b.post("/v1/sandboxes", json={}), 403, "member_limit_exceeded_error"
            )
            assert_envelope(
                await b.post(f"/v1/sandboxes/{late}/resume"), 403, "member_limit_exceeded_error"
            )
            # The owner cannot resume it either while its creator is past the limit.
            assert_envelope(
                await owner.post(f"/v1/sandboxes/{late}/resume"),
                403,
                "member_limit_exceeded_error",
            )
            await set_limits(harness, "acme", max_members=None)
            assert (await b.post(f"/v1/sandboxes/{late}/resume")).status_code == 200


async def test_each_key_is_rate_limited_with_retry_after(start_app: AppFactory) -> None:
    async with start_app(rate_limit_per_s=0.5, rate_limit_burst=3) as h:
        now = [1000.0]
        h.app.state.ratelimit.clock = lambda: now[0]
        _org, key = await h.add_org("acme")  # the operator's first request
        for _ in range(2):
            assert (await h.client.get("/v1/sandboxes")).status_code == 200
        limited = await h.client.get("/v1/sandboxes")
        body = assert_envelope(limited, 429, "e2b_rate_limit_error")
        assert limited.headers["retry-after"] == "2"  # one token every 2 s
        assert "0.5 per second" in body["detail"]
        # Another key has a bucket of its own; health needs no key and is never limited.
        async with h.as_key(key) as other:
            for _ in range(3):
                assert (await other.get("/v1/sandboxes")).status_code == 200
            assert (await other.get("/v1/sandboxes")).status_code == 429
            for _ in range(5):
                assert (await h.anon.get("/v1/health")).status_code == 200
            now[0] += 1.0  # half a token: still limited, and told to wait the other second
            again = await h.client.get("/v1/sandboxes")
            assert again.status_code == 429 and again.headers["retry-after"] == "1"
            now[0] += 1.0
            assert (await h.client.get("/v1/sandboxes")).status_code == 200
            assert (await h.client.get("/v1/sandboxes")).status_code == 429
            # A per-org override: 0 lifts the limit for acme's keys.
            now[0] += 10
            await set_limits(h, "acme", rate_limit_per_s=0)
            for _ in range(20):
                assert (await other.get("/v1/sandboxes")).status_code == 200


async def test_a_limits_patch_that_names_nothing_changes_nothing(harness: Harness) -> None:
    await set_limits(harness, "default", max_members=7)
    before = (await harness.client.get("/v1/orgs/default")).json()
    response = await harness.client.patch("/v1/orgs/default/limits", json={})
    assert response.status_code == 200, response.text
    assert response.json() == before


async def test_two_servers_on_one_postgresql_cannot_slip_past_the_capacity_together(
    start_app: AppFactory, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("an SQLite store serves one server process")
    # Two apps on one database and one host (the runtime is the machine's, shared): like two
    # server processes, each with its own engine and its own in-process locks.
    async with start_app() as first, start_app() as second:
        _org, key = await first.add_org("acme")
        await set_limits(first, "acme", max_concurrent_sandboxes=3)
        async with first.as_key(key) as a, second.as_key(key) as b:
            answers = await asyncio.gather(
                *(client.post("/v1/sandboxes", json={}) for client in [a, b] * 8)
            )
        codes = sorted(r.status_code for r in answers)
        assert codes == [201] * 3 + [429] * 13, [r.text for r in answers]
