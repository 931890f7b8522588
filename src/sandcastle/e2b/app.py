"""The three ASGI applications of E2B's surface and the routing in front of them.

Each is its own FastAPI application so its errors take E2B's shape (``errors.install``) while
our own API keeps its envelope; all of them share the server's services and rate limiter.
"""

from __future__ import annotations

from e2b.envd.filesystem.filesystem_connect import FilesystemASGIApplication
from e2b.envd.process.process_connect import ProcessASGIApplication
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from sandcastle.api.bounded import BodyLimitMiddleware
from sandcastle.api.ratelimit import RateLimiter
from sandcastle.e2b import control, envd_http, errors, interpreter
from sandcastle.e2b.filesystem import Filesystem
from sandcastle.e2b.process import Process
from sandcastle.wiring import Services


def _app(services: Services, ratelimit: RateLimiter, title: str) -> FastAPI:
    # No document of their own: docs/E2B.md lists these routes, and E2B documents them.
    app = FastAPI(title=title, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.services = services
    app.state.ratelimit = ratelimit
    errors.install(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=services.settings.max_body_bytes)
    return app


class EnvdApp:
    """envd's HTTP routes and its two Connect services, by path."""

    def __init__(self, http: ASGIApp, rpc: dict[str, ASGIApp]) -> None:
        self.http = http
        self.rpc = rpc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        for prefix, app in self.rpc.items():
            if scope["path"].startswith(prefix):
                await app(scope, receive, send)
                return
        await self.http(scope, receive, send)


def surfaces(services: Services, ratelimit: RateLimiter) -> dict[str, ASGIApp]:
    """The applications :class:`~sandcastle.e2b.routing.E2BRouting` sends E2B's calls to."""
    control_app = _app(services, ratelimit, "E2B control plane")
    control_app.include_router(control.router)
    envd_http_app = _app(services, ratelimit, "E2B envd")
    envd_http_app.include_router(envd_http.router)
    read_max = services.settings.max_body_bytes
    envd = EnvdApp(
        envd_http_app,
        {
            "/filesystem.Filesystem/": FilesystemASGIApplication(
                Filesystem(services, ratelimit), read_max_bytes=read_max
            ),
            "/process.Process/": ProcessASGIApplication(
                Process(services, ratelimit), read_max_bytes=read_max
            ),
        },
    )
    interpreter_app = _app(services, ratelimit, "E2B code interpreter")
    interpreter_app.state.default_contexts = interpreter.DefaultContexts()
    interpreter_app.include_router(interpreter.router)
    return {"control": control_app, "envd": envd, "interpreter": interpreter_app}
