"""The SDK's HTTP behaviour against a scripted server (httpx.MockTransport): error answers
become the exception tree, 429s and dropped connections are retried only when that is safe,
lists follow cursors, and configuration comes from the environment. Both faces."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sandcastle_sdk import AsyncSandcastle, Sandbox, Sandcastle, errors
from sandcastle_sdk._async import _io as async_io
from sandcastle_sdk._sync import _io as sync_io
from sandcastle_sdk.models import SandboxInfo

Handler = Callable[[httpx.Request], httpx.Response]

SANDBOX = {
    "id": "sb_1",
    "status": "running",
    "template": "python",
    "config": {"vcpus": 1, "memory_mb": 512, "disk_mb": 1024},
    "created_at": "2026-12-03T10:00:00Z",
}


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoff sleeps taken (not slept)."""
    seen: list[float] = []

    async def no_async_sleep(seconds: float) -> None:
        seen.append(seconds)

    monkeypatch.setattr(sync_io, "sleep", seen.append)
    monkeypatch.setattr(async_io, "sleep", no_async_sleep)
    return seen


def scripted(*answers: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A handler giving ``answers`` in turn (an exception is raised), and the requests seen."""
    queue = list(answers)
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handle, seen


def client(handler: Handler, **options: Any) -> Sandcastle:
    http = httpx.Client(base_url="http://sc.test", transport=httpx.MockTransport(handler))
    return Sandcastle("http://sc.test", "sc_key", http_client=http, **options)


def envelope(
    status: int, type_: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> httpx.Response:
    body = {"code": status, "type": type_, "detail": detail, **extra}
    return httpx.Response(status, json=body, headers=headers)


def test_an_error_answer_is_the_exception_of_its_type_with_the_servers_detail() -> None:
    handler, _ = scripted(envelope(403, "usage_limit_exceeded_error", "out of credits"))
    with client(handler) as c, pytest.raises(errors.UsageLimitExceededError) as caught:
        c.orgs.list()
    assert (caught.value.status, caught.value.detail) == (403, "out of credits")
    assert isinstance(caught.value, errors.ForbiddenError)


def test_a_validation_error_names_the_field_in_either_of_the_servers_shapes() -> None:
    errs = [{"loc": ["body", "timeout_ms"], "msg": "too big", "type": "less_than"}]
    handler, _ = scripted(
        envelope(422, "validation_error", "Invalid request", errors=errs),
        httpx.Response(422, json={"message": "Invalid request", "errors": [
            {"field": "code", "error": "required"}]}),
    )  # fmt: skip
    with client(handler) as c:
        with pytest.raises(errors.ValidationError, match=r"body\.timeout_ms: too big"):
            c.orgs.list()
        with pytest.raises(errors.ValidationError, match="code: required") as caught:
            c.orgs.list()
    assert caught.value.errors == [{"field": "code", "error": "required"}]


def test_a_429_is_retried_after_the_servers_advice(slept: list[float]) -> None:
    handler, seen = scripted(
        httpx.Response(429, json={"code": 429, "type": "e2b_rate_limit_error", "detail": "slow"},
                       headers={"Retry-After": "2"}),
        httpx.Response(200, json={"items": []}),
    )  # fmt: skip
    with client(handler) as c:
        assert c.orgs.list() == []
    assert slept == [2.0] and len(seen) == 2


def test_retries_stop_at_the_limit_with_the_last_answer(slept: list[float]) -> None:
    answers = [envelope(429, "org_sandbox_capacity_exceeded_error", "full") for _ in range(3)]
    handler, seen = scripted(*answers)
    with client(handler, max_retries=2) as c, pytest.raises(errors.SandboxCapacityExceededError):
        c.orgs.list()
    assert len(seen) == 3 and len(slept) == 2


def test_a_refused_connection_is_retried_for_any_method(slept: list[float]) -> None:
    handler, seen = scripted(httpx.ConnectError("refused"), httpx.Response(201, json=SANDBOX))
    with client(handler) as c:
        assert Sandbox.create(client=c).id == "sb_1"
    assert [r.method for r in seen] == ["POST", "POST"]


def test_a_connection_dropped_mid_request_is_retried_only_when_repeating_is_harmless(
    slept: list[float],
) -> None:
    handler, seen = scripted(httpx.ReadError("reset"), httpx.Response(200, json=SANDBOX))
    with client(handler) as c:
        assert Sandbox.connect("sb_1", client=c).id == "sb_1"
    handler, seen = scripted(httpx.ReadError("reset"))
    with client(handler) as c, pytest.raises(errors.TransportError):
        Sandbox.create(client=c)
    assert len(seen) == 1  # a POST that may have created a sandbox is not sent again


def test_a_streamed_upload_is_not_sent_twice(slept: list[float]) -> None:
    handler, seen = scripted(envelope(429, "e2b_rate_limit_error", "slow"))
    with client(handler) as c:
        sandbox = Sandbox(SandboxInfo.model_validate(SANDBOX), c, owns_client=False)
        with pytest.raises(errors.RateLimitError):
            sandbox.files.write("/a", b"x" * 10, progress=lambda done, total: None)
    assert len(seen) == 1 and slept == []


def test_a_list_follows_the_cursor_page_by_page() -> None:
    pages = {
        None: {"items": [SANDBOX], "next_cursor": "c1"},
        "c1": {"items": [{**SANDBOX, "id": "sb_2"}], "next_cursor": None},
    }

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.params["status"] == "running"
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    with client(handle) as c:
        assert [s.id for s in Sandbox.list(client=c, status="running")] == ["sb_1", "sb_2"]


def test_the_url_and_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDCASTLE_URL", "http://from-env.test/")
    monkeypatch.setenv("SANDCASTLE_API_KEY", "sc_env")
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": []})

    http = httpx.Client(base_url="http://from-env.test", transport=httpx.MockTransport(handle))
    with Sandcastle(http_client=http) as c:
        assert c.url == "http://from-env.test"
        c.orgs.list()
    assert seen[0].headers["Authorization"] == "Bearer sc_env"


def test_the_asynchronous_face_retries_and_translates_the_same_way(slept: list[float]) -> None:
    handler, seen = scripted(
        envelope(429, "e2b_rate_limit_error", "slow", headers={"Retry-After": "1"}),
        envelope(404, "not_found_error", "no sandbox sb_9"),
    )

    async def scenario() -> None:
        http = httpx.AsyncClient(base_url="http://sc.test", transport=httpx.MockTransport(handler))
        async with AsyncSandcastle("http://sc.test", "sc_key", http_client=http) as c:
            with pytest.raises(errors.NotFoundError, match="no sandbox sb_9"):
                await c.sandboxes.connect("sb_9")

    asyncio.run(scenario())
    assert len(seen) == 2 and seen[0].headers["Authorization"] == "Bearer sc_key"
