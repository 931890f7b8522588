"""E2B's API in process (``docs/E2B.md``): its control plane, the sandbox tokens and routing,
and the code interpreter's NDJSON, against the fake runtime. The unmodified SDKs drive the real
runtime in ``tests/e2e/test_e2b_*_sdk.py``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.api.conftest import Harness

NEW = {"templateID": "base", "timeout": 300}


def e2b_client(h: Harness, key: str | None = None, **headers: str) -> httpx.AsyncClient:
    auth = {"X-API-Key": key or h.key} if key != "" else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=h.app, raise_app_exceptions=False),
        base_url="http://test",
        headers={**auth, **headers},
    )


@pytest.fixture
async def e2b(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with e2b_client(harness) as client:
        yield client


async def create(e2b: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await e2b.post("/v2/sandboxes", json={**NEW, **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def envd(created: dict[str, Any], token: str | None = None) -> dict[str, str]:
    return {
        "E2b-Sandbox-Id": created["sandboxID"],
        "E2b-Sandbox-Port": "49983",
        "X-Access-Token": token or created["envdAccessToken"],
    }


def interpreter(created: dict[str, Any]) -> dict[str, str]:
    return {
        "E2b-Sandbox-Id": created["sandboxID"],
        "E2b-Sandbox-Port": "49999",
        "E2B-Traffic-Access-Token": created["trafficAccessToken"],
    }


def assert_e2b_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message"} and body["code"] == status, body
    message: str = body["message"]
    assert message
    return message


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    lines = response.text.split("\n")
    assert lines[-1] == "" and all(lines[:-1]), "one JSON object per line, no blank line"
    return [json.loads(line) for line in lines[:-1]]


# --- control plane ---------------------------------------------------------------------------


async def test_create_answers_201_with_two_distinct_tokens_and_the_sandbox_domain(
    harness: Harness, e2b: httpx.AsyncClient
) -> None:
    created = await create(e2b, metadata={"team": "a"}, envVars={"A": "1"})
    assert created["sandboxID"].startswith("sb_")
    assert created["templateID"] == "python"  # E2B's stock template is our default one
    assert created["envdVersion"] == "0.5.7"
    assert created["domain"] == harness.settings.sandbox_domain
    assert created["envdAccessToken"] and created["trafficAccessToken"]
    assert created["envdAccessToken"] != created["trafficAccessToken"]
    ours = await harness.client.get(f"/v1/sandboxes/{created['sandboxID']}")
    assert ours.json()["metadata"] == {"team": "a"}


async def test_create_refuses_what_this_server_cannot_do_by_name(e2b: httpx.AsyncClient) -> None:
    message = assert_e2b_error(
        await e2b.post("/v2/sandboxes", json={**NEW, "mcp": {"exa": {}}}), 400
    )
    assert "mcp" in message
    message = assert_e2b_error(await e2b.post("/v2/sandboxes", json={"timeout": 5}), 400)
    assert "templateID" in message
    assert_e2b_error(await e2b.post("/v2/sandboxes", json={**NEW, "templateID": "nope"}), 404)
    assert_e2b_error(await e2b.post("/v2/sandboxes", json={**NEW, "envVars": {"A=B": "x"}}), 400)


async def test_errors_have_e2b_code_and_message_not_our_envelope(harness: Harness) -> None:
    async with e2b_client(harness, key="") as anon:
        assert_e2b_error(await anon.get("/v2/sandboxes"), 401)
    async with e2b_client(harness, key="sc_wrong") as wrong:
        assert_e2b_error(await wrong.get("/v2/sandboxes"), 401)
    async with e2b_client(harness) as e2b:
        assert_e2b_error(await e2b.get("/sandboxes/sb_00000000"), 404)
        assert_e2b_error(await e2b.post("/sandboxes/sb_00000000/timeout", json={}), 400)
    # Our own API keeps its envelope.
    ours = await harness.anon.get("/v1/sandboxes")
    assert ours.status_code == 401 and ours.json()["type"] == "authentication_error"


async def test_get_list_and_v1_list_describe_the_sandbox(e2b: httpx.AsyncClient) -> None:
    created = await create(e2b, metadata={"team": "a"})
    sandbox_id = created["sandboxID"]
    detail = (await e2b.get(f"/sandboxes/{sandbox_id}")).json()
    assert detail["sandboxID"] == sandbox_id and detail["state"] == "running"
    assert detail["envdAccessToken"] == created["envdAccessToken"]
    assert detail["metadata"] == {"team": "a"} and detail["cpuCount"] >= 1
    assert detail["lifecycle"] == {"onTimeout": "kill", "autoResume": False}
    for listing in (await e2b.get("/v2/sandboxes"), await e2b.get("/sandboxes")):
        assert [s["sandboxID"] for s in listing.json()] == [sandbox_id]
        assert "envdAccessToken" not in listing.json()[0]


async def test_list_v2_filters_by_metadata_and_state_and_pages_with_x_next_token(
    e2b: httpx.AsyncClient,
) -> None:
    ids = [(await create(e2b, metadata={"team": "a", "n": str(n)}))["sandboxID"] for n in range(3)]
    other = (await create(e2b, metadata={"team": "b"}))["sandboxID"]
    assert (await e2b.post(f"/sandboxes/{ids[0]}/pause")).status_code == 204
    team_a = await e2b.get("/v2/sandboxes", params={"metadata": "team=a"})
    assert {s["sandboxID"] for s in team_a.json()} == set(ids)
    paused = await e2b.get("/v2/sandboxes", params={"state": "paused"})
    assert [s["sandboxID"] for s in paused.json()] == [ids[0]]
    running = await e2b.get("/v2/sandboxes", params={"state": "running", "metadata": "team=a"})
    assert {s["sandboxID"] for s in running.json()} == set(ids[1:])
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = await e2b.get("/v2/sandboxes", params=params)
        seen += [s["sandboxID"] for s in page.json()]
        token = page.headers.get("x-next-token")
        if token is None:
            break
        params["nextToken"] = token
    assert sorted(seen) == sorted([*ids, other])
    assert_e2b_error(await e2b.get("/v2/sandboxes", params={"state": "gone"}), 400)


async def test_timeout_and_refresh_move_the_deadline_from_now(e2b: httpx.AsyncClient) -> None:
    sandbox_id = (await create(e2b, timeout=60))["sandboxID"]

    async def end_at() -> datetime:
        body = (await e2b.get(f"/sandboxes/{sandbox_id}")).json()
        return datetime.fromisoformat(body["endAt"].replace("Z", "+00:00"))

    first = await end_at()
    assert (
        await e2b.post(f"/sandboxes/{sandbox_id}/timeout", json={"timeout": 3600})
    ).status_code == 204
    longer = await end_at()
    assert (longer - first).total_seconds() > 3000
    # A refresh never shortens the sandbox's life.
    assert (
        await e2b.post(f"/sandboxes/{sandbox_id}/refreshes", json={"duration": 10})
    ).status_code == 204
    assert await end_at() == longer


async def test_pause_then_connect_resumes_201_and_connect_to_running_is_200(
    e2b: httpx.AsyncClient,
) -> None:
    created = await create(e2b)
    sandbox_id = created["sandboxID"]
    assert (await e2b.post(f"/sandboxes/{sandbox_id}/pause")).status_code == 204
    assert_e2b_error(await e2b.post(f"/sandboxes/{sandbox_id}/pause"), 409)
    assert (await e2b.get(f"/sandboxes/{sandbox_id}")).json()["state"] == "paused"
    resumed = await e2b.post(f"/sandboxes/{sandbox_id}/connect", json={"timeout": 120})
    assert resumed.status_code == 201
    assert resumed.json()["envdAccessToken"] == created["envdAccessToken"]
    again = await e2b.post(f"/v2/sandboxes/{sandbox_id}/connect", json={})
    assert again.status_code == 200
    assert_e2b_error(await e2b.post(f"/sandboxes/{sandbox_id}/resume", json={}), 409)


async def test_kill_answers_204_then_the_sandbox_is_not_found(e2b: httpx.AsyncClient) -> None:
    sandbox_id = (await create(e2b))["sandboxID"]
    assert (await e2b.delete(f"/sandboxes/{sandbox_id}")).status_code == 204
    assert_e2b_error(await e2b.delete(f"/sandboxes/{sandbox_id}"), 404)
    assert_e2b_error(await e2b.get(f"/sandboxes/{sandbox_id}"), 404)
    assert (await e2b.get("/v2/sandboxes")).json() == []


async def test_metrics_sample_the_sandbox_now(e2b: httpx.AsyncClient) -> None:
    sandbox_id = (await create(e2b))["sandboxID"]
    [metric] = (await e2b.get(f"/sandboxes/{sandbox_id}/metrics")).json()
    assert metric["cpuCount"] == 1 and metric["memTotal"] == 512 * 1024 * 1024
    assert 0 <= metric["cpuUsedPct"] and metric["timestampUnix"] > 0
    many = (await e2b.get("/sandboxes/metrics", params={"sandbox_ids": sandbox_id})).json()
    assert set(many["sandboxes"]) == {sandbox_id}


async def test_another_orgs_key_finds_none_of_its_sandboxes(harness: Harness) -> None:
    async with e2b_client(harness) as owner:
        sandbox_id = (await create(owner))["sandboxID"]
    async with e2b_client(harness, key=await harness.add_tenant()) as other:
        assert (await other.get("/v2/sandboxes")).json() == []
        assert_e2b_error(await other.get(f"/sandboxes/{sandbox_id}"), 404)
        assert_e2b_error(await other.delete(f"/sandboxes/{sandbox_id}"), 404)
        assert_e2b_error(await other.post(f"/sandboxes/{sandbox_id}/pause"), 404)
    assert (await harness.client.get(f"/v1/sandboxes/{sandbox_id}")).json()["status"] == "running"


# --- sandbox tokens and routing --------------------------------------------------------------


async def test_a_sandbox_call_needs_that_sandboxs_own_token(harness: Harness) -> None:
    async with e2b_client(harness) as e2b:
        mine, theirs = await create(e2b), await create(e2b)
    async with e2b_client(harness, key="") as anon:
        assert (await anon.get("/health", headers=envd(mine))).status_code == 204
        no_token = {k: v for k, v in envd(mine).items() if k != "X-Access-Token"}
        assert_e2b_error(await anon.get("/health", headers=no_token), 401)
        # Another sandbox's token, or the traffic token, opens nothing on the daemon's port.
        assert_e2b_error(
            await anon.get("/health", headers=envd(mine, theirs["envdAccessToken"])), 404
        )
        assert_e2b_error(
            await anon.get("/health", headers=envd(mine, mine["trafficAccessToken"])), 404
        )
        # The code interpreter takes the traffic token.
        contexts = await anon.get("/contexts", headers=interpreter(mine))
        assert contexts.status_code == 200 and contexts.json() == []


async def test_the_host_form_reaches_the_same_sandbox_as_the_headers(harness: Harness) -> None:
    async with e2b_client(harness) as e2b:
        created = await create(e2b)
    host = f"49983-{created['sandboxID']}.{harness.settings.sandbox_domain}"
    token = {"X-Access-Token": created["envdAccessToken"]}
    async with e2b_client(harness, key="", Host=host) as by_host:
        assert (await by_host.get("/health", headers=token)).status_code == 204
        assert_e2b_error(await by_host.get("/health"), 401)
    dashed = host.replace("sb_", "sb-")
    async with e2b_client(harness, key="", Host=dashed) as by_dns_label:
        assert (await by_dns_label.get("/health", headers=token)).status_code == 204


async def test_a_port_nothing_listens_on_answers_502(harness: Harness) -> None:
    async with e2b_client(harness) as e2b:
        created = await create(e2b)
        headers = {**envd(created), "E2b-Sandbox-Port": "8080"}
        assert_e2b_error(await e2b.get("/", headers=headers), 502)


async def test_connect_calls_answer_connect_errors(harness: Harness) -> None:
    async with e2b_client(harness) as e2b:
        created = await create(e2b)
    async with e2b_client(harness, key="") as anon:
        wrong = await anon.post(
            "/filesystem.Filesystem/Stat",
            json={"path": "/home/user"},
            headers={**envd(created, "not-the-token"), "Connect-Protocol-Version": "1"},
        )
    assert wrong.status_code == 404
    assert wrong.json()["code"] == "not_found"


# --- code interpreter ------------------------------------------------------------------------


async def test_execute_streams_e2b_lines_and_keeps_state_in_the_default_context(
    harness: Harness,
) -> None:
    async with e2b_client(harness) as e2b:
        created = await create(e2b, envVars={"GREETING": "hello"})
    async with e2b_client(harness, key="", **interpreter(created)) as sandbox:
        first = ndjson(await sandbox.post("/execute", json={"code": "x = 41\nx + 1"}))
        assert [e["type"] for e in first] == ["number_of_executions", "result", "end_of_execution"]
        assert first[0]["execution_count"] == 1
        assert first[1]["is_main_result"] is True and first[1]["text"] == "42"
        second = ndjson(
            await sandbox.post(
                "/execute", json={"code": "import os\nprint(x, os.environ['GREETING'])"}
            )
        )
        [stdout] = [e for e in second if e["type"] == "stdout"]
        assert stdout["text"] == "41 hello\n" and isinstance(stdout["timestamp"], int)
        failed = ndjson(await sandbox.post("/execute", json={"code": "1/0"}))
        [error] = [e for e in failed if e["type"] == "error"]
        assert error["name"] == "ZeroDivisionError"
        # One default context, made at first use.
        assert len((await sandbox.get("/contexts")).json()) == 1
        assert_e2b_error(
            await sandbox.post("/execute", json={"code": "1", "context_id": "ctx_unknown"}), 404
        )


async def test_contexts_are_created_listed_and_deleted(harness: Harness) -> None:
    async with e2b_client(harness) as e2b:
        created = await create(e2b)
    async with e2b_client(harness, key="", **interpreter(created)) as sandbox:
        made = await sandbox.post("/contexts", json={"language": "python", "cwd": "/tmp"})
        assert made.status_code == 200, made.text
        context = made.json()
        assert context["language"] == "python" and context["cwd"] == "/tmp"
        run = {"code": "y = 1", "context_id": context["id"]}
        assert ndjson(await sandbox.post("/execute", json=run))[-1]["type"] == "end_of_execution"
        listed = (await sandbox.get("/contexts")).json()
        assert [c["id"] for c in listed] == [context["id"]]
        deleted = await sandbox.delete(f"/contexts/{context['id']}")
        assert deleted.status_code == 204
        assert (await sandbox.get("/contexts")).json() == []
        assert_e2b_error(await sandbox.post("/contexts", json={"language": "cobol"}), 400)


async def test_the_control_plane_answers_on_the_api_host_of_the_sandbox_domain(
    harness: Harness,
) -> None:
    # E2B_DOMAIN=<domain> sends control-plane calls to https://api.<domain>.
    host = f"api.{harness.settings.sandbox_domain}"
    async with e2b_client(harness, Host=host) as e2b:
        created = await create(e2b)
        assert (await e2b.get(f"/sandboxes/{created['sandboxID']}")).status_code == 200
