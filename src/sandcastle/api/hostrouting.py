"""Per-sandbox hosts: ``{id}.{sandbox_domain}`` serves that sandbox's agent API.

A request whose ``Host`` is ``sb-1a2b3c4d.sandbox.localhost`` (``sb_`` accepted too, since a
DNS label cannot hold ``_``; any port ignored) has its path rewritten from ``/…`` to
``/v1/sandboxes/sb_1a2b3c4d/agent/…`` before routing, so the document's paths (``/``,
``/execute``, ``/files/upload/-/*path``, ``/files/download/-/*path``) reach the same endpoints,
with the same authentication, as the path-style URLs. A sandbox host serves nothing else, but
for Leap0's ``/contexts`` and ``/healthz``, which ``sandcastle.leap0.routing`` takes first.
A host under the domain whose first label is not a sandbox id is answered 404 here.

A plain ASGI middleware (not ``BaseHTTPMiddleware``), so streamed bodies pass through untouched.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from sandcastle.domain import ids

AGENT_PREFIX = "/v1/sandboxes/{sandbox_id}/agent"


def host_of(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"host":
            host: str = bytes(value).decode("latin-1").strip().lower().rstrip(".")
            name, sep, port = host.rpartition(":")
            if sep and port.isdigit() and (":" not in name or name.endswith("]")):
                host = name
            return host.rstrip(".")
    return None


def label_to_sandbox_id(label: str) -> str | None:
    candidate = label.replace("-", "_", 1)
    return candidate if ids.is_sandbox_id(candidate) else None


class HostRoutingMiddleware:
    def __init__(self, app: ASGIApp, *, domain: str) -> None:
        self.app = app
        self.suffix = "." + domain.strip(".").lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = host_of(scope)
        if host is None or not host.endswith(self.suffix):
            await self.app(scope, receive, send)
            return
        label = host[: -len(self.suffix)]
        sandbox_id = label_to_sandbox_id(label) if "." not in label else None
        if sandbox_id is None:
            response = JSONResponse(
                {
                    "code": 404,
                    "detail": f"no sandbox at host {host}",
                    "type": "not_found_error",
                },
                status_code=404,
            )
            await response(scope, receive, send)
            return
        prefix = AGENT_PREFIX.format(sandbox_id=sandbox_id)
        path = scope["path"]
        raw_path = scope.get("raw_path") or path.encode()
        scope = dict(scope)
        scope["path"] = prefix + path
        scope["raw_path"] = prefix.encode() + raw_path
        await self.app(scope, receive, send)
