"""``POST /v1/sandboxes/{id}/execute`` (``execute.txt``) over a real agent channel, fake kernel."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from sandcastle.store.models import ContextRow
from tests.api.conftest import Harness, assert_envelope
from tests.api.test_code_runs_api import waiting


def execute_document(response: httpx.Response) -> list[dict[str, str]]:
    """``execute.txt``'s validation shape: ``{message, errors: [{field, error}]}``."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"message", "errors"}
    assert body["message"] == "Invalid request"
    for error in body["errors"]:
        assert set(error) == {"field", "error"}
        assert isinstance(error["error"], str) and error["error"]
    errors: list[dict[str, str]] = body["errors"]
    return errors


# --- results --------------------------------------------------------------------------------


async def test_state_is_kept_across_executes_in_one_context(
    harness: Harness, sandbox_id: str
) -> None:
    first = await harness.execute(sandbox_id, code="x = 41")
    assert first == {
        "context_id": first["context_id"],
        "items": [],
        "logs": {"stdout": [], "stderr": []},
        "error": None,
        "execution_count": 1,
    }
    assert first["context_id"].startswith("ctx_")
    second = await harness.execute(sandbox_id, code="x + 1", context_id=first["context_id"])
    assert second["context_id"] == first["context_id"]
    assert second["items"] == [{"is_primary": True, "text": "42"}]
    assert second["execution_count"] == 2


async def test_omitted_context_id_makes_a_new_context(harness: Harness, sandbox_id: str) -> None:
    first = await harness.execute(sandbox_id, code="y = 1")
    second = await harness.execute(sandbox_id, code="y")
    assert second["context_id"] != first["context_id"]
    assert second["execution_count"] == 1
    assert second["error"]["name"] == "NameError"
    assert second["error"]["value"] == "name 'y' is not defined"
    async with harness.db.session() as session:
        for context_id in (first["context_id"], second["context_id"]):
            row = await session.get(ContextRow, context_id)
            assert row is not None
            assert (row.sandbox_id, row.language, row.status) == (sandbox_id, "python", "ready")


async def test_stdout_and_stderr_are_logs(harness: Harness, sandbox_id: str) -> None:
    result = await harness.execute(
        sandbox_id, code="import sys\nprint('hello')\nprint('oops', file=sys.stderr)"
    )
    assert result["logs"] == {"stdout": ["hello\n"], "stderr": ["oops\n"]}
    assert result["items"] == []


async def test_exception_in_user_code_is_a_result_not_an_http_error(
    harness: Harness, sandbox_id: str
) -> None:
    result = await harness.execute(sandbox_id, code="print('before')\n1/0")
    assert result["logs"]["stdout"] == ["before\n"]
    assert result["items"] == []
    assert result["execution_count"] == 1
    error = result["error"]
    assert set(error) == {"name", "value", "traceback"}
    assert (error["name"], error["value"]) == ("ZeroDivisionError", "division by zero")
    assert isinstance(error["traceback"], str)
    assert error["traceback"].endswith("ZeroDivisionError: division by zero")
    assert "\x1b[" not in error["traceback"]  # the kernel colours it; the API must not


async def test_syntax_error_is_a_result(harness: Harness, sandbox_id: str) -> None:
    result = await harness.execute(sandbox_id, code="def (:")
    assert result["error"]["name"] == "SyntaxError"


async def test_rich_results_map_mime_types_to_fields_and_extra(
    harness: Harness, sandbox_id: str
) -> None:
    code = """
class Rich:
    def _repr_mimebundle_(self):
        return {
            "text/html": "<b>hi</b>",
            "application/json": {"a": [1, 2]},
            "image/png": "iVBORw0KGgo=",
            "application/vnd.custom+json": {"x": 1},
        }
    def __repr__(self):
        return "Rich()"

display("shown")
Rich()
"""
    result = await harness.execute(sandbox_id, code=code)
    assert result["items"] == [
        {"is_primary": False, "text": "'shown'"},
        {
            "is_primary": True,
            "text": "Rich()",
            "html": "<b>hi</b>",
            "json": {"a": [1, 2]},
            "png": "iVBORw0KGgo=",
            "extra": {"application/vnd.custom+json": {"x": 1}},
        },
    ]


async def test_env_vars_apply_to_one_execution_only_and_travel_as_data(
    harness: Harness, sandbox_id: str
) -> None:
    code = "import os; os.environ.get('GREETING')"
    quote = "it's \"quoted\"; print('injected')"
    first = await harness.execute(sandbox_id, code=code, env_vars={"GREETING": quote})
    assert first["items"] == [{"is_primary": True, "text": repr(quote)}]
    assert first["logs"] == {"stdout": [], "stderr": []}
    second = await harness.execute(sandbox_id, code=code, context_id=first["context_id"])
    assert second["items"] == []
    sent = [p for method, p in harness.runtime.agent(sandbox_id).requests if method == "execute"]
    assert [p["env_vars"] for p in sent] == [{"GREETING": quote}, {}]
    assert [p["code"] for p in sent] == [code, code]


async def test_request_reaches_the_agent_as_sent(harness: Harness) -> None:
    sandbox_id = (await harness.create(cwd="/home/user/work"))["id"]
    result = await harness.execute(sandbox_id, code="1", timeout_ms=5000)
    requests = harness.runtime.agent(sandbox_id).requests
    assert [method for method, _ in requests] == ["context.create", "execute"]
    assert requests[0][1] == {
        "context_id": result["context_id"],
        "language": "python",
        "cwd": "/home/user/work",
        "keep_spare": True,
    }
    assert requests[1][1] == {
        "context_id": result["context_id"],
        "code": "1",
        "timeout_ms": 5000,
        "env_vars": {},
    }
    await harness.execute(sandbox_id, code="2", context_id=result["context_id"])
    assert requests[-1][1]["timeout_ms"] == 30_000  # the documented default


async def test_concurrent_executions_are_multiplexed(harness: Harness, sandbox_id: str) -> None:
    a = await harness.execute(sandbox_id, code="name = 'a'")
    b = await harness.execute(sandbox_id, code="name = 'b'")
    results = await asyncio.gather(
        *(
            harness.execute(sandbox_id, code="name * 3", context_id=ctx)
            for ctx in [a["context_id"], b["context_id"]] * 5
        )
    )
    assert [r["items"][0]["text"] for r in results] == ["'aaa'", "'bbb'"] * 5


# --- languages ------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["python", "py", "python3", "Python"])
async def test_python_spellings_are_accepted(
    harness: Harness, sandbox_id: str, language: str
) -> None:
    result = await harness.execute(sandbox_id, code="2 ** 10", language=language)
    assert result["items"] == [{"is_primary": True, "text": "1024"}]


@pytest.mark.parametrize("language", ["typescript", "ts", "javascript", "js", "bun", "node"])
async def test_typescript_spellings_ask_the_agent_for_typescript(
    harness: Harness, sandbox_id: str, language: str
) -> None:
    response = await harness.client.post(
        f"/v1/sandboxes/{sandbox_id}/execute", json={"code": "1", "language": language}
    )
    # The fake agent has no TypeScript kernel: it refuses, and the API blames the field.
    [error] = execute_document(response)
    assert error["field"] == "language"
    method, params = harness.runtime.agent(sandbox_id).requests[-1]
    assert (method, params["language"]) == ("context.create", "typescript")
    # A 512 MB sandbox keeps no idle ~175 MB Deno kernel.
    assert params["keep_spare"] is False


async def test_unknown_language_is_422(harness: Harness, sandbox_id: str) -> None:
    response = await harness.client.post(
        f"/v1/sandboxes/{sandbox_id}/execute", json={"code": "1", "language": "cobol"}
    )
    [error] = execute_document(response)
    assert error["field"] == "language"
    assert "cobol" in error["error"]
    assert harness.runtime.agent(sandbox_id).requests == []


async def test_context_language_must_match(harness: Harness, sandbox_id: str) -> None:
    ctx = (await harness.execute(sandbox_id, code="1"))["context_id"]
    same = await harness.execute(sandbox_id, code="2", context_id=ctx, language="py")
    assert same["items"] == [{"is_primary": True, "text": "2"}]
    response = await harness.client.post(
        f"/v1/sandboxes/{sandbox_id}/execute",
        json={"code": "1", "context_id": ctx, "language": "ts"},
    )
    assert [e["field"] for e in execute_document(response)] == ["language"]


# --- validation in execute.txt's shape ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, ["code"]),
        ({"code": 1}, ["code"]),
        ({"code": "1", "timeout_ms": 0}, ["timeout_ms"]),
        ({"code": "1", "timeout_ms": 3_600_001}, ["timeout_ms"]),
        ({"code": "1", "env_vars": {"A": 1}}, ["env_vars.A"]),
        ({"code": "1", "env_vars": "A=1"}, ["env_vars"]),
        ({"code": "1", "shell": True}, ["shell"]),
        ([], ["body"]),
    ],
)
async def test_validation_errors_use_the_execute_document(
    harness: Harness, sandbox_id: str, body: Any, fields: list[str]
) -> None:
    response = await harness.client.post(f"/v1/sandboxes/{sandbox_id}/execute", json=body)
    assert [e["field"] for e in execute_document(response)] == fields
    assert harness.runtime.agent(sandbox_id).requests == []


async def test_missing_code_says_it_is_required(harness: Harness, sandbox_id: str) -> None:
    response = await harness.client.post(f"/v1/sandboxes/{sandbox_id}/execute", json={})
    assert execute_document(response) == [{"field": "code", "error": "Field required"}]


async def test_malformed_json_uses_the_execute_document(harness: Harness, sandbox_id: str) -> None:
    response = await harness.client.post(
        f"/v1/sandboxes/{sandbox_id}/execute",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    [error] = execute_document(response)
    assert error["error"] == "JSON decode error"


# --- errors that are not validation ---------------------------------------------------------


async def test_unknown_context_is_404(harness: Harness, sandbox_id: str) -> None:
    response = await harness.client.post(
        f"/v1/sandboxes/{sandbox_id}/execute", json={"code": "1", "context_id": "ctx_nope"}
    )
    body = assert_envelope(response, 404, "not_found_error")
    assert body["detail"] == f"context ctx_nope not found in sandbox {sandbox_id}"


async def test_contexts_are_invisible_to_other_sandboxes(harness: Harness, sandbox_id: str) -> None:
    ctx = (await harness.execute(sandbox_id, code="secret = 'a-only'"))["context_id"]
    other = (await harness.create())["id"]
    response = await harness.client.post(
        f"/v1/sandboxes/{other}/execute", json={"code": "secret", "context_id": ctx}
    )
    assert_envelope(response, 404, "not_found_error")
    assert harness.runtime.agent(other).requests == []


async def test_context_the_agent_forgot_is_404(harness: Harness, sandbox_id: str) -> None:
    ctx = (await harness.execute(sandbox_id, code="1"))["context_id"]
    await harness.runtime.restart_agent(sandbox_id)  # a new agent process: no contexts
    response = await harness.client.post(
        f"/v1/sandboxes/{sandbox_id}/execute", json={"code": "1", "context_id": ctx}
    )
    body = assert_envelope(response, 404, "not_found_error")
    assert ctx in body["detail"]
    fresh = await harness.execute(sandbox_id, code="'works'")
    assert fresh["items"] == [{"is_primary": True, "text": "'works'"}]


async def test_execute_in_unknown_sandbox_is_404(harness: Harness) -> None:
    response = await harness.client.post("/v1/sandboxes/sb_00000000/execute", json={"code": "1"})
    assert_envelope(response, 404, "not_found_error")


async def test_execute_in_destroyed_sandbox_is_409(harness: Harness, sandbox_id: str) -> None:
    agent = harness.runtime.agent(sandbox_id)
    await harness.client.delete(f"/v1/sandboxes/{sandbox_id}")
    response = await harness.client.post(f"/v1/sandboxes/{sandbox_id}/execute", json={"code": "1"})
    body = assert_envelope(response, 409, "conflict_error")
    assert body["detail"] == f"sandbox {sandbox_id} is destroyed; it must be running"
    assert agent.requests == []


async def test_execute_in_errored_sandbox_is_409_with_the_reason(
    harness: Harness, sandbox_id: str
) -> None:
    await harness.runtime.kill(sandbox_id)
    await harness.services.reconciler.reconcile()
    response = await harness.client.post(f"/v1/sandboxes/{sandbox_id}/execute", json={"code": "1"})
    body = assert_envelope(response, 409, "conflict_error")
    assert "is error" in body["detail"]
    assert "exited unexpectedly" in body["detail"]


async def test_execute_needs_a_key_and_answers_401_in_the_envelope(
    harness: Harness, sandbox_id: str
) -> None:
    response = await harness.anon.post(f"/v1/sandboxes/{sandbox_id}/execute", json={"code": "1"})
    assert_envelope(response, 401, "authentication_error")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_oom_kill_is_reported_once_then_the_context_is_dead(
    harness: Harness, sandbox_id: str
) -> None:
    ctx = (await harness.execute(sandbox_id, code="data = 1"))["context_id"]
    harness.runtime.inject_oom(sandbox_id)
    killed = await harness.execute(sandbox_id, code="data = 'x' * 10**10", context_id=ctx)
    assert killed["error"]["name"] == "OutOfMemoryError"
    assert "memory limit of 512 MB" in killed["error"]["value"]
    again = await harness.execute(sandbox_id, code="data", context_id=ctx)
    assert again["error"]["name"] == "KernelDiedError"
    fresh = await harness.execute(sandbox_id, code="1 + 1")
    assert fresh["items"] == [{"is_primary": True, "text": "2"}]
    sandbox = (await harness.client.get(f"/v1/sandboxes/{sandbox_id}")).json()
    assert sandbox["status"] == "running"  # an OOM kill ends a kernel, not the sandbox


async def test_an_execution_on_a_frozen_agent_is_refused_at_once_and_works_after_the_thaw(
    harness: Harness, sandbox_id: str
) -> None:
    ctx = (await harness.execute(sandbox_id, code="n = 1"))["context_id"]
    await harness.runtime.pause(sandbox_id)
    assert (await harness.runtime.poll(sandbox_id)).frozen
    body = {"code": "n + 1", "context_id": ctx}
    async with asyncio.timeout(5):  # a frozen agent could not answer: the link does, at once
        refused = await harness.client.post(f"/v1/sandboxes/{sandbox_id}/execute", json=body)
    assert "paused while" in assert_envelope(refused, 409, "conflict_error")["detail"]
    await harness.runtime.resume(sandbox_id)
    result = await harness.execute(sandbox_id, code="n + 1", context_id=ctx)
    assert result["items"] == [{"is_primary": True, "text": "2"}]
    assert not (await harness.runtime.poll(sandbox_id)).frozen


# --- an execution and a pause ---------------------------------------------------------------


async def test_an_execution_in_flight_when_its_sandbox_pauses_answers_409_at_once(
    harness: Harness,
) -> None:
    sandbox_id = (await harness.create())["id"]
    base = f"/v1/sandboxes/{sandbox_id}"
    agent = harness.runtime.agent(sandbox_id)
    running = asyncio.create_task(
        harness.client.post(f"{base}/execute", json={"code": "# gate: g\n1", "timeout_ms": 600_000})
    )
    await waiting(harness, sandbox_id, 1)
    assert (await harness.client.post(f"{base}/pause")).status_code == 200
    async with asyncio.timeout(5):
        response = await running
    body = assert_envelope(response, 409, "conflict_error")
    assert "paused while" in body["detail"]
    # The code was frozen, not stopped: it goes on after the resume, and the sandbox serves.
    assert (await harness.client.post(f"{base}/resume")).status_code == 200
    agent.gates["g"].set()
    assert (await harness.execute(sandbox_id, code="1+1"))["items"][0]["text"] == "2"


async def test_a_context_whose_kernel_is_killed_starting_is_a_409_naming_the_memory(
    harness: Harness,
) -> None:
    sandbox_id = (await harness.create())["id"]
    harness.runtime.inject_oom(sandbox_id)
    response = await harness.client.post(f"/v1/sandboxes/{sandbox_id}/contexts", json={})
    body = assert_envelope(response, 409, "conflict_error")
    assert "no memory left for another python context" in body["detail"]
    assert "512 MB" in body["detail"]
    # The sandbox and its agent are fine: the next context starts.
    again = await harness.client.post(f"/v1/sandboxes/{sandbox_id}/contexts", json={})
    assert again.status_code == 201, again.text


async def test_a_kernel_that_hangs_starting_in_a_full_sandbox_is_a_409_naming_the_memory(
    harness: Harness,
) -> None:
    sandbox_id = (await harness.create())["id"]
    harness.runtime.fill_memory(sandbox_id, 500 * 2**20)  # of 512 MB
    response = await harness.client.post(f"/v1/sandboxes/{sandbox_id}/contexts", json={})
    body = assert_envelope(response, 409, "conflict_error")
    assert "no memory left for another python context" in body["detail"]


async def test_an_execution_in_flight_when_its_sandbox_is_destroyed_answers_409(
    harness: Harness,
) -> None:
    sandbox_id = (await harness.create())["id"]
    running = asyncio.create_task(
        harness.client.post(
            f"/v1/sandboxes/{sandbox_id}/execute", json={"code": "# gate: never\n1"}
        )
    )
    await waiting(harness, sandbox_id, 1)
    assert (await harness.client.delete(f"/v1/sandboxes/{sandbox_id}")).status_code == 200
    async with asyncio.timeout(5):
        response = await running
    body = assert_envelope(response, 409, "conflict_error")
    assert body["detail"] == f"sandbox {sandbox_id} was destroyed while this request ran"
