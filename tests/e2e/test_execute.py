"""``POST /v1/sandboxes/{id}/execute`` against real kernels in real sandboxes."""

from __future__ import annotations

import httpx

from tests.e2e.executing import run


def test_state_is_kept_across_executes_in_one_context(
    api: httpx.Client, sandbox: dict[str, object]
) -> None:
    first = run(api, sandbox["id"], code="x = 41")
    context_id = first["context_id"]
    assert isinstance(context_id, str) and context_id
    assert first["error"] is None
    second = run(api, sandbox["id"], code="x + 1", context_id=context_id)
    assert second["context_id"] == context_id
    assert second["items"] == [{"is_primary": True, "text": "42"}]
    assert second["execution_count"] == 2


def test_a_new_contexts_first_cell_finds_no_trace_of_its_kernels_warm_up(
    api: httpx.Client, sandbox: dict[str, object]
) -> None:
    # Every kernel runs a cell before a context gets it (agent/kernels.py: FIRST_CELL): outside
    # the count, the history and the namespace.
    first = run(api, sandbox["id"], code="(len(In), len(Out), _, _i, _ih[1:])")
    assert first["execution_count"] == 1
    assert first["items"] == [
        {"is_primary": True, "text": "(2, 0, '', '', ['(len(In), len(Out), _, _i, _ih[1:])'])"}
    ]


def test_history_is_kept_in_memory_and_written_to_no_file(
    api: httpx.Client, sandbox: dict[str, object]
) -> None:
    first = run(api, sandbox["id"], code="marker = 'cell one'")
    context_id = first["context_id"]
    probe = (
        "import glob, os\n"
        "ip = get_ipython()\n"
        "print(ip.history_manager.hist_file)\n"
        "print([c for _, _, c in ip.history_manager.get_range()])\n"
        "print(glob.glob(os.path.expanduser('~/.ipython/profile_default/history.sqlite*')))"
    )
    shown = run(api, sandbox["id"], code=probe, context_id=context_id)
    assert shown["error"] is None, shown
    hist_file, cells, files = "".join(shown["logs"]["stdout"]).splitlines()
    assert hist_file == ":memory:"
    assert "marker = 'cell one'" in cells
    assert files == "[]"


def test_omitted_context_id_makes_a_new_context(
    api: httpx.Client, sandbox: dict[str, object]
) -> None:
    first = run(api, sandbox["id"], code="y = 1")
    second = run(api, sandbox["id"], code="y")
    assert second["context_id"] != first["context_id"]
    assert second["error"] is not None and second["error"]["name"] == "NameError"


def test_print_and_errors(api: httpx.Client, sandbox: dict[str, object]) -> None:
    printed = run(
        api, sandbox["id"], code="import sys\nprint('hello')\nprint('oops', file=sys.stderr)"
    )
    assert printed["logs"] == {"stdout": ["hello\n"], "stderr": ["oops\n"]}
    failed = run(api, sandbox["id"], code="1/0")
    error = failed["error"]
    assert isinstance(error, dict)
    assert error["name"] == "ZeroDivisionError"
    assert error["value"] == "division by zero"
    assert "ZeroDivisionError" in error["traceback"] and "\x1b[" not in error["traceback"]


def test_env_vars_apply_to_one_execution_only(
    api: httpx.Client, sandbox: dict[str, object]
) -> None:
    code = "import os; os.environ.get('GREETING')"
    quote = "it's \"quoted\"; print('injected')"
    first = run(api, sandbox["id"], code=code, env_vars={"GREETING": quote})
    assert first["items"] == [{"is_primary": True, "text": repr(quote)}]
    assert first["logs"] == {"stdout": [], "stderr": []}
    second = run(api, sandbox["id"], code=code, context_id=first["context_id"])
    assert second["items"] == []


def test_timeout_interrupts_and_keeps_state(api: httpx.Client, sandbox: dict[str, object]) -> None:
    ctx = run(api, sandbox["id"], code="kept = 'yes'")["context_id"]
    slow = run(
        api, sandbox["id"], code="import time; time.sleep(30)", context_id=ctx, timeout_ms=1000
    )
    assert slow["error"]["name"] == "TimeoutError"
    after = run(api, sandbox["id"], code="kept", context_id=ctx)
    assert after["items"] == [{"is_primary": True, "text": "'yes'"}]


def test_kernel_that_kills_itself_is_an_error_and_a_new_context_works(
    api: httpx.Client, sandbox: dict[str, object]
) -> None:
    died = run(api, sandbox["id"], code="import os; os._exit(1)")
    assert died["error"]["name"] == "KernelDiedError"
    again = run(api, sandbox["id"], code="1 + 1", context_id=died["context_id"])
    assert again["error"]["name"] == "KernelDiedError"
    fresh = run(api, sandbox["id"], code="1 + 1")
    assert fresh["items"] == [{"is_primary": True, "text": "2"}]


def test_execute_validation_uses_its_own_document(
    api: httpx.Client, sandbox: dict[str, object]
) -> None:
    missing_code = api.post(f"/v1/sandboxes/{sandbox['id']}/execute", json={})
    assert missing_code.status_code == 422
    body = missing_code.json()
    assert body["message"] == "Invalid request"
    assert body["errors"][0]["field"] == "code"
    bad_language = api.post(
        f"/v1/sandboxes/{sandbox['id']}/execute", json={"code": "1", "language": "cobol"}
    )
    assert bad_language.status_code == 422
    assert bad_language.json()["errors"][0]["field"] == "language"
    unknown_context = api.post(
        f"/v1/sandboxes/{sandbox['id']}/execute", json={"code": "1", "context_id": "ctx_nope"}
    )
    assert unknown_context.status_code == 404
    assert unknown_context.json()["type"] == "not_found_error"


def test_contexts_are_invisible_to_other_sandboxes(api: httpx.Client) -> None:
    a = api.post("/v1/sandboxes", json={}).json()["id"]
    b = api.post("/v1/sandboxes", json={}).json()["id"]
    try:
        wrote = run(api, a, code="secret = 'a-only'\nopen('/home/user/a.txt','w').write('a')")
        assert wrote["items"] == [{"is_primary": True, "text": "1"}], wrote
        ctx = wrote["context_id"]
        other = api.post(f"/v1/sandboxes/{b}/execute", json={"code": "secret", "context_id": ctx})
        assert other.status_code == 404
        probe = run(
            api, b, code="import os; (os.path.exists('/home/user/a.txt'), 'secret' in globals())"
        )
        assert probe["items"] == [{"is_primary": True, "text": "(False, False)"}]
    finally:
        api.delete(f"/v1/sandboxes/{a}")
        api.delete(f"/v1/sandboxes/{b}")
