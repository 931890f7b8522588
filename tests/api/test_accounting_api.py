"""Credits: metering with a fake clock, deductions, restarts between them, an empty balance.

Prices here: 10 credits per vCPU-second, 4 per GiB-second, paused memory at 50 %. A sandbox of
1 vCPU and 1 GiB costs 14 credits a second running and 2 paused.
"""

from __future__ import annotations

from typing import Any

import pytest

from sandcastle.store.ledger import LedgerStore
from tests.api.conftest import AppFactory, Harness, assert_envelope
from tests.fakeclock import FakeClock

PRICES = {"credits_per_vcpu_second": 10, "credits_per_gib_second": 4, "paused_memory_percent": 50}
SIZE = {"vcpus": 1, "memory_mb": 1024, "timeout_ms": 3_600_000}
RUNNING, PAUSED = 14, 2


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def item(h: Harness, sandbox_id: str, org: str = "default") -> dict[str, Any]:
    response = await h.client.get(f"/api/v1/org/{org}/sandboxes", params={"limit": 100})
    assert response.status_code == 200, response.text
    (found,) = [i for i in response.json()["items"] if i["provider_sandbox_id"] == sandbox_id]
    item: dict[str, Any] = found
    return item


async def balance(h: Harness, org: str = "default") -> int:
    value: int = (await h.client.get(f"/v1/orgs/{org}")).json()["credit_balance"]
    return value


def iso(clock: FakeClock) -> str:
    return clock.now.isoformat().replace("+00:00", "Z")


async def test_running_time_accrues_and_a_deduction_bills_it_and_debits_the_org(
    start_app: AppFactory, clock: FakeClock
) -> None:
    async with start_app(clock=clock, **PRICES) as h:
        sandbox = await h.create(**SIZE)
        before = await balance(h)
        clock.advance(100)
        got = await item(h, sandbox["id"])
        assert (got["running_credits"], got["billed_credits"]) == (100 * RUNNING, 0)
        assert got["total_runtime_seconds"] == 100
        assert got["estimated_total_credits"] == 3600 * RUNNING  # to expires_at, an hour in
        assert got["last_credit_deduction_at"] is None

        await h.services.accounting.run_pass()
        got = await item(h, sandbox["id"])
        assert (got["running_credits"], got["billed_credits"]) == (0, 100 * RUNNING)
        assert got["last_credit_deduction_at"] == iso(clock)
        assert await balance(h) == before - 100 * RUNNING
        ledger = (await h.client.get("/v1/orgs/default/credits")).json()
        assert ledger["transactions"][0]["kind"] == "usage"
        assert ledger["transactions"][0]["amount"] == -100 * RUNNING
        assert ledger["transactions"][0]["balance_after"] == before - 100 * RUNNING

        # A second pass at the same instant bills nothing more.
        await h.services.accounting.run_pass()
        assert await balance(h) == before - 100 * RUNNING


async def test_paused_time_costs_memory_only_and_is_not_runtime(
    start_app: AppFactory, clock: FakeClock
) -> None:
    async with start_app(clock=clock, **PRICES) as h:
        sandbox = await h.create(**SIZE)
        sid = sandbox["id"]
        clock.advance(10)
        assert (await h.client.post(f"/v1/sandboxes/{sid}/pause")).status_code == 200
        paused_at = iso(clock)
        clock.advance(30)
        got = await item(h, sid)
        assert got["state"] == "paused" and got["pause_reason"] == "user"
        assert got["stopped_at"] == paused_at
        assert got["total_runtime_seconds"] == 10
        assert got["running_credits"] == 10 * RUNNING + 30 * PAUSED
        # Paused until it expires: the estimate goes on at the paused price.
        assert got["estimated_total_credits"] == 10 * RUNNING + 3590 * PAUSED

        assert (await h.client.post(f"/v1/sandboxes/{sid}/resume")).status_code == 200
        resumed_at = iso(clock)
        clock.advance(5)
        got = await item(h, sid)
        assert got["state"] == "running" and got["pause_reason"] is None
        assert got["last_started_at"] == resumed_at and got["stopped_at"] is None
        assert got["total_runtime_seconds"] == 15
        assert got["running_credits"] == 15 * RUNNING + 30 * PAUSED


async def test_a_restart_between_deductions_bills_every_second_exactly_once(
    start_app: AppFactory, clock: FakeClock
) -> None:
    async with start_app(clock=clock, **PRICES) as first:
        sandbox = await first.create(**SIZE)
        sid = sandbox["id"]
        paused = (await first.create(**SIZE))["id"]
        start = await balance(first)
        clock.advance(30)
        await first.services.accounting.run_pass()
        clock.advance(20)
        assert (await first.client.post(f"/v1/sandboxes/{paused}/pause")).status_code == 200
        clock.advance(7)  # the server stops 57 s in, 27 s after the last deduction
    await first.db.aclose()
    clock.advance(25)  # down for 25 s: the sandboxes live on, one running, one paused
    async with start_app(clock=clock, **PRICES) as second:
        clock.advance(18)
        await second.services.accounting.run_pass()
        running = await item(second, sid)
        frozen = await item(second, paused)
        assert running["billed_credits"] == 100 * RUNNING
        assert running["running_credits"] == 0
        assert running["total_runtime_seconds"] == 100
        assert frozen["billed_credits"] == 50 * RUNNING + 50 * PAUSED
        assert frozen["total_runtime_seconds"] == 50
        assert await balance(second) == start - (150 * RUNNING + 50 * PAUSED)
        # And once more after another restart with no time passing: nothing is billed twice.
    async with start_app(clock=clock, **PRICES) as third:
        await third.services.accounting.run_pass()
        assert await balance(third) == start - (150 * RUNNING + 50 * PAUSED)


async def test_a_destroyed_sandbox_is_billed_up_to_its_destruction_and_then_never(
    start_app: AppFactory, clock: FakeClock
) -> None:
    async with start_app(clock=clock, **PRICES) as h:
        sid = (await h.create(**SIZE))["id"]
        start = await balance(h)
        clock.advance(12)
        assert (await h.client.delete(f"/v1/sandboxes/{sid}")).status_code == 200
        destroyed_at = iso(clock)
        clock.advance(100)
        got = await item(h, sid)
        assert got["state"] == "killed" and got["killed_at"] == destroyed_at
        assert got["running_credits"] == 12 * RUNNING
        assert got["estimated_total_credits"] == 12 * RUNNING
        assert got["expires_at"] is None
        await h.services.accounting.run_pass()
        clock.advance(100)
        await h.services.accounting.run_pass()
        got = await item(h, sid)
        assert (got["billed_credits"], got["running_credits"]) == (12 * RUNNING, 0)
        assert got["total_runtime_seconds"] == 12
        assert got["killed_at"] == destroyed_at
        assert await balance(h) == start - 12 * RUNNING


async def test_a_deduction_that_races_a_pause_starts_over_instead_of_billing_twice(
    start_app: AppFactory, clock: FakeClock
) -> None:
    async with start_app(clock=clock, **PRICES) as h:
        sid = (await h.create(**SIZE))["id"]
        start = await balance(h)
        accounting = h.services.accounting
        clock.advance(10)
        stale = await LedgerStore(h.db).metered()  # read before the pause...
        assert (await h.client.post(f"/v1/sandboxes/{sid}/pause")).status_code == 200
        # ...so the compare-and-set refuses, and nothing is written
        assert await accounting._deduct_org(stale[0].org_id or "", stale, clock.now) is None
        assert await balance(h) == start
        await accounting.deduct()
        assert await balance(h) == start - 10 * RUNNING


async def test_an_org_out_of_credits_is_paused_and_refused_until_topped_up(
    start_app: AppFactory, clock: FakeClock
) -> None:
    async with start_app(clock=clock, initial_org_credits=1000, **PRICES) as h:
        sid = (await h.create(**SIZE))["id"]
        other = (await h.create(**SIZE))["id"]
        assert (await h.client.post(f"/v1/sandboxes/{other}/pause")).status_code == 200
        clock.advance(50)  # 50 × 14 + 50 × 2 = 800: still positive
        report = await h.services.accounting.run_pass()
        assert report.paused == [] and await balance(h) == 200
        clock.advance(50)
        report = await h.services.accounting.run_pass()
        assert report.paused == [sid]
        assert await balance(h) == 1000 - 100 * RUNNING - 100 * PAUSED
        got = await item(h, sid)
        assert got["state"] == "paused" and got["pause_reason"] == "insufficient_credits"
        assert (await item(h, other))["pause_reason"] == "user"
        assert h.runtime.agent(sid).thawed.is_set() is False  # really frozen

        body = assert_envelope(
            await h.client.post("/v1/sandboxes", json={}), 403, "usage_limit_exceeded_error"
        )
        assert "credits" in body["detail"]
        resumed = await h.client.post(f"/v1/sandboxes/{sid}/resume")
        assert_envelope(resumed, 403, "usage_limit_exceeded_error")

        topped = await h.client.post("/v1/orgs/default/credits", json={"amount": 10_000})
        assert topped.status_code == 200, topped.text
        assert topped.json()["balance"] == await balance(h) > 0
        assert topped.json()["transactions"][0]["kind"] == "topup"
        resumed = await h.client.post(f"/v1/sandboxes/{sid}/resume")
        assert resumed.status_code == 200 and resumed.json()["status"] == "running"
        assert (await item(h, sid))["pause_reason"] is None
        assert (await h.client.post("/v1/sandboxes", json={})).status_code == 201


async def test_only_owners_admins_and_operators_top_up(start_app: AppFactory) -> None:
    async with start_app() as h:
        org, owner_key = await h.add_org("acme")
        async with h.as_key(owner_key) as owner:
            member = (
                await owner.post("/v1/orgs/acme/members", json={"email": "m@acme.test"})
            ).json()
            key = (await owner.post("/v1/orgs/acme/keys", json={"member_id": member["id"]})).json()[
                "key"
            ]
            assert (
                await owner.post("/v1/orgs/acme/credits", json={"amount": 5})
            ).status_code == 200
        async with h.as_key(key) as plain:
            response = await plain.post("/v1/orgs/acme/credits", json={"amount": 5})
            assert_envelope(response, 403, "forbidden_error")
            assert (await plain.get("/v1/orgs/acme/credits")).status_code == 200
        operator = await h.client.post("/v1/orgs/acme/credits", json={"amount": 5})
        assert operator.status_code == 200
        assert operator.json()["balance"] == org["credit_balance"] + 10
        invalid = await h.client.post("/v1/orgs/acme/credits", json={"amount": 0})
        assert_envelope(invalid, 422, "validation_error")
