"""``POST /v1/sandboxes/{id}/execute/stream``: typed events as NDJSON or SSE, keepalives, and a
client that leaves interrupting its execution."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.e2e.executing import (
    ndjson_events,
    new_context,
    run,
    sse_frames,
    stream,
    without_keepalives,
)


def stream_url(sandbox: dict[str, Any]) -> str:
    return f"/v1/sandboxes/{sandbox['id']}/execute/stream"


def test_ndjson_events_in_order_ending_with_end_of_execution(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    code = (
        "import sys\n"
        "print('one', flush=True)\n"
        "print('two', file=sys.stderr, flush=True)\n"
        "from IPython.display import display, HTML\n"
        "display(HTML('<i>shown</i>'))\n"
        "41 + 1"
    )
    events = without_keepalives(stream(api, sandbox["id"], code=code))
    context_id = events[-1]["context_id"]
    assert events == [
        {"type": "execution_count", "execution_count": 1},
        {"type": "stdout", "text": "one\n"},
        {"type": "stderr", "text": "two\n"},
        {"type": "result", "is_primary": False, "text": "<IPython.core.display.HTML object>",
         "html": "<i>shown</i>"},
        {"type": "result", "is_primary": True, "text": "42"},
        {"type": "end_of_execution", "context_id": context_id},
    ]  # fmt: skip
    # The context the stream created is an ordinary context.
    after = run(api, sandbox["id"], context_id=context_id, code="_ + 1")
    assert after["items"] == [{"is_primary": True, "text": "43"}]


def test_errors_are_events_with_readable_tracebacks(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    events = without_keepalives(stream(api, sandbox["id"], code="def f():\n    1/0\nf()"))
    assert [e["type"] for e in events] == ["execution_count", "error", "end_of_execution"]
    error = events[1]
    assert (error["name"], error["value"]) == ("ZeroDivisionError", "division by zero")
    assert "ZeroDivisionError" in error["traceback"] and "\x1b[" not in error["traceback"]


def test_stream_and_execute_agree(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    code = "print('p')\nfrom IPython.display import Markdown, display\ndisplay(Markdown('*m*'))\n7"
    plain = run(api, sandbox["id"], code=code)
    events = without_keepalives(stream(api, sandbox["id"], code=code))
    items = [{k: v for k, v in e.items() if k != "type"} for e in events if e["type"] == "result"]
    assert items == plain["items"]
    assert [e["text"] for e in events if e["type"] == "stdout"] == plain["logs"]["stdout"]


def test_typescript_streams_too(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    code = "console.log('a'); await new Promise((ok) => setTimeout(ok, 10)); console.log('b'); 1"
    events = without_keepalives(stream(api, sandbox["id"], code=code, language="ts"))
    assert [(e["type"], e.get("text")) for e in events] == [
        ("execution_count", None),
        ("stdout", "a\n"),
        ("stdout", "b\n"),
        ("result", "1"),
        ("end_of_execution", None),
    ]


def test_sse_when_asked(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    headers = {"Accept": "text/event-stream"}
    body = {"code": "print('hi')\n2"}
    with api.stream("POST", stream_url(sandbox), json=body, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = [f for f in sse_frames(response) if "comment" not in f]
    assert [f["event"] for f in frames] == [
        "execution_count",
        "stdout",
        "result",
        "end_of_execution",
    ]
    data = [json.loads(f["data"]) for f in frames]
    assert [d["type"] for d in data] == [f["event"] for f in frames]
    assert data[1]["text"] == "hi\n" and data[2]["text"] == "2"


def test_keepalives_during_silence(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    # The code waits for a file that the test creates only once it has seen a keepalive.
    waiter = new_context(api, sandbox["id"])["id"]
    code = (
        "import os, time\n"
        "while not os.path.exists('/home/user/go'):\n"
        "    time.sleep(0.02)\n"
        "print('went')"
    )
    url, params = stream_url(sandbox), {"keepalive_ms": 100}
    body = {"code": code, "context_id": waiter}
    with api.stream("POST", url, json=body, params=params) as response:
        events = ndjson_events(response)
        seen = [next(events)]
        while seen[-1]["type"] != "keepalive":
            seen.append(next(events))
        run(api, sandbox["id"], code="open('/home/user/go', 'w').close()")
        seen.extend(events)
    assert seen[-1] == {"type": "end_of_execution", "context_id": waiter}
    assert {"type": "stdout", "text": "went\n"} in seen
    assert {"type": "keepalive"} in seen


def test_sse_keepalives_are_comments(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    waiter = new_context(api, sandbox["id"])["id"]
    code = "import os, time\nwhile not os.path.exists('/home/user/go2'):\n    time.sleep(0.02)"
    headers = {"Accept": "text/event-stream"}
    body = {"code": code, "context_id": waiter}
    with api.stream(
        "POST", stream_url(sandbox), json=body, params={"keepalive_ms": 100}, headers=headers
    ) as response:
        frames = sse_frames(response)
        first_comment = next(f for f in frames if "comment" in f)
        run(api, sandbox["id"], code="open('/home/user/go2', 'w').close()")
        rest = list(frames)
    assert first_comment == {"comment": "keepalive"}
    assert rest[-1]["event"] == "end_of_execution"


def test_request_errors_come_before_the_stream(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    url = stream_url(sandbox)
    missing_code = api.post(url, json={})
    assert missing_code.status_code == 422
    assert missing_code.json()["errors"][0]["field"] == "code"
    bad_language = api.post(url, json={"code": "1", "language": "cobol"})
    assert bad_language.status_code == 422
    assert bad_language.json() == {
        "message": "Invalid request",
        "errors": [{"field": "language", "error": bad_language.json()["errors"][0]["error"]}],
    }
    bad_env = api.post(url, json={"code": "1", "env_vars": {"A=B": "x"}})
    assert bad_env.status_code == 422 and bad_env.json()["errors"][0]["field"] == "env_vars"
    bad_keepalive = api.post(url, json={"code": "1"}, params={"keepalive_ms": 0})
    assert bad_keepalive.status_code == 422
    assert bad_keepalive.json()["errors"][0]["field"] == "keepalive_ms"
    unknown_context = api.post(url, json={"code": "1", "context_id": "ctx_nope"})
    assert unknown_context.status_code == 404
    assert unknown_context.json()["type"] == "not_found_error"
    unknown_sandbox = api.post("/v1/sandboxes/sb_00000000/execute/stream", json={"code": "1"})
    assert unknown_sandbox.status_code == 404


def test_a_client_that_leaves_interrupts_the_execution(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    context_id = new_context(api, sandbox["id"])["id"]
    run(api, sandbox["id"], context_id=context_id, code="kept = 'yes'; done = -1")
    code = (
        "import time\n"
        "for i in range(600):\n"
        "    done = i\n"
        "    if i == 3:\n"
        "        print('started', flush=True)\n"
        "    time.sleep(0.1)\n"
    )
    body = {"code": code, "context_id": context_id, "timeout_ms": 600_000}
    # No keepalive in the way: only the server's watch for the disconnect can notice.
    params = {"keepalive_ms": 60_000}
    with api.stream("POST", stream_url(sandbox), json=body, params=params) as response:
        for event in ndjson_events(response):
            if event["type"] == "stdout":
                break
    # Leaving the block closed the connection mid-stream. Were the loop still running, this
    # execute would wait behind it for a minute: the client's timeout is well below that.
    with httpx.Client(
        base_url=str(api.base_url), headers=dict(api.headers), timeout=20
    ) as impatient:
        after = impatient.post(
            f"/v1/sandboxes/{sandbox['id']}/execute",
            json={"code": "(kept, 3 <= done < 599)", "context_id": context_id},
        )
    assert after.status_code == 200, after.text
    result = after.json()
    # Interrupted, not restarted: earlier state kept; the loop stopped early.
    assert result["error"] is None, result
    assert result["items"] == [{"is_primary": True, "text": "('yes', True)"}]
