"""Which requests are Leap0's: by path on the control plane, by host and path on a sandbox's
own host.

- ``/v1/sandbox`` and ``/v1/sandbox/…`` (singular; ours are ``/v1/sandboxes…``) go to Leap0's
  control plane.
- On ``{id}.{sandbox_domain}`` (``sb-…``, the form Leap0 is given, or ``sb_…``),
  ``/contexts…`` and ``/healthz`` go to Leap0's sandbox-host application, as
  ``/sandboxes/{id}/…``. Everything else on that host (``/``, ``/execute``, the files of
  ``sandbox-agent-api.txt``) stays the agent API's, which ``api.hostrouting`` routes.
- Anything else is our own API.

A plain ASGI middleware (not ``BaseHTTPMiddleware``), so streamed bodies pass through untouched.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from sandcastle.api.hostrouting import host_of, label_to_sandbox_id
from sandcastle.leap0.interpreter import HOST_PATHS

_CONTROL_PATH = re.compile(r"^/v1/sandbox(?:/|$)")


def is_host_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in HOST_PATHS)


class Leap0Routing:
    def __init__(self, app: ASGIApp, *, control: ASGIApp, sandbox: ASGIApp, domain: str) -> None:
        self.app = app
        self.control = control
        self.sandbox = sandbox
        self.suffix = "." + domain.strip(".").lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = host_of(scope)
        if host is not None and host.endswith(self.suffix):
            label = host[: -len(self.suffix)]
            sandbox_id = label_to_sandbox_id(label) if "." not in label else None
            if sandbox_id is not None and is_host_path(scope["path"]):
                # The label as the client spelled it, so errors name the sandbox that way.
                await self.sandbox(_under(scope, f"/sandboxes/{label}"), receive, send)
                return
            await self.app(scope, receive, send)
        elif _CONTROL_PATH.match(scope["path"]):
            await self.control(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _under(scope: Scope, prefix: str) -> Scope:
    raw_path = scope.get("raw_path") or scope["path"].encode()
    return {**scope, "path": prefix + scope["path"], "raw_path": prefix.encode() + raw_path}
