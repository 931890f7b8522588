"""``/v1/orgs``: orgs, projects, workspaces, members and keys, and who may manage them."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from sandcastle.store.models import ApiKeyRow, MemberRow, UserRow
from tests.api.conftest import AppFactory, Harness, assert_envelope

BASE = "/v1/orgs/default"


async def member_key(h: Harness, email: str, role: str = "member", org: str = "default") -> str:
    member = await h.client.post(f"/v1/orgs/{org}/members", json={"email": email, "role": role})
    assert member.status_code == 201, member.text
    key = await h.client.post(f"/v1/orgs/{org}/keys", json={"member_id": member.json()["id"]})
    assert key.status_code == 201, key.text
    secret: str = key.json()["key"]
    return secret


# --- first start and orgs ---------------------------------------------------------------------


async def test_the_admin_key_is_the_key_of_an_owner_of_org_default(harness: Harness) -> None:
    (org,) = (await harness.client.get("/v1/orgs")).json()["items"]
    assert (org["slug"], org["role"]) == ("default", "owner")
    assert org["credit_balance"] == harness.settings.initial_org_credits
    assert org["limits"] == {
        "max_concurrent_sandboxes": harness.settings.org_max_concurrent_sandboxes,
        "max_members": harness.settings.org_max_members,
        "max_vcpus": harness.settings.max_vcpus,
        "max_memory_mb": harness.settings.max_memory_mb,
        "rate_limit_per_s": harness.settings.rate_limit_per_s,
        "rate_limit_burst": harness.settings.rate_limit_burst,
    }
    (member,) = (await harness.client.get(f"{BASE}/members")).json()["items"]
    assert (member["email"], member["role"], member["over_limit"]) == (
        "admin@localhost",
        "owner",
        False,
    )
    (key,) = (await harness.client.get(f"{BASE}/keys")).json()["items"]
    assert key["member_id"] == member["id"] and key["project_id"] is None
    assert harness.key.startswith(key["prefix"]) and "key" not in key


async def test_the_operator_creates_orgs_and_gets_the_new_owner_key_once(
    harness: Harness,
) -> None:
    created = await harness.client.post("/v1/orgs", json={"slug": "acme", "name": "Acme"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"org", "key"}
    assert (body["org"]["slug"], body["org"]["name"], body["org"]["role"]) == (
        "acme",
        "Acme",
        "owner",
    )
    secret = body["key"]["key"]
    async with harness.as_key(secret) as owner:
        (org,) = (await owner.get("/v1/orgs")).json()["items"]
        assert org["slug"] == "acme"
        projects = (await owner.get("/v1/orgs/acme/projects")).json()["items"]
        assert [p["key"] for p in projects] == ["default"]
        assert_envelope(await owner.get(BASE), 404, "not_found_error")
        # An owner of an org other than the first is no operator: no orgs of their own making.
        refused = await owner.post("/v1/orgs", json={"slug": "acme-2"})
        assert_envelope(refused, 403, "forbidden_error")
        listed = (await owner.get("/v1/orgs/acme/keys")).json()["items"]
        assert all("key" not in k for k in listed)
    again = await harness.client.post("/v1/orgs", json={"slug": "acme"})
    assert_envelope(again, 409, "already_exists_error")


@pytest.mark.parametrize("slug", ["", "Acme", "-acme", "acme-", "a_b", "a" * 65, "a b"])
async def test_org_slugs_are_validated(harness: Harness, slug: str) -> None:
    response = await harness.client.post("/v1/orgs", json={"slug": slug})
    assert_envelope(response, 422, "validation_error")


async def test_org_creation_can_be_opened_to_everyone(start_app: AppFactory) -> None:
    async with start_app(allow_org_create=True) as h:
        _org, key = await h.add_org("acme")
        async with h.as_key(key) as owner:
            created = await owner.post("/v1/orgs", json={"slug": "acme-labs"})
            assert created.status_code == 201, created.text


# --- projects and workspaces ------------------------------------------------------------------


async def test_projects_and_workspaces_are_managed_by_owners_and_admins(harness: Harness) -> None:
    project = await harness.client.post(f"{BASE}/projects", json={"key": "ml", "name": "ML"})
    assert project.status_code == 201, project.text
    pid = project.json()["id"]
    assert (await harness.client.get(f"{BASE}/projects/{pid}")).json()["name"] == "ML"
    duplicate = await harness.client.post(f"{BASE}/projects", json={"key": "ml"})
    assert_envelope(duplicate, 409, "already_exists_error")
    workspace = await harness.client.post(
        f"{BASE}/workspaces", json={"key": "w1", "project_id": pid}
    )
    assert workspace.status_code == 201, workspace.text
    default_ws = await harness.client.post(f"{BASE}/workspaces", json={"key": "w2"})
    assert default_ws.json()["project_id"] != pid
    only = (await harness.client.get(f"{BASE}/workspaces", params={"project_id": pid})).json()
    assert [w["key"] for w in only["items"]] == ["w1"]
    missing = await harness.client.post(
        f"{BASE}/workspaces", json={"key": "w3", "project_id": "nope"}
    )
    assert_envelope(missing, 404, "not_found_error")

    key = await member_key(harness, "m@x.test")
    async with harness.as_key(key) as member:
        assert (await member.get(f"{BASE}/projects")).status_code == 200
        for path, body in (
            (f"{BASE}/projects", {"key": "x"}),
            (f"{BASE}/workspaces", {"key": "x"}),
        ):
            assert_envelope(await member.post(path, json=body), 403, "forbidden_error")


# --- members ----------------------------------------------------------------------------------


async def test_members_are_added_changed_and_removed_with_their_keys(harness: Harness) -> None:
    added = await harness.client.post(
        f"{BASE}/members", json={"email": "ann@x.test", "name": "Ann", "role": "admin"}
    )
    assert added.status_code == 201, added.text
    ann = added.json()
    assert (ann["email"], ann["name"], ann["role"]) == ("ann@x.test", "Ann", "admin")
    twice = await harness.client.post(f"{BASE}/members", json={"email": "ann@x.test"})
    assert_envelope(twice, 409, "member_exists_error")
    bad = await harness.client.post(f"{BASE}/members", json={"email": "nobody"})
    assert_envelope(bad, 422, "validation_error")

    key = (
        await harness.client.post(f"{BASE}/keys", json={"member_id": ann["id"], "name": "ann"})
    ).json()["key"]
    async with harness.as_key(key) as admin:
        # Admins manage members, but owners only owners do.
        assert (await admin.post(f"{BASE}/members", json={"email": "bo@x.test"})).status_code == 201
        owner_add = await admin.post(
            f"{BASE}/members", json={"email": "cy@x.test", "role": "owner"}
        )
        assert_envelope(owner_add, 403, "forbidden_error")
        (owner,) = [
            m for m in (await admin.get(f"{BASE}/members")).json()["items"] if m["role"] == "owner"
        ]
        demote = await admin.patch(f"{BASE}/members/{owner['id']}", json={"role": "member"})
        assert_envelope(demote, 403, "forbidden_error")
        assert (await admin.get(f"{BASE}/keys")).status_code == 200

        # Demoted, Ann's key acts as a member at once.
        changed = await harness.client.patch(f"{BASE}/members/{ann['id']}", json={"role": "member"})
        assert changed.status_code == 200 and changed.json()["role"] == "member"
        assert_envelope(
            await admin.post(f"{BASE}/projects", json={"key": "z"}), 403, "forbidden_error"
        )

        removed = await harness.client.delete(f"{BASE}/members/{ann['id']}")
        assert removed.status_code == 204
        assert_envelope(await admin.get("/v1/orgs"), 401, "authentication_error")
    emails = [m["email"] for m in (await harness.client.get(f"{BASE}/members")).json()["items"]]
    assert emails == ["admin@localhost", "bo@x.test"]


async def test_an_org_keeps_at_least_one_owner(harness: Harness) -> None:
    (owner,) = (await harness.client.get(f"{BASE}/members")).json()["items"]
    for response in (
        await harness.client.patch(f"{BASE}/members/{owner['id']}", json={"role": "admin"}),
        await harness.client.delete(f"{BASE}/members/{owner['id']}"),
    ):
        assert_envelope(response, 409, "conflict_error")


# --- keys -------------------------------------------------------------------------------------


async def test_keys_are_shown_once_stored_hashed_and_revoked_at_once(harness: Harness) -> None:
    created = await harness.client.post(f"{BASE}/keys", json={"name": "ci"})
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["key"]
    assert secret.startswith("sc_") and secret.startswith(body["prefix"])
    async with harness.db.session() as session:
        row = await session.get(ApiKeyRow, body["id"])
        assert row is not None
        assert row.key_hash == hashlib.sha256(secret.encode()).hexdigest()
        values = [str(v) for v in row.__dict__.values()]
        assert not any(secret in v for v in values)
    listed = (await harness.client.get(f"{BASE}/keys")).json()["items"]
    assert all("key" not in k for k in listed)
    async with harness.as_key(secret) as ci:
        assert (await ci.get("/v1/sandboxes")).status_code == 200
        assert (await harness.client.delete(f"{BASE}/keys/{body['id']}")).status_code == 204
        assert_envelope(await ci.get("/v1/sandboxes"), 401, "authentication_error")
    revoked = [k for k in (await harness.client.get(f"{BASE}/keys")).json()["items"]]
    assert [k["revoked_at"] is not None for k in revoked] == [False, True]
    assert_envelope(
        await harness.client.delete(f"{BASE}/keys/00000000-0000-0000-0000-000000000000"),
        404,
        "not_found_error",
    )


async def test_members_manage_their_own_keys_only(harness: Harness) -> None:
    key = await member_key(harness, "m@x.test")
    other = await member_key(harness, "n@x.test")
    async with harness.as_key(key) as member:
        own = await member.post(f"{BASE}/keys", json={"name": "mine"})
        assert own.status_code == 201, own.text
        listed = (await member.get(f"{BASE}/keys")).json()["items"]
        assert {k["member_id"] for k in listed} == {own.json()["member_id"]}
        assert len(listed) == 2
        everyone = (await harness.client.get(f"{BASE}/keys")).json()["items"]
        foreign = [k for k in everyone if k["member_id"] != own.json()["member_id"]]
        for k in foreign:
            assert_envelope(await member.delete(f"{BASE}/keys/{k['id']}"), 404, "not_found_error")
        owner_id = next(k["member_id"] for k in foreign if k["name"] == "admin")
        refused = await member.post(f"{BASE}/keys", json={"member_id": owner_id})
        assert_envelope(refused, 403, "forbidden_error")
        assert (await member.delete(f"{BASE}/keys/{own.json()['id']}")).status_code == 204
    async with harness.as_key(other) as untouched:
        assert (await untouched.get("/v1/sandboxes")).status_code == 200


async def test_a_project_scoped_key_cannot_escape_its_project(harness: Harness) -> None:
    project = (await harness.client.post(f"{BASE}/projects", json={"key": "p"})).json()
    scoped = (await harness.client.post(f"{BASE}/keys", json={"project_id": project["id"]})).json()
    assert scoped["project_id"] == project["id"]
    async with harness.as_key(scoped["key"]) as client:
        minted = await client.post(f"{BASE}/keys", json={})
        assert minted.status_code == 201 and minted.json()["project_id"] == project["id"]
        default = (await client.get(f"{BASE}/projects")).json()["items"][0]["id"]
        refused = await client.post(f"{BASE}/keys", json={"project_id": default})
        assert_envelope(refused, 403, "forbidden_error")
        created = await client.post("/v1/sandboxes", json={})
        assert created.status_code == 201


async def test_migrated_users_and_members_are_consistent(harness: Harness) -> None:
    await member_key(harness, "m@x.test")
    async with harness.db.session() as session:
        keys = (await session.scalars(select(ApiKeyRow))).all()
        members = {m.id: m for m in (await session.scalars(select(MemberRow))).all()}
        users = {u.id for u in (await session.scalars(select(UserRow))).all()}
    for key in keys:
        assert key.member_id in members
        assert members[key.member_id].user_id in users
        assert key.org_id == members[key.member_id].org_id
