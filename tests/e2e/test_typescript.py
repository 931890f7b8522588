"""TypeScript and JavaScript on Deno's Jupyter kernel, through the HTTP API."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.e2e.executing import new_context, run


@pytest.fixture
def ts(api: httpx.Client, sandbox: dict[str, Any]) -> str:
    """A TypeScript context's id."""
    return str(new_context(api, sandbox["id"], language="typescript")["id"])


def test_type_annotations_and_state_across_executes(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    first = run(
        api,
        sandbox["id"],
        language="typescript",
        code="interface P { n: number }\nconst p: P = { n: 41 };\np.n + 1",
    )
    assert first["error"] is None, first
    assert first["items"] == [{"is_primary": True, "text": "42"}]
    second = run(api, sandbox["id"], context_id=first["context_id"], code="p.n * 2")
    assert second["items"] == [{"is_primary": True, "text": "82"}]
    assert second["execution_count"] == 2


@pytest.mark.parametrize("spelling", ["ts", "javascript", "js", "bun", "node"])
def test_every_spelling_runs_on_deno(
    api: httpx.Client, sandbox: dict[str, Any], spelling: str
) -> None:
    result = run(
        api,
        sandbox["id"],
        language=spelling,
        code="typeof Deno === 'object' && 'deno' in Deno.version",
    )
    assert result["items"] == [{"is_primary": True, "text": "true"}]


def test_top_level_await(api: httpx.Client, sandbox: dict[str, Any], ts: str) -> None:
    code = "const v = await new Promise<string>((ok) => setTimeout(() => ok('later'), 10));\nv"
    result = run(api, sandbox["id"], context_id=ts, code=code)
    assert result["error"] is None and result["items"] == [{"is_primary": True, "text": '"later"'}]


def test_console_goes_to_the_logs(api: httpx.Client, sandbox: dict[str, Any], ts: str) -> None:
    result = run(api, sandbox["id"], context_id=ts, code="console.log('out'); console.error('err')")
    assert result["logs"] == {"stdout": ["out\n"], "stderr": ["err\n"]}
    assert result["items"] == [] and result["error"] is None


def test_thrown_error_is_a_result(api: httpx.Client, sandbox: dict[str, Any], ts: str) -> None:
    result = run(
        api,
        sandbox["id"],
        context_id=ts,
        code="function f(): never { throw new TypeError('boom') }\nf()",
    )
    error = result["error"]
    assert error["name"] == "TypeError" and error["value"] == "boom"
    assert "boom" in error["traceback"] and "\x1b[" not in error["traceback"]
    # The context lives on.
    assert run(api, sandbox["id"], context_id=ts, code="1 + 1")["items"][0]["text"] == "2"


def test_rich_outputs(api: httpx.Client, sandbox: dict[str, Any], ts: str) -> None:
    html = run(api, sandbox["id"], context_id=ts, code="Deno.jupyter.html`<b>x</b>`")
    assert html["items"] == [{"is_primary": True, "html": "<b>x</b>"}]
    obj = run(api, sandbox["id"], context_id=ts, code="({ a: 1, b: [1, 2], s: 'x' })")
    assert obj["items"] == [{"is_primary": True, "text": '{ a: 1, b: [ 1, 2 ], s: "x" }'}]
    code = (
        "await Deno.jupyter.display({ 'text/markdown': '# hi', 'application/x-thing': 7 },"
        " { raw: true });\n'after'"
    )
    shown = run(api, sandbox["id"], context_id=ts, code=code)
    assert shown["items"] == [
        {"is_primary": False, "markdown": "# hi", "extra": {"application/x-thing": 7}},
        {"is_primary": True, "text": '"after"'},
    ]


def test_env_vars_are_data_and_apply_to_one_execution(
    api: httpx.Client, sandbox: dict[str, Any], ts: str
) -> None:
    run(api, sandbox["id"], context_id=ts, code="Deno.env.set('KEPT', 'before')")
    tricky = 'it\'s "quoted"`${x}`\nline two\'); console.log("injected"); (\'\\n'
    code = "console.log(JSON.stringify([Deno.env.get('TRICKY'), process.env.KEPT]))"
    during = run(
        api, sandbox["id"], context_id=ts, code=code, env_vars={"TRICKY": tricky, "KEPT": "during"}
    )
    assert during["error"] is None, during
    assert [json.loads(line) for line in during["logs"]["stdout"]] == [[tricky, "during"]]
    after = run(api, sandbox["id"], context_id=ts, code=code)
    assert [json.loads(line) for line in after["logs"]["stdout"]] == [[None, "before"]]


def test_timeout_interrupts_a_busy_loop_and_keeps_state(
    api: httpx.Client, sandbox: dict[str, Any], ts: str
) -> None:
    run(api, sandbox["id"], context_id=ts, code="const kept = 'yes'")
    slow = run(api, sandbox["id"], context_id=ts, code="while (true) {}", timeout_ms=500)
    assert slow["error"]["name"] == "TimeoutError"
    assert "state is kept" in slow["error"]["value"]
    assert run(api, sandbox["id"], context_id=ts, code="kept")["items"] == [
        {"is_primary": True, "text": '"yes"'}
    ]


def test_a_pending_await_that_times_out_restarts_the_kernel(
    api: httpx.Client, sandbox: dict[str, Any], ts: str
) -> None:
    # Deno's interrupt stops running JavaScript, not a promise being awaited.
    run(api, sandbox["id"], context_id=ts, code="const lost = 1")
    code = "await new Promise((ok) => setTimeout(ok, 60_000))"
    stuck = run(api, sandbox["id"], context_id=ts, code=code, timeout_ms=1000)
    assert stuck["error"]["name"] == "TimeoutError" and "restarted" in stuck["error"]["value"]
    after = run(api, sandbox["id"], context_id=ts, code="typeof lost + '!'")
    assert after["items"] == [{"is_primary": True, "text": '"undefined!"'}]


def test_a_context_runs_only_its_own_language(
    api: httpx.Client, sandbox: dict[str, Any], ts: str
) -> None:
    python = run(api, sandbox["id"], code="1")["context_id"]
    for context_id, language in ((ts, "python"), (python, "ts"), (python, "javascript")):
        response = api.post(
            f"/v1/sandboxes/{sandbox['id']}/execute",
            json={"code": "1", "context_id": context_id, "language": language},
        )
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["message"] == "Invalid request"
        assert body["errors"][0]["field"] == "language"
    # The matching spelling is fine.
    same = run(api, sandbox["id"], context_id=ts, language="js", code="'ok'")
    assert same["items"] == [{"is_primary": True, "text": '"ok"'}]
