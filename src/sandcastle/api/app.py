"""``create_app``: the HTTP application around the services ``wiring.py`` builds."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from sandcastle import __version__
from sandcastle.api import errors, openapi
from sandcastle.api.activity import ActivityMiddleware
from sandcastle.api.bounded import BodyLimitMiddleware
from sandcastle.api.hostrouting import HostRoutingMiddleware
from sandcastle.api.ratelimit import RateLimiter
from sandcastle.api.routes import (
    agent_api,
    artifacts,
    code_runs,
    contexts,
    execute,
    files,
    health,
    org_sandboxes,
    orgs,
    processes,
    sandboxes,
    snapshots,
    template_builds,
    templates,
)
from sandcastle.api.schemas import ExecuteOut
from sandcastle.config import Settings
from sandcastle.domain.clock import utcnow
from sandcastle.e2b import app as e2b_app
from sandcastle.e2b.routing import E2BRouting
from sandcastle.leap0 import app as leap0_app
from sandcastle.leap0.routing import Leap0Routing
from sandcastle.runtime.base import Runtime
from sandcastle.store.db import Database
from sandcastle.wiring import build_services

log = logging.getLogger("sandcastle.server")


def create_app(
    settings: Settings,
    db: Database,
    runtime: Runtime,
    *,
    on_admin_key: Callable[[str], None] | None = None,
    clock: Callable[[], datetime] = utcnow,
    runtime_reason: str | None = None,
) -> FastAPI:
    """Build the app around injected parts; nothing starts until the lifespan runs.

    ``clock`` is the wall clock of sandbox lifecycles and metering (tests inject a fake one).
    ``runtime_reason`` says why ``runtime`` was chosen (``registry.select_runtime``); it is
    logged at start-up and reported by ``/v1/health``.
    """
    services = build_services(settings, db, runtime, clock=clock, runtime_reason=runtime_reason)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with services.running(on_admin_key):
            yield

    # FastAPIOffline: /docs and /redoc with their scripts served from the package, not a CDN, so
    # they work on a host without internet.
    app = FastAPIOffline(
        title="Sandcastle",
        version=__version__,
        description="Self-hosted isolated sandboxes with stateful REPL contexts.",
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.ratelimit = RateLimiter()
    errors.install(app)
    openapi.install(app, settings, extra=[agent_api.AgentExecuteOut, ExecuteOut])
    app.include_router(health.router)
    app.include_router(sandboxes.router)
    app.include_router(snapshots.router)
    app.include_router(templates.router)
    app.include_router(template_builds.router)
    app.include_router(execute.router)
    app.include_router(contexts.router)
    app.include_router(files.router)
    app.include_router(processes.router)
    app.include_router(agent_api.router)
    app.include_router(code_runs.router)
    app.include_router(artifacts.router)
    app.include_router(orgs.router)
    app.include_router(org_sandboxes.router)
    # The last added runs first: sandbox hosts are rewritten before activity is recorded. The
    # body limit is innermost: it reads the endpoint the router sets in the scope, and host
    # routing hands the app a new scope.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ActivityMiddleware, tracker=services.activity)
    app.add_middleware(HostRoutingMiddleware, domain=settings.sandbox_domain)
    # Leap0's calls (docs/LEAP0.md), before host routing: its sandbox host's /contexts and
    # /healthz are Leap0's, the rest of that host stays the agent API's.
    app.add_middleware(
        Leap0Routing,
        domain=settings.sandbox_domain,
        **leap0_app.surfaces(services, app.state.ratelimit),
    )
    # Outermost: E2B's calls (docs/E2B.md) never reach our own API's routes or middleware.
    app.add_middleware(
        E2BRouting,
        domain=settings.sandbox_domain,
        **e2b_app.surfaces(services, app.state.ratelimit),
    )
    return app
