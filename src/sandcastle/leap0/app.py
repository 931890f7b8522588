"""The two ASGI applications of Leap0's surface: its control plane and its sandbox host.

Each is its own FastAPI application so its errors take Leap0's shape (``errors.install``) while
our own API keeps its envelope; both share the server's services and rate limiter. Neither has
an OpenAPI document: ``docs/LEAP0.md`` lists these routes, and Leap0 documents them.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp

from sandcastle.api.bounded import BodyLimitMiddleware
from sandcastle.api.ratelimit import RateLimiter
from sandcastle.leap0 import control, errors, filesystem, interpreter
from sandcastle.wiring import Services


def _app(services: Services, ratelimit: RateLimiter, title: str) -> FastAPI:
    # redirect_slashes off: Leap0's SDK follows no redirect, so a path is served as it comes
    # or not at all.
    app = FastAPI(
        title=title, openapi_url=None, docs_url=None, redoc_url=None, redirect_slashes=False
    )
    app.state.services = services
    app.state.ratelimit = ratelimit
    errors.install(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=services.settings.max_body_bytes)
    return app


def surfaces(services: Services, ratelimit: RateLimiter) -> dict[str, ASGIApp]:
    """The applications :class:`~sandcastle.leap0.routing.Leap0Routing` sends Leap0's calls to."""
    control_app = _app(services, ratelimit, "Leap0 control plane")
    control_app.include_router(control.router)
    control_app.include_router(filesystem.router)
    sandbox_app = _app(services, ratelimit, "Leap0 sandbox host")
    sandbox_app.include_router(interpreter.router)
    return {"control": control_app, "sandbox": sandbox_app}
