"""Who inside an org may use whose sandbox, swept over the app's route table.

A ``member`` uses only the sandboxes it created, and the snapshots taken of them; owners and
admins use every sandbox of their org (``docs/TENANCY.md``). Every route that names a sandbox
or a snapshot is called with a member's key on the owner's: the answer must be the 404 of an
id that exists nowhere, as between orgs (``test_tenant_isolation.py``), on the per-sandbox
hosts too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.api.conftest import Harness, assert_envelope
from tests.api.test_tenant_isolation import (
    PLAIN_PARAMS,
    Tenant,
    assert_hidden,
    endpoints,
    fill,
    populate,
    request_parts,
)
from tests.fakes import SnapshottingFakeRuntime

#: Parameters naming something of one sandbox (or a snapshot of one).
_SANDBOX_PARAMS = {"sandbox_id", "snapshot_id", "context_id", "run_id", "artifact_id"}


#: A backend with memory snapshots, so there are snapshots to hide.
FAKE_RUNTIME = SnapshottingFakeRuntime


@dataclass
class Org:
    owner: Tenant
    member_key: str
    admin_key: str
    member_sandbox: str


async def _key_for(h: Harness, owner: Tenant, email: str, role: str) -> str:
    async with h.as_key(owner.key) as c:
        base = f"/v1/orgs/{owner.slug}"
        member = await c.post(f"{base}/members", json={"email": email, "role": role})
        assert member.status_code == 201, member.text
        key = await c.post(f"{base}/keys", json={"member_id": member.json()["id"]})
        assert key.status_code == 201, key.text
        return str(key.json()["key"])


@pytest.fixture
async def org(harness: Harness) -> Org:
    owner = await populate(harness, "alpha")
    member_key = await _key_for(harness, owner, "worker@alpha.test", "member")
    admin_key = await _key_for(harness, owner, "boss@alpha.test", "admin")
    async with harness.as_key(member_key) as c:
        created = await c.post("/v1/sandboxes", json={})
        assert created.status_code == 201, created.text
    return Org(owner, member_key, admin_key, created.json()["id"])


async def test_a_member_reaches_no_route_of_another_members_sandbox(
    harness: Harness, org: Org
) -> None:
    swept = 0
    async with harness.as_key(org.member_key) as member:
        for endpoint in endpoints(harness):
            params = endpoint.params
            if not _SANDBOX_PARAMS & set(params):
                continue
            values = {p: org.owner.ids.get(p) or PLAIN_PARAMS[p] for p in params}
            await assert_hidden(member, endpoint, values)
            swept += 1
    assert swept > 20


async def test_a_member_reaches_no_other_members_sandbox_through_its_host(
    harness: Harness, org: Org
) -> None:
    prefix = "/v1/sandboxes/{sandbox_id}/agent"
    agent_routes = [e for e in endpoints(harness) if e.path.startswith(prefix)]
    assert len(agent_routes) >= 4
    for key, sandbox, status in (
        (org.member_key, org.owner.ids["sandbox_id"], 404),
        (org.member_key, org.member_sandbox, 200),
        (org.admin_key, org.owner.ids["sandbox_id"], 200),
    ):
        host = sandbox.replace("_", "-") + ".sandbox.localhost"
        async with harness.as_key(key) as client:
            assert (await client.get("/", headers={"Host": host})).status_code == status
            if status == 404:
                for endpoint in agent_routes:
                    path = fill(endpoint.path[len(prefix) :] or "/", PLAIN_PARAMS)
                    response = await client.request(
                        endpoint.method, path, headers={"Host": host}, **request_parts(endpoint)
                    )
                    assert_envelope(response, 404, "not_found_error")


async def test_a_member_lists_and_forks_only_its_own(harness: Harness, org: Org) -> None:
    async with harness.as_key(org.member_key) as member:
        listed = (await member.get("/v1/sandboxes", params={"limit": 200})).json()
        assert [s["id"] for s in listed["items"]] == [org.member_sandbox]
        snapshots = (await member.get("/v1/snapshots", params={"limit": 200})).json()
        assert snapshots["items"] == []
        forked = await member.post(
            "/v1/sandboxes", json={"snapshot_id": org.owner.ids["snapshot_id"]}
        )
        assert_envelope(forked, 404, "not_found_error")
        # Its own sandbox is its to use.
        ran = await member.post(f"/v1/sandboxes/{org.member_sandbox}/execute", json={"code": "1"})
        assert ran.status_code == 200, ran.text


@pytest.mark.parametrize("who", ["owner", "admin"])
async def test_owners_and_admins_use_every_sandbox_of_their_org(
    harness: Harness, org: Org, who: str
) -> None:
    key = org.owner.key if who == "owner" else org.admin_key
    async with harness.as_key(key) as client:
        listed = (await client.get("/v1/sandboxes", params={"limit": 200})).json()
        assert {org.member_sandbox, org.owner.ids["sandbox_id"]} <= {
            s["id"] for s in listed["items"]
        }
        for sandbox in (org.member_sandbox, org.owner.ids["sandbox_id"]):
            ran = await client.post(f"/v1/sandboxes/{sandbox}/execute", json={"code": "1"})
            assert ran.status_code == 200, ran.text
        snapshot: dict[str, Any] = (
            await client.get(f"/v1/snapshots/{org.owner.ids['snapshot_id']}")
        ).json()
        assert snapshot["id"] == org.owner.ids["snapshot_id"]
