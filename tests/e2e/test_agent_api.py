"""The agent API (``sandbox-agent-api.txt``) on both URL styles, against a real server.

Host-style requests carry a real ``Host: sb-….sandbox.localhost`` header to the real server, so
the host routing is what is tested, not a shortcut around it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from sandcastle.services.auth import new_key_row
from sandcastle.store.db import Database
from sandcastle.store.models import OrgRow
from tests.helpers import parse_time
from tests.serverproc import ServerProcess

Style = Callable[[str], tuple[str, dict[str, str]]]


def host_of(sandbox_id: str, server: ServerProcess, *, dash: bool = True) -> str:
    label = sandbox_id.replace("_", "-") if dash else sandbox_id
    return f"{label}.sandbox.localhost:{server.port}"


@pytest.fixture(params=["path", "host"])
def style(request: pytest.FixtureRequest, sandbox: dict[str, Any], server: ServerProcess) -> Style:
    """Build (url, headers) for a document path, in one of the two URL styles."""
    sandbox_id = str(sandbox["id"])

    def by_path(doc_path: str) -> tuple[str, dict[str, str]]:
        return f"/v1/sandboxes/{sandbox_id}/agent{doc_path}", {}

    def by_host(doc_path: str) -> tuple[str, dict[str, str]]:
        return doc_path, {"Host": host_of(sandbox_id, server)}

    return by_path if request.param == "path" else by_host


def agent_execute(api: httpx.Client, style: Style, code: str, **extra: Any) -> dict[str, Any]:
    url, headers = style("/execute")
    response = api.post(url, headers=headers, json={"code": code, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"status", "events"}
    for event in body["events"]:
        assert set(event) == {"type", "timestamp", "data"}
        parse_time(event["timestamp"])
    return body


def of_type(result: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [e["data"] for e in result["events"] if e["type"] == type_]


def test_ping_reports_last_activity_which_moves_with_executions(
    api: httpx.Client, style: Style, sandbox: dict[str, Any]
) -> None:
    url, headers = style("/")
    first = api.get(url, headers=headers)
    assert first.status_code == 200, first.text
    assert set(first.json()) == {"last_activity"}
    before = parse_time(first.json()["last_activity"])
    assert before >= parse_time(str(sandbox["started_at"]))
    assert (
        parse_time(api.get(url, headers=headers).json()["last_activity"]) == before
    )  # pings don't count
    agent_execute(api, style, "1 + 1")
    after = parse_time(api.get(url, headers=headers).json()["last_activity"])
    assert after > before


def test_execute_events(api: httpx.Client, style: Style) -> None:
    code = (
        "import os, sys\n"
        "print('hello')\n"
        "print('warning', file=sys.stderr)\n"
        "os.makedirs('out', exist_ok=True)\n"
        "with open('out/report.txt', 'w') as f:\n"
        "    f.write('x' * 128)\n"
        "'done'"
    )
    result = agent_execute(api, style, code)
    assert result["status"] == "ok"
    assert of_type(result, "stream") == [
        {"name": "stdout", "text": "hello\n"},
        {"name": "stderr", "text": "warning\n"},
    ]
    assert of_type(result, "display_data") == [{"variants": {"text/plain": "'done'"}}]
    assert of_type(result, "file") == [{"path": "out/report.txt", "size": 128}]
    times = [parse_time(e["timestamp"]) for e in result["events"]]
    assert times == sorted(times)
    # Unchanged files are not reported again; a changed one is.
    again = agent_execute(api, style, "open('out/report.txt', 'a').write('y')")
    assert of_type(again, "file") == [{"path": "out/report.txt", "size": 129}]
    assert of_type(agent_execute(api, style, "pass"), "file") == []


def test_state_persists_in_the_default_context(api: httpx.Client, style: Style) -> None:
    agent_execute(api, style, "counter = 41")
    result = agent_execute(api, style, "counter + 1")
    assert of_type(result, "display_data") == [{"variants": {"text/plain": "42"}}]


def test_error_event_keeps_the_ansi_traceback(api: httpx.Client, style: Style) -> None:
    result = agent_execute(api, style, "1 / 0")
    assert result["status"] == "ok"
    [error] = of_type(result, "error")
    assert error["ename"] == "ZeroDivisionError"
    assert error["evalue"] == "division by zero"
    assert isinstance(error["traceback"], list) and len(error["traceback"]) > 1
    assert any("\x1b[" in line for line in error["traceback"])


def test_matplotlib_png_is_display_data(api: httpx.Client, style: Style) -> None:
    code = "%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()"
    result = agent_execute(api, style, code)
    images = [
        d["variants"]["image/png"]
        for d in of_type(result, "display_data")
        if "image/png" in d["variants"]
    ]
    assert len(images) == 1, result
    assert base64.b64decode(images[0]).startswith(b"\x89PNG\r\n\x1a\n")


def test_timeout(api: httpx.Client, style: Style) -> None:
    agent_execute(api, style, "kept = 'yes'")
    result = agent_execute(
        api, style, "print('start'); import time; time.sleep(30)", timeout_secs=1
    )
    assert result["status"] == "timeout"
    assert of_type(result, "stream") == [{"name": "stdout", "text": "start\n"}]
    assert of_type(result, "error") == []
    after = agent_execute(api, style, "kept")
    assert of_type(after, "display_data") == [{"variants": {"text/plain": "'yes'"}}]


def test_a_dead_kernel_is_replaced_on_the_next_execute(api: httpx.Client, style: Style) -> None:
    died = agent_execute(api, style, "import os; os._exit(1)")
    assert [e["ename"] for e in of_type(died, "error")] == ["KernelDiedError"]
    fresh = agent_execute(api, style, "2 + 2")
    assert of_type(fresh, "display_data") == [{"variants": {"text/plain": "4"}}]


def test_invalid_agent_execute_body_is_a_validation_envelope(
    api: httpx.Client, style: Style
) -> None:
    url, headers = style("/execute")
    for body in ({}, {"code": "1", "timeout_secs": -1}, {"code": "1", "unknown": 1}):
        response = api.post(url, headers=headers, json=body)
        assert response.status_code == 422, response.text
        assert response.json()["type"] == "validation_error"


# --- the execute.txt document on the same path ---------------------------------------------------


def test_execute_document_body_gets_the_execute_document_result(
    api: httpx.Client, style: Style
) -> None:
    url, headers = style("/execute")
    first = api.post(url, headers=headers, json={"code": "x = 5", "language": "python"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body) >= {"context_id", "items", "logs", "error", "execution_count"}
    again = api.post(
        url, headers=headers, json={"code": "print(x); x * 2", "context_id": body["context_id"]}
    )
    assert again.json()["items"] == [{"is_primary": True, "text": "10"}]
    assert again.json()["logs"] == {"stdout": ["5\n"], "stderr": []}
    bad = api.post(url, headers=headers, json={"code": "1", "language": "cobol"})
    assert bad.status_code == 422
    assert set(bad.json()) == {"message", "errors"}
    assert bad.json()["errors"][0]["field"] == "language"


# --- files -----------------------------------------------------------------------------------------


def test_upload_creates_then_conflicts(api: httpx.Client, style: Style) -> None:
    url, headers = style("/files/upload/-/data/in/report.csv")
    created = api.post(url, headers=headers, content=b"a,b\n1,2\n")
    assert created.status_code == 201, created.text
    assert created.json()["path"] == "/home/user/data/in/report.csv"
    again = api.post(url, headers=headers, content=b"other")
    assert again.status_code == 409, again.text
    assert again.json()["type"] == "already_exists_error"
    url, headers = style("/files/download/-/data/in/report.csv")
    assert api.get(url, headers=headers).content == b"a,b\n1,2\n"


def test_uploads_larger_than_the_body_limit_stream_through(api: httpx.Client, style: Style) -> None:
    # 12 MiB: past the 10 MiB bound on bodies a route reads whole, which uploads are exempt from
    # whichever way they arrive (the sandbox host too).
    payload = os.urandom(12 * 1024 * 1024)
    url, headers = style("/files/upload/-/large.bin")
    created = api.post(url, headers=headers, content=payload)
    assert created.status_code == 201, created.text
    url, headers = style("/files/download/-/large.bin")
    assert api.get(url, headers=headers).content == payload


def test_upload_needs_content_length(api: httpx.Client, style: Style) -> None:
    url, headers = style("/files/upload/-/chunked.bin")

    def chunks() -> Iterator[bytes]:
        yield b"no length"

    response = api.post(url, headers=headers, content=chunks())
    assert response.status_code == 411, response.text
    assert response.json()["code"] == 411
    url, headers = style("/files/download/-/chunked.bin")
    assert api.get(url, headers=headers).status_code == 404


def test_download_headers(api: httpx.Client, style: Style) -> None:
    for name, content_type, encoded in [
        ("plot.png", "image/png", "plot.png"),
        ("table.csv", "text/csv", "table.csv"),
        ("blob.unknownext", "application/octet-stream", "blob.unknownext"),
        ("résumé final.txt", "text/plain", "r%C3%A9sum%C3%A9%20final.txt"),
    ]:
        url, headers = style(f"/files/upload/-/dl/{name}")
        assert api.post(url, headers=headers, content=b"payload").status_code == 201
        url, headers = style(f"/files/download/-/dl/{name}")
        response = api.get(url, headers=headers)
        assert response.status_code == 200
        assert response.content == b"payload"
        assert response.headers["content-type"].split(";")[0] == content_type
        assert response.headers["content-disposition"] == f"attachment; filename*=UTF-8''{encoded}"


def test_download_missing_is_404_and_absolute_paths_take_a_double_slash(
    api: httpx.Client, style: Style
) -> None:
    url, headers = style("/files/download/-/nope.txt")
    missing = api.get(url, headers=headers)
    assert missing.status_code == 404
    assert missing.json()["type"] == "not_found_error"
    url, headers = style("/files/upload/-//tmp/abs.txt")
    assert api.post(url, headers=headers, content=b"abs").json()["path"] == "/tmp/abs.txt"
    url, headers = style("/files/download/-//tmp/abs.txt")
    assert api.get(url, headers=headers).content == b"abs"
    url, headers = style("/files/download/-//run/sandcastle/agent.sock")
    assert api.get(url, headers=headers).status_code == 403


def test_execute_reports_files_uploaded_by_nobody_else(api: httpx.Client, style: Style) -> None:
    # Files the API wrote between executions are not the program's: no ``file`` event for them.
    url, headers = style("/files/upload/-/uploaded.txt")
    api.post(url, headers=headers, content=b"u")
    result = agent_execute(api, style, "open('written.txt', 'w').write('w')")
    assert of_type(result, "file") == [{"path": "written.txt", "size": 1}]


# --- host routing and tenancy -----------------------------------------------------------------------


def other_org_key(server: ServerProcess) -> str:
    """A key of a second organisation, written straight into the server's database."""

    async def make() -> str:
        db = Database(server.database_url)
        try:
            now = datetime.now(UTC)
            async with db.session() as session:
                org = OrgRow(
                    id=str(uuid.uuid4()),
                    slug=f"other-{uuid.uuid4().hex[:8]}",
                    name="Other",
                    created_at=now,
                )
                session.add(org)
                await session.flush()
                key, row = new_key_row(
                    org_id=org.id, project_id=None, name="other", role="owner", now=now
                )
                session.add(row)
            return key
        finally:
            await db.aclose()

    return asyncio.run(make())


def test_another_orgs_sandbox_is_404_on_both_styles(
    server: ServerProcess, sandbox: dict[str, Any]
) -> None:
    sandbox_id = str(sandbox["id"])
    with server.client(other_org_key(server)) as stranger:
        for dash in (True, False):
            headers = {"Host": host_of(sandbox_id, server, dash=dash)}
            for method, path, body in [
                ("GET", "/", None),
                ("POST", "/execute", {"code": "1"}),
                ("GET", "/files/download/-/.bashrc", None),
            ]:
                response = stranger.request(method, path, headers=headers, json=body)
                assert response.status_code == 404, (dash, path, response.text)
                assert response.json()["type"] == "not_found_error"
            upload = stranger.post("/files/upload/-/x", headers=headers, content=b"x")
            assert upload.status_code == 404
        by_path = stranger.get(f"/v1/sandboxes/{sandbox_id}/agent/")
        assert by_path.status_code == 404


def test_host_routing_edges(
    api: httpx.Client, server: ServerProcess, sandbox: dict[str, Any]
) -> None:
    # Underscore label, no port, upper case: all the same sandbox.
    sandbox_id = str(sandbox["id"])
    for host in (
        f"{sandbox_id}.sandbox.localhost",
        f"{sandbox_id.upper().replace('_', '-')}.SANDBOX.LOCALHOST:1",
    ):
        assert api.get("/", headers={"Host": host}).status_code == 200, host
    for host in (
        "nosuch.sandbox.localhost",
        "sb-00000000.sandbox.localhost",
        f"x.{sandbox_id}.sandbox.localhost",
    ):
        response = api.get("/", headers={"Host": host})
        assert response.status_code == 404, host
        assert response.json()["type"] == "not_found_error"
    # A sandbox host serves only the agent API; the plain host serves everything else.
    assert (
        api.get("/v1/health", headers={"Host": f"{sandbox_id}.sandbox.localhost"}).status_code
        == 404
    )
    assert api.get("/v1/health").status_code == 200
    unauthenticated = httpx.get(
        f"{server.url}/", headers={"Host": f"{sandbox_id}.sandbox.localhost"}
    )
    assert unauthenticated.status_code == 401
