"""A member of an org attacks another member's sandbox on a real server: through the API, the
per-sandbox host, and the snapshots taken of it (``docs/TENANCY.md``: members use their own)."""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from tests.serverproc import ServerProcess


def _member_key(api: httpx.Client) -> str:
    org = api.get("/v1/orgs").json()["items"][0]["slug"]
    email = f"member-{secrets.token_hex(4)}@example.test"
    member = api.post(f"/v1/orgs/{org}/members", json={"email": email, "role": "member"})
    assert member.status_code == 201, member.text
    key = api.post(f"/v1/orgs/{org}/keys", json={"member_id": member.json()["id"]})
    assert key.status_code == 201, key.text
    return str(key.json()["key"])


def test_a_member_can_neither_run_code_in_nor_read_another_members_sandbox(
    api: httpx.Client, sandbox: dict[str, Any], server: ServerProcess
) -> None:
    secret = secrets.token_hex(8)
    sid = sandbox["id"]
    wrote = api.post(
        f"/v1/sandboxes/{sid}/execute",
        json={"code": f"open('/home/user/secret.txt', 'w').write('{secret}')"},
    )
    assert wrote.status_code == 200 and wrote.json()["error"] is None, wrote.text
    host = {"Host": sid.replace("_", "-") + ".sandbox.localhost"}

    with server.client(_member_key(api)) as member:
        attempts = [
            member.get(f"/v1/sandboxes/{sid}"),
            member.post(f"/v1/sandboxes/{sid}/execute", json={"code": "open('secret.txt').read()"}),
            member.get(f"/v1/sandboxes/{sid}/files/content", params={"path": "secret.txt"}),
            member.post(f"/v1/sandboxes/{sid}/snapshots"),
            member.delete(f"/v1/sandboxes/{sid}"),
            member.post("/execute", json={"code": "open('secret.txt').read()"}, headers=host),
            member.get("/files/download/-/home/user/secret.txt", headers=host),
        ]
        listed = member.get("/v1/sandboxes", params={"limit": 200}).json()["items"]

    for response in attempts:
        assert response.status_code == 404, f"{response.request.url}: {response.text}"
        assert secret not in response.text
    assert sid not in {s["id"] for s in listed}
    # Untouched: the owner's sandbox still runs and holds its file.
    read = api.post(f"/v1/sandboxes/{sid}/execute", json={"code": "open('secret.txt').read()"})
    assert secret in read.text
