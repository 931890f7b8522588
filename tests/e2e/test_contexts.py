"""``/v1/sandboxes/{id}/contexts``: create, list, get, delete, restart, interrupt."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.executing import ndjson_events, new_context, run
from tests.e2e.test_agent_api import other_org_key
from tests.serverproc import ServerProcess


def contexts_url(sandbox: dict[str, Any], *rest: str) -> str:
    return "/".join([f"/v1/sandboxes/{sandbox['id']}/contexts", *rest])


def assert_envelope(response: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == status and body["type"] == type_ and body["detail"]
    return body


def test_create_get_list_and_use_a_context(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    context = new_context(api, sandbox["id"])
    assert context["id"].startswith("ctx_")
    assert context["sandbox_id"] == sandbox["id"]
    assert (context["language"], context["cwd"], context["status"]) == (
        "python",
        "/home/user",
        "ready",
    )
    assert context["created_at"].endswith("Z")
    assert api.get(contexts_url(sandbox, context["id"])).json() == context
    ts = new_context(api, sandbox["id"], language="js")
    assert ts["language"] == "typescript"
    listed = api.get(contexts_url(sandbox)).json()["items"]
    assert [c["id"] for c in listed] == [context["id"], ts["id"]]
    result = run(api, sandbox["id"], context_id=context["id"], code="import os; os.getcwd()")
    assert result["items"] == [{"is_primary": True, "text": "'/home/user'"}]
    assert result["execution_count"] == 1


def test_contexts_made_by_execute_are_listed(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    context_id = run(api, sandbox["id"], code="1")["context_id"]
    assert [c["id"] for c in api.get(contexts_url(sandbox)).json()["items"]] == [context_id]


@pytest.mark.parametrize("language", ["python", "typescript"])
def test_cwd_is_created_and_used(api: httpx.Client, sandbox: dict[str, Any], language: str) -> None:
    cwd = "/home/user/work/./deep/../nested"
    context = new_context(api, sandbox["id"], language=language, cwd=cwd)
    assert context["cwd"] == "/home/user/work/nested"
    code = "import os; os.getcwd()" if language == "python" else "Deno.cwd()"
    result = run(api, sandbox["id"], context_id=context["id"], code=code)
    assert result["items"][0]["text"].strip("'\"") == "/home/user/work/nested"


@pytest.mark.parametrize(
    "body",
    [
        {"language": "cobol"},
        {"cwd": "relative/path"},
        {"cwd": "/proc/not-writable"},  # the agent cannot create it: the sandbox user says no
        {"cwd": ""},
        {"surprise": 1},
    ],
)
def test_invalid_create_is_a_validation_error(
    api: httpx.Client, sandbox: dict[str, Any], body: dict[str, Any]
) -> None:
    response = api.post(contexts_url(sandbox), json=body)
    errors = assert_envelope(response, 422, "validation_error")["errors"]
    assert errors and errors[0]["loc"][-1] == next(iter(body))
    assert api.get(contexts_url(sandbox)).json()["items"] == []


def test_delete_shuts_the_context_down(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    context_id = new_context(api, sandbox["id"])["id"]
    run(api, sandbox["id"], context_id=context_id, code="import os; pid = os.getpid()")
    pid = run(api, sandbox["id"], context_id=context_id, code="pid")["items"][0]["text"]
    deleted = api.delete(contexts_url(sandbox, context_id))
    assert deleted.status_code == 204 and deleted.content == b""
    assert_envelope(api.get(contexts_url(sandbox, context_id)), 404, "not_found_error")
    assert_envelope(api.delete(contexts_url(sandbox, context_id)), 404, "not_found_error")
    assert api.get(contexts_url(sandbox)).json()["items"] == []
    gone = api.post(
        f"/v1/sandboxes/{sandbox['id']}/execute", json={"code": "1", "context_id": context_id}
    )
    assert_envelope(gone, 404, "not_found_error")
    # The kernel process is gone, not just forgotten.
    probe = run(api, sandbox["id"], code=f"import os; os.path.exists('/proc/{pid}')")
    assert probe["items"] == [{"is_primary": True, "text": "False"}]


@pytest.mark.parametrize("language", ["python", "typescript"])
def test_restart_keeps_the_id_and_drops_the_state(
    api: httpx.Client, sandbox: dict[str, Any], language: str
) -> None:
    context = new_context(api, sandbox["id"], language=language)
    set_x = "x = 1" if language == "python" else "var x = 1"
    run(api, sandbox["id"], context_id=context["id"], code=set_x)
    restarted = api.post(contexts_url(sandbox, context["id"], "restart"))
    assert restarted.status_code == 200, restarted.text
    assert restarted.json() == context
    probe = "'x' in globals()" if language == "python" else "typeof x"
    after = run(api, sandbox["id"], context_id=context["id"], code=probe)
    assert after["items"][0]["text"] in ("False", '"undefined"')
    assert after["execution_count"] == 1


def test_restart_revives_a_dead_context(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    context_id = run(api, sandbox["id"], code="import os; os._exit(1)")["context_id"]
    dead = run(api, sandbox["id"], context_id=context_id, code="1")
    assert dead["error"]["name"] == "KernelDiedError"
    assert api.post(contexts_url({"id": sandbox["id"]}, context_id, "restart")).status_code == 200
    assert run(api, sandbox["id"], context_id=context_id, code="1 + 1")["items"][0]["text"] == "2"


def test_interrupt_ends_the_running_execution_and_keeps_state(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    context_id = new_context(api, sandbox["id"])["id"]
    run(api, sandbox["id"], context_id=context_id, code="kept = 'yes'")
    code = "import time\nprint('started', flush=True)\ntime.sleep(120)"
    url = f"/v1/sandboxes/{sandbox['id']}/execute/stream"
    with api.stream("POST", url, json={"code": code, "context_id": context_id}) as response:
        events = ndjson_events(response)
        for event in events:
            if event["type"] == "stdout":
                break
        interrupted = api.post(contexts_url(sandbox, context_id, "interrupt"))
        assert interrupted.status_code == 200, interrupted.text
        rest = [e for e in events if e["type"] != "keepalive"]
    assert [e["type"] for e in rest] == ["error", "end_of_execution"]
    assert rest[0]["name"] == "KeyboardInterrupt"
    after = run(api, sandbox["id"], context_id=context_id, code="kept")
    assert after["items"] == [{"is_primary": True, "text": "'yes'"}]


def test_unknown_contexts_and_sandboxes_are_404(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    for method, path in [
        ("GET", "ctx_0000000000000000"),
        ("DELETE", "ctx_0000000000000000"),
        ("POST", "ctx_0000000000000000/restart"),
        ("POST", "ctx_0000000000000000/interrupt"),
    ]:
        assert_envelope(api.request(method, contexts_url(sandbox, path)), 404, "not_found_error")
    missing = {"id": "sb_00000000"}
    assert_envelope(api.get(contexts_url(missing)), 404, "not_found_error")
    assert_envelope(api.post(contexts_url(missing), json={}), 404, "not_found_error")


def test_contexts_of_another_sandbox_or_tenant_are_404(
    api: httpx.Client, server: ServerProcess, sandbox: dict[str, Any]
) -> None:
    context_id = new_context(api, sandbox["id"])["id"]
    other = api.post("/v1/sandboxes", json={}).json()
    try:
        # Through another sandbox of the same tenant.
        for method, path in [
            ("GET", context_id),
            ("DELETE", context_id),
            ("POST", f"{context_id}/restart"),
            ("POST", f"{context_id}/interrupt"),
        ]:
            response = api.request(method, contexts_url(other, path))
            assert_envelope(response, 404, "not_found_error")
        assert api.get(contexts_url(other)).json()["items"] == []
    finally:
        api.delete(f"/v1/sandboxes/{other['id']}")
    # By another tenant, through the right sandbox.
    with server.client(other_org_key(server)) as stranger:
        assert_envelope(stranger.get(contexts_url(sandbox)), 404, "not_found_error")
        assert_envelope(stranger.get(contexts_url(sandbox, context_id)), 404, "not_found_error")
        assert_envelope(stranger.delete(contexts_url(sandbox, context_id)), 404, "not_found_error")
        assert_envelope(
            stranger.post(contexts_url(sandbox), json={"language": "python"}),
            404,
            "not_found_error",
        )
    # Nothing the others did reached it.
    assert api.get(contexts_url(sandbox, context_id)).json()["status"] == "ready"


def test_a_destroyed_sandbox_has_no_usable_contexts(api: httpx.Client) -> None:
    sandbox = api.post("/v1/sandboxes", json={}).json()
    context_id = new_context(api, sandbox["id"])["id"]
    api.delete(f"/v1/sandboxes/{sandbox['id']}")
    assert_envelope(api.post(contexts_url(sandbox), json={}), 409, "conflict_error")
    assert_envelope(api.post(contexts_url(sandbox, context_id, "restart")), 409, "conflict_error")
    # Deleting the record of a context whose sandbox is gone is allowed.
    assert api.delete(contexts_url(sandbox, context_id)).status_code == 204
