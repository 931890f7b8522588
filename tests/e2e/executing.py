"""Helpers for end-to-end tests that execute code: plain, streamed (NDJSON or SSE), contexts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx


def run(api: httpx.Client, sandbox_id: object, **body: object) -> dict[str, Any]:
    """``POST …/execute``; the response must be 200."""
    response = api.post(f"/v1/sandboxes/{sandbox_id}/execute", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def new_context(api: httpx.Client, sandbox_id: object, **body: object) -> dict[str, Any]:
    """``POST …/contexts``; the response must be 201."""
    response = api.post(f"/v1/sandboxes/{sandbox_id}/contexts", json=body)
    assert response.status_code == 201, response.text
    context: dict[str, Any] = response.json()
    return context


def ndjson_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Events of an NDJSON stream as they arrive."""
    for line in response.iter_lines():
        if line:
            yield json.loads(line)


def sse_frames(response: httpx.Response) -> Iterator[dict[str, str]]:
    """Frames of an SSE stream as they arrive: ``{"event", "data"}``, or ``{"comment"}``."""
    frame: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if frame:
                yield frame
            frame = {}
        elif line.startswith(":"):
            frame["comment"] = line[1:].strip()
        else:
            name, _, value = line.partition(":")
            frame[name] = value[1:] if value.startswith(" ") else value
    if frame:
        yield frame


def stream(
    api: httpx.Client, sandbox_id: object, *, params: dict[str, Any] | None = None, **body: object
) -> list[dict[str, Any]]:
    """``POST …/execute/stream`` read to its end; the NDJSON events."""
    url = f"/v1/sandboxes/{sandbox_id}/execute/stream"
    with api.stream("POST", url, json=body, params=params) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return list(ndjson_events(response))


def without_keepalives(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] != "keepalive"]
