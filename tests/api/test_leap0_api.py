"""Leap0's API in process (``docs/LEAP0.md``): the control plane's statuses and bodies, the id
forms, the sandbox host's contexts beside the agent API, tenancy and refused input, against
the fake runtime. The unmodified SDK drives the real runtime in ``tests/e2e/test_leap0_sdk.py``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.api.conftest import Harness

#: What Leap0's SDK 0.8.0 sends to create a sandbox with its defaults.
SDK_DEFAULTS = {
    "template_name": "system/debian:bookworm",
    "vcpu": 1,
    "memory": 1024,
    "timeout": 300,
    "auto_pause": False,
}


def leap0_client(h: Harness, key: str | None = None, host: str = "test") -> httpx.AsyncClient:
    auth = {"authorization": f"Bearer {key or h.key}"} if key != "" else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=h.app, raise_app_exceptions=False),
        base_url=f"http://{host}",
        headers=auth,
    )


def sandbox_host(h: Harness, leap0_id: str, key: str | None = None) -> httpx.AsyncClient:
    """A client of ``https://{id}.{sandbox_domain}``, as the SDK builds it (over plain HTTP)."""
    return leap0_client(h, key, host=f"{leap0_id}.{h.settings.sandbox_domain}")


@pytest.fixture
async def leap0(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with leap0_client(harness) as client:
        yield client


async def create(leap0: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await leap0.post("/v1/sandbox", json={**SDK_DEFAULTS, **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def ours(leap0_id: str) -> str:
    return leap0_id.replace("-", "_", 1)


def assert_leap0_error(response: httpx.Response, status: int) -> str:
    """Leap0's SDK reads a top-level ``message`` and nothing else."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) <= {"code", "message", "errors"} and body["code"] == status, body
    message: str = body["message"]
    assert message
    return message


# --- control plane ---------------------------------------------------------------------------


async def test_create_answers_201_with_a_dns_label_id_and_every_field_the_sdk_reads(
    harness: Harness, leap0: httpx.AsyncClient
) -> None:
    created = await create(leap0, env_vars={"A": "1"})
    assert re.fullmatch(r"sb-[0-9a-f]{8}", created["id"]), created["id"]
    assert created["template_id"] == "python"  # Leap0's stock template is our default one
    assert (created["vcpu"], created["memory"], created["timeout"]) == (1, 1024, 300)
    assert created["state"] == "running" and created["auto_pause"] is False
    assert created["network_policy"] == {"mode": "deny-all"}
    # The SDK passes these through int(): a null would break it.
    assert None not in created.values()
    assert created["created_at"].endswith("Z")
    mine = (await harness.client.get(f"/v1/sandboxes/{ours(created['id'])}")).json()
    assert mine["status"] == "running" and mine["timeout_ms"] == 300_000
    assert mine["config"]["memory_mb"] == 1024


async def test_create_maps_timeout_network_and_auto_pause_onto_ours(
    harness: Harness, leap0: httpx.AsyncClient
) -> None:
    created = await create(
        leap0, template_name="python", timeout=60, network_policy={"mode": "allow-all"}
    )
    assert created["template_id"] == "python" and created["timeout"] == 60
    assert created["network_policy"] == {"mode": "allow-all"}
    mine = (await harness.client.get(f"/v1/sandboxes/{ours(created['id'])}")).json()
    assert mine["timeout_ms"] == 60_000 and mine["network"]["internet"] is True
    # auto_pause is our hibernation at the deadline, refused by our own rule where the backend
    # cannot save memory (the fake cannot).
    response = await leap0.post("/v1/sandbox", json={**SDK_DEFAULTS, "auto_pause": True})
    assert "hibernate" in assert_leap0_error(response, 400)


async def test_get_and_delete_take_either_id_form_with_or_without_the_trailing_slash(
    leap0: httpx.AsyncClient,
) -> None:
    created = await create(leap0)
    leap0_id = created["id"]
    for path in (f"/v1/sandbox/{leap0_id}/", f"/v1/sandbox/{ours(leap0_id)}"):
        got = await leap0.get(path)
        assert got.status_code == 200, got.text  # served as it is: the SDK follows no redirect
        assert got.json() == created | {"created_at": got.json()["created_at"]}
    deleted = await leap0.delete(f"/v1/sandbox/{leap0_id}/")
    assert deleted.status_code == 204 and deleted.content == b""
    assert "not found" in assert_leap0_error(await leap0.get(f"/v1/sandbox/{leap0_id}/"), 404)
    assert_leap0_error(await leap0.delete(f"/v1/sandbox/{leap0_id}/"), 404)


async def test_invalid_create_bodies_are_400_naming_the_field(leap0: httpx.AsyncClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"vcpu": "2"}, "vcpu"),
        ({"memory": 0}, "memory"),
        ({"timeout": True}, "timeout"),
        ({"templateID": "base"}, "templateID"),
        ({"mounts": [{"type": "object-storage", "bucket": "b"}]}, "mounts"),
        ({"network_policy": {"mode": "custom", "allow_domains": ["a.test"]}}, "custom"),
        ({"env_vars": {"A=B": "x"}}, "env_vars"),
    ]
    for change, named in cases:
        response = await leap0.post("/v1/sandbox", json={**SDK_DEFAULTS, **change})
        assert named in assert_leap0_error(response, 400), change
    body = (await leap0.post("/v1/sandbox", json={**SDK_DEFAULTS, "vcpu": "2"})).json()
    assert body["errors"][0]["field"] == "vcpu"
    missing = await leap0.post("/v1/sandbox", json={**SDK_DEFAULTS, "template_name": "nope"})
    assert "nope" in assert_leap0_error(missing, 404)
    assert_leap0_error(await leap0.post("/v1/sandbox", content=b"{"), 400)


async def test_calls_without_a_valid_key_are_401_on_both_hosts(harness: Harness) -> None:
    async with leap0_client(harness) as leap0:
        leap0_id = (await create(leap0))["id"]
    for key in ("", "sc_wrong"):
        async with leap0_client(harness, key) as anon, sandbox_host(harness, leap0_id, key) as box:
            assert_leap0_error(await anon.post("/v1/sandbox", json=SDK_DEFAULTS), 401)
            assert_leap0_error(await anon.get(f"/v1/sandbox/{leap0_id}/"), 401)
            assert_leap0_error(await box.post("/contexts", json={"language": "python"}), 401)


async def test_another_orgs_sandbox_is_not_found_exactly_like_an_absent_one(
    harness: Harness, leap0: httpx.AsyncClient
) -> None:
    leap0_id = (await create(leap0))["id"]
    other_key = await harness.add_tenant()
    absent_id = "sb-00000000"

    async def answers(sandbox_id: str) -> list[tuple[int, str]]:
        async with (
            leap0_client(harness, other_key) as other,
            sandbox_host(harness, sandbox_id, other_key) as box,
        ):
            base = f"/v1/sandbox/{sandbox_id}"
            responses = [
                await other.get(f"{base}/"),
                await other.delete(f"{base}/"),
                await other.post(
                    f"{base}/filesystem/write-file", params={"path": "a"}, content=b"x"
                ),
                await other.post(f"{base}/filesystem/read-file", json={"path": "a"}),
                await other.post(f"{base}/filesystem/ls", json={"path": "/", "recursive": False}),
                await other.post(f"{base}/filesystem/delete", json={"path": "a"}),
                await box.post("/contexts", json={"language": "python"}),
                await box.get("/contexts"),
                await box.get("/healthz"),
            ]
        return [(r.status_code, r.json()["message"].replace(sandbox_id, "ID")) for r in responses]

    foreign, absent = await answers(leap0_id), await answers(absent_id)
    assert foreign == absent
    assert {status for status, _ in foreign} == {404}
    # Nothing of the other org's calls touched the sandbox.
    assert (await leap0.get(f"/v1/sandbox/{leap0_id}/")).json()["state"] == "running"


async def test_ids_that_are_not_sandbox_ids_are_404_not_500(leap0: httpx.AsyncClient) -> None:
    for bad in ("nope", "sb-XYZ", "sb-0000000000", "..%2F..%2Fv1%2Fsandboxes"):
        assert_leap0_error(await leap0.get(f"/v1/sandbox/{bad}/"), 404)


async def test_our_own_api_keeps_its_routes_and_envelope_beside_leap0s(harness: Harness) -> None:
    listing = await harness.client.get("/v1/sandboxes")
    assert listing.status_code == 200 and "items" in listing.json()
    missing = await harness.client.get("/v1/sandboxes/sb_00000000")
    assert missing.json()["type"] == "not_found_error"
    document = (await harness.client.get("/openapi.json")).json()
    assert not [p for p in document["paths"] if p.startswith("/v1/sandbox/") or p == "/v1/sandbox"]


# --- files -----------------------------------------------------------------------------------


async def test_read_file_streams_raw_bytes_and_byte_ranges(
    harness: Harness, leap0: httpx.AsyncClient
) -> None:
    leap0_id = (await create(leap0))["id"]
    data = bytes(range(256)) * 4
    target = harness.runtime.agent(ours(leap0_id)).host_path("/home/user/b.bin")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    base = f"/v1/sandbox/{leap0_id}/filesystem"
    whole = await leap0.post(f"{base}/read-file", json={"path": "/home/user/b.bin"})
    assert whole.status_code == 200 and whole.content == data
    ranged = await leap0.post(
        f"{base}/read-file", json={"path": "/home/user/b.bin", "offset": 1000, "limit": 10}
    )
    assert ranged.status_code == 200 and ranged.content == data[1000:1010]
    tail = await leap0.post(f"{base}/read-file", json={"path": "/home/user/b.bin", "offset": 1020})
    assert tail.content == data[1020:]
    missing = await leap0.post(f"{base}/read-file", json={"path": "/home/user/none"})
    assert "not_found" in assert_leap0_error(missing, 404)


async def test_file_calls_refuse_what_this_server_cannot_do_by_name(
    leap0: httpx.AsyncClient,
) -> None:
    base = f"/v1/sandbox/{(await create(leap0))['id']}/filesystem"
    cases = [
        (
            await leap0.post(
                f"{base}/write-file", params={"path": "/tmp/a", "permissions": "600"}, content=b"x"
            ),
            "permissions",
        ),
        (await leap0.post(f"{base}/read-file", json={"path": "/tmp/a", "head": 3}), "head"),
        (await leap0.post(f"{base}/ls", json={"path": "/tmp", "recursive": True}), "recursive"),
        (await leap0.post(f"{base}/write-file", content=b"x"), "path"),
        (await leap0.post(f"{base}/delete", json={"path": "/tmp/a", "force": True}), "force"),
    ]
    for response, named in cases:
        assert named in assert_leap0_error(response, 400)


# --- the sandbox host ------------------------------------------------------------------------


async def test_contexts_are_created_listed_and_deleted_on_the_sandbox_host(
    harness: Harness, leap0: httpx.AsyncClient
) -> None:
    leap0_id = (await create(leap0))["id"]
    async with sandbox_host(harness, leap0_id) as box:
        created = await box.post("/contexts", json={"language": "python", "cwd": "/workspace"})
        assert created.status_code == 201, created.text
        context = created.json()
        assert context == {"id": context["id"], "language": "python", "cwd": "/workspace"}
        assert (await box.get(f"/contexts/{context['id']}")).json() == context
        assert context in (await box.get("/contexts")).json()["items"]
        assert (await box.delete(f"/contexts/{context['id']}")).status_code == 204
        assert_leap0_error(await box.get(f"/contexts/{context['id']}"), 404)
        refused = await box.post("/contexts", json={"language": "cobol"})
        assert "language" in assert_leap0_error(refused, 400)
        health = await box.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}


async def test_execute_on_the_sandbox_host_answers_leap0s_body_with_and_without_a_context(
    harness: Harness, leap0: httpx.AsyncClient
) -> None:
    leap0_id = (await create(leap0))["id"]
    async with sandbox_host(harness, leap0_id) as box:
        context_id = (await box.post("/contexts", json={"language": "python"})).json()["id"]
        # The SDK's body, key for key.
        ran = await box.post(
            "/execute",
            json={"code": "x = 1+2+3\nx", "language": "python", "context_id": context_id},
        )
        assert ran.status_code == 200, ran.text
        result = ran.json()
        assert result["context_id"] == context_id and result["error"] is None
        assert result["items"][0]["is_primary"] is True and result["items"][0]["text"] == "6"
        assert result["logs"] == {"stdout": [], "stderr": []}
        assert result["execution_count"] == 1
        again = (
            await box.post(
                "/execute", json={"code": "x * 2", "language": "python", "context_id": context_id}
            )
        ).json()
        assert again["items"][0]["text"] == "12"  # the context kept its state
        fresh = (await box.post("/execute", json={"code": "1/0", "language": "python"})).json()
        assert fresh["context_id"] and fresh["context_id"] != context_id
        assert fresh["error"]["name"] == "ZeroDivisionError"  # a result, not an HTTP error


async def test_the_agent_apis_own_routes_still_answer_on_the_sandbox_host(
    harness: Harness, leap0: httpx.AsyncClient
) -> None:
    leap0_id = (await create(leap0))["id"]
    async with sandbox_host(harness, leap0_id) as box:
        ping = await box.get("/")
        assert ping.status_code == 200 and "last_activity" in ping.json()
        agent = await box.post("/execute", json={"code": "print(5)"})
        assert agent.status_code == 200 and agent.json()["status"] == "ok"
        assert (await box.get("/v1/health")).status_code == 404  # still only the agent API
    async with leap0_client(harness, host=f"nope.{harness.settings.sandbox_domain}") as nobody:
        assert (await nobody.post("/contexts", json={})).status_code == 404
