"""Tenancy through a real server and real sandboxes: isolation between orgs on a handful of
routes (per-sandbox hosts included), the org list's fields, the CLI, and credits running out."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.executing import run
from tests.helpers import eventually as wait_for
from tests.helpers import new_org
from tests.serverproc import ServerProcess, templates_dir


@pytest.fixture
def two_orgs(server: ServerProcess, api: httpx.Client) -> Iterator[tuple[Any, ...]]:
    a_slug, a_key = new_org(api, "alpha")
    b_slug, b_key = new_org(api, "beta")
    with server.client(a_key) as a, server.client(b_key) as b:
        created = b.post("/v1/sandboxes", json={"timeout_ms": 600_000})
        assert created.status_code == 201, created.text
        sandbox = created.json()
        try:
            yield a, b, a_slug, b_slug, sandbox
        finally:
            b.delete(f"/v1/sandboxes/{sandbox['id']}")


def test_another_orgs_sandbox_is_404_on_every_way_in(
    server: ServerProcess, two_orgs: tuple[Any, ...]
) -> None:
    a, b, _a_slug, b_slug, sandbox = two_orgs
    sid = sandbox["id"]
    context = run(b, sid, code="secret = 42")["context_id"]
    attempts = [
        ("GET", f"/v1/sandboxes/{sid}", None),
        ("POST", f"/v1/sandboxes/{sid}/execute", {"code": "secret"}),
        ("POST", f"/v1/sandboxes/{sid}/execute", {"code": "secret", "context_id": context}),
        ("GET", f"/v1/sandboxes/{sid}/contexts/{context}", None),
        ("GET", f"/v1/sandboxes/{sid}/files", None),
        ("GET", f"/v1/sandboxes/{sid}/files/content?path=/etc/hostname", None),
        ("POST", f"/v1/sandboxes/{sid}/pause", None),
        ("DELETE", f"/v1/sandboxes/{sid}", None),
        ("GET", f"/api/v1/org/{b_slug}/sandboxes", None),
        ("GET", f"/v1/orgs/{b_slug}/members", None),
    ]
    for method, path, body in attempts:
        response = a.request(method, path, json=body)
        assert response.status_code == 404, f"{method} {path}: {response.text}"
        assert response.json()["type"] == "not_found_error"
    host = sid.replace("_", "-") + ".sandbox.localhost"
    for method, path, body in [("GET", "/", None), ("POST", "/execute", {"code": "secret"})]:
        response = a.request(method, path, json=body, headers={"Host": host})
        assert response.status_code == 404, f"{method} {host}{path}: {response.text}"
    # Untouched, and still B's: the sandbox runs and keeps its state.
    assert b.get(f"/v1/sandboxes/{sid}").json()["status"] == "running"
    assert run(b, sid, code="secret", context_id=context)["items"][0]["text"] == "42"
    assert b.get("/", headers={"Host": host}).status_code == 200


def test_the_org_list_describes_real_sandboxes(two_orgs: tuple[Any, ...], backend: str) -> None:
    _a, b, _a_slug, b_slug, sandbox = two_orgs
    manifest = json.loads((templates_dir() / "python" / "manifest.json").read_text())
    time.sleep(0.5)  # half a second of running: some 6 credits
    assert b.post(f"/v1/sandboxes/{sandbox['id']}/pause").status_code == 200
    (item,) = b.get(f"/api/v1/org/{b_slug}/sandboxes").json()["items"]
    assert item["provider"] == backend and item["provider_sandbox_id"] == sandbox["id"]
    assert item["build_id"] == manifest["build_id"] and item["build_ref"] == "python"
    assert item["state"] == "paused" and item["pause_reason"] == "user"
    assert item["project_key"] == "default" and item["sandbox_kind"] == "runtime"
    assert item["running_credits"] + item["billed_credits"] > 0
    assert item["estimated_total_credits"] > item["running_credits"] + item["billed_credits"]
    assert item["total_runtime_seconds"] == 0  # under a second of running time
    assert b.post(f"/v1/sandboxes/{sandbox['id']}/resume").status_code == 200
    (item,) = b.get(f"/api/v1/org/{b_slug}/sandboxes", params={"state": "running"}).json()["items"]
    assert item["pause_reason"] is None and item["stopped_at"] is None


def cli(server: ServerProcess, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SANDCASTLE_URL": server.url,
        "SANDCASTLE_API_KEY": key,
        "COLUMNS": "250",  # rich tables wrap to the terminal width
    }
    return subprocess.run(
        [sys.executable, "-m", "sandcastle", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_manages_orgs_members_and_keys(server: ServerProcess) -> None:
    slug = f"cli-{secrets.token_hex(3)}"
    made = cli(server, server.admin_key, "org", "create", slug)
    assert made.returncode == 0, made.stderr
    owner_key = made.stdout.strip()
    assert owner_key.startswith("sc_") and "shown this once" in made.stderr
    added = cli(server, owner_key, "member", "add", "dev@example.com", "--org", slug)
    assert added.returncode == 0, added.stderr
    member_id = added.stdout.strip()
    minted = cli(server, owner_key, "key", "create", "--member", member_id, "--org", slug)
    assert minted.returncode == 0, minted.stderr
    member_key = minted.stdout.strip()
    with server.client(member_key) as member:
        assert member.get("/v1/orgs").json()["items"][0]["role"] == "member"
        key_id = member.get(f"/v1/orgs/{slug}/keys").json()["items"][0]["id"]
    listed = cli(server, owner_key, "member", "list", "--org", slug)
    assert "dev@example.com" in listed.stdout
    refused = cli(server, member_key, "project", "create", "nope", "--org", slug)
    assert refused.returncode == 1 and "403" in refused.stderr
    revoked = cli(server, owner_key, "key", "revoke", key_id, "--org", slug)
    assert revoked.returncode == 0, revoked.stderr
    with server.client(member_key) as member:
        assert member.get("/v1/orgs").status_code == 401
    unknown = cli(server, owner_key, "org", "get", "--org", "default")
    assert unknown.returncode == 1 and "404" in unknown.stderr


def test_an_org_out_of_credits_is_paused_then_resumed_after_a_top_up(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "data",
        env={
            # 1 vCPU and 512 MiB cost 12.5 credits a second: 125 credits last about 10 s, time
            # for the first execution (a kernel's boot) even on a loaded machine; with 30 (2 s)
            # the sandbox was paused while it ran.
            "SANDCASTLE_INITIAL_ORG_CREDITS": "125",
            "SANDCASTLE_CREDIT_INTERVAL_S": "0.5",
            "SANDCASTLE_WARM_POOL": "{}",
        },
    )
    server.start()
    try:
        with server.client() as api:
            sid = api.post("/v1/sandboxes", json={"timeout_ms": 600_000}).json()["id"]
            ctx = run(api, sid, code="kept = 'yes'")["context_id"]

            def paused() -> dict[str, Any] | None:
                items = api.get("/api/v1/org/default/sandboxes").json()["items"]
                return items[0] if items[0]["state"] == "paused" else None

            item = wait_for(paused)
            assert item["pause_reason"] == "insufficient_credits"
            assert item["billed_credits"] >= 125
            balance = api.get("/v1/orgs/default").json()["credit_balance"]
            assert balance <= 0
            refused = api.post("/v1/sandboxes", json={})
            assert refused.status_code == 403
            assert refused.json()["type"] == "usage_limit_exceeded_error"
            blocked = api.post(f"/v1/sandboxes/{sid}/execute", json={"code": "1"})
            assert blocked.status_code == 409
            assert api.post(f"/v1/sandboxes/{sid}/resume").status_code == 403

            # A restart keeps the books: nothing billed so far is billed again.
            billed = api.get("/api/v1/org/default/sandboxes").json()["items"][0]["billed_credits"]
        server.stop()
        server.start()
        with server.client() as api:
            time.sleep(1.5)  # a few deduction passes while paused (memory only)
            after = api.get("/api/v1/org/default/sandboxes").json()["items"][0]
            assert after["billed_credits"] >= billed
            # Paused, 512 MiB at 5 credits per GiB-second: at most a few credits a second.
            assert after["billed_credits"] - billed < 3 * (1.5 + 5)

            topped = api.post("/v1/orgs/default/credits", json={"amount": 1_000_000})
            assert topped.status_code == 200, topped.text
            resumed = api.post(f"/v1/sandboxes/{sid}/resume")
            assert resumed.status_code == 200, resumed.text
            assert run(api, sid, code="kept", context_id=ctx)["items"][0]["text"] == "'yes'"
    finally:
        try:
            server.destroy_all()
        finally:
            server.purge()
