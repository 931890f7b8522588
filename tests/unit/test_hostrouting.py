"""``sandcastle.api.hostrouting`` and ``sandcastle.api.activity`` as plain ASGI middleware."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from sandcastle.api.activity import ActivityMiddleware
from sandcastle.api.hostrouting import HostRoutingMiddleware, host_of, label_to_sandbox_id
from sandcastle.services.activity import ActivityTracker


class Echo:
    """An app that answers with the path it was given (and a chosen status)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})


async def get(app: Any, url: str, host: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(url, headers={"Host": host})


@pytest.mark.parametrize(
    ("host", "url", "path"),
    [
        ("sb-1a2b3c4d.sandbox.localhost", "/", "/v1/sandboxes/sb_1a2b3c4d/agent/"),
        (
            "sb_1a2b3c4d.sandbox.localhost:8321",
            "/execute",
            "/v1/sandboxes/sb_1a2b3c4d/agent/execute",
        ),
        (
            "SB-1A2B3C4D.Sandbox.Localhost.",
            "/files/download/-/a%20b.txt",
            "/v1/sandboxes/sb_1a2b3c4d/agent/files/download/-/a b.txt",
        ),
        ("127.0.0.1:8321", "/v1/health", "/v1/health"),
        ("sandbox.localhost", "/", "/"),
        ("sb-1a2b3c4d.example.com", "/", "/"),
    ],
)
async def test_rewrites_only_sandbox_hosts(host: str, url: str, path: str) -> None:
    app = Echo()
    response = await get(HostRoutingMiddleware(app, domain="sandbox.localhost"), url, host)
    assert response.status_code == 200
    assert response.text == path
    scope = app.scopes[0]
    assert scope["raw_path"].decode().replace("%20", " ") == path


@pytest.mark.parametrize(
    "host",
    ["nosuch.sandbox.localhost", "sb-1234.sandbox.localhost", "a.sb-1a2b3c4d.sandbox.localhost"],
)
async def test_unknown_labels_under_the_domain_are_404(host: str) -> None:
    app = Echo()
    response = await get(HostRoutingMiddleware(app, domain="sandbox.localhost"), "/", host)
    assert response.status_code == 404
    assert response.json()["type"] == "not_found_error"
    assert app.scopes == []


def test_host_parsing() -> None:
    assert host_of({"headers": [(b"host", b"Example.COM:80")]}) == "example.com"
    assert host_of({"headers": [(b"host", b"[::1]:80")]}) == "[::1]"
    assert host_of({"headers": []}) is None
    assert label_to_sandbox_id("sb-0123abcd") == "sb_0123abcd"
    assert label_to_sandbox_id("sb-0123abcx") is None


async def test_activity_is_touched_by_successful_sandbox_requests_only() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    tracker = ActivityTracker(clock=lambda: now)
    started = now - timedelta(hours=1)

    async def touched_by(url: str, status: int = 200) -> bool:
        tracker._last.clear()
        await get(ActivityMiddleware(Echo(status), tracker=tracker), url, "test")
        return tracker.last("sb_1a2b3c4d", started) == now

    assert await touched_by("/v1/sandboxes/sb_1a2b3c4d/files")
    assert await touched_by("/v1/sandboxes/sb_1a2b3c4d/agent/execute")
    assert not await touched_by("/v1/sandboxes/sb_1a2b3c4d/agent/")  # the ping itself
    assert not await touched_by("/v1/sandboxes/sb_1a2b3c4d")  # the record, not the sandbox
    assert not await touched_by("/v1/sandboxes/sb_1a2b3c4d/files", status=404)


def test_activity_falls_back_to_the_start_and_forgets_the_oldest() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    tracker = ActivityTracker(clock=lambda: start - timedelta(days=1))
    tracker.touch("sb_1")
    assert tracker.last("sb_1", start) == start  # never before the start
    assert tracker.last("sb_2", start) == start
