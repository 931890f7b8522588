"""Which of E2B's surfaces a request is for, by its headers, its host or its path.

E2B's clients reach everything through one origin when pointed at it with ``E2B_API_URL`` and
``E2B_SANDBOX_URL``: control-plane calls (``/sandboxes``, ``/v2/sandboxes``) carry an API key,
and every call to a sandbox carries ``E2b-Sandbox-Id`` and ``E2b-Sandbox-Port`` (49983 for the
daemon, 49999 for the code interpreter). Behind a TLS proxy with ``E2B_DOMAIN``, sandbox calls
come as ``Host: {port}-{sandboxID}.{domain}`` instead; that form is turned into the header form
here, so everything after this reads the headers alone. Anything else is our own API.

A plain ASGI middleware (not ``BaseHTTPMiddleware``), so streamed bodies pass through untouched.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from sandcastle.api.hostrouting import host_of, label_to_sandbox_id
from sandcastle.e2b.access import (
    ENVD_PORT,
    INTERPRETER_PORT,
    SANDBOX_ID_HEADER,
    SANDBOX_PORT_HEADER,
)
from sandcastle.e2b.errors import error_response

_CONTROL_PATH = re.compile(r"^/(?:v2/)?sandboxes(?:/|$)")
_PORT_LABEL = re.compile(r"^(\d{1,5})-(.+)$")


def sandbox_host(host: str | None, suffix: str) -> tuple[str, str] | None:
    """``(sandbox id, port)`` of a ``{port}-{sandboxID}.{domain}`` host, else None."""
    if host is None or not host.endswith(suffix):
        return None
    match = _PORT_LABEL.match(host[: -len(suffix)])
    if match is None:
        return None
    sandbox_id = label_to_sandbox_id(match.group(2))
    return None if sandbox_id is None else (sandbox_id, match.group(1))


class E2BRouting:
    def __init__(
        self,
        app: ASGIApp,
        *,
        control: ASGIApp,
        envd: ASGIApp,
        interpreter: ASGIApp,
        domain: str,
    ) -> None:
        self.app = app
        self.control = control
        self.envd = envd
        self.interpreter = interpreter
        self.suffix = "." + domain.strip(".").lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        by_host = sandbox_host(host_of(scope), self.suffix)
        if by_host is not None:
            scope = _with_sandbox_headers(scope, *by_host)
        port = _sandbox_port(scope)
        if port is None:
            target = self.control if _CONTROL_PATH.match(scope["path"]) else self.app
        elif port == str(ENVD_PORT):
            target = self.envd
        elif port == str(INTERPRETER_PORT):
            target = self.interpreter
        else:
            # E2B's proxy answers a port nothing listens on the same way.
            response = error_response(502, f"port {port} is not open in the sandbox")
            await response(scope, receive, send)
            return
        await target(scope, receive, send)


def _sandbox_port(scope: Scope) -> str | None:
    """The port a sandbox call is for (the daemon's by default), or None for other calls."""
    sandbox_id = port = None
    for key, value in scope.get("headers", ()):
        if key == SANDBOX_ID_HEADER.encode():
            sandbox_id = value
        elif key == SANDBOX_PORT_HEADER.encode():
            port = bytes(value).decode("latin-1").strip()
    if sandbox_id is None:
        return None
    return port or str(ENVD_PORT)


def _with_sandbox_headers(scope: Scope, sandbox_id: str, port: str) -> Scope:
    names = (SANDBOX_ID_HEADER.encode(), SANDBOX_PORT_HEADER.encode())
    headers = [(k, v) for k, v in scope.get("headers", ()) if k not in names]
    headers += [(names[0], sandbox_id.encode()), (names[1], port.encode())]
    return {**scope, "headers": headers}
