"""``create_app``: the FastAPI application, its lifespan, and the background reconciler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from sandcastle import __version__
from sandcastle.api import errors
from sandcastle.api.activity import ActivityMiddleware
from sandcastle.api.deps import Services
from sandcastle.api.hostrouting import HostRoutingMiddleware
from sandcastle.api.routes import agent_api, contexts, execute, files, health, sandboxes
from sandcastle.config import Settings
from sandcastle.runtime.base import Runtime
from sandcastle.services.activity import ActivityTracker
from sandcastle.services.agent_api import AgentApiService
from sandcastle.services.bootstrap import ensure_defaults
from sandcastle.services.contexts import ContextService
from sandcastle.services.executions import ExecutionService
from sandcastle.services.files import FilesService
from sandcastle.services.pool import WarmPoolService
from sandcastle.services.sandboxes import SandboxService
from sandcastle.store.db import Database

log = logging.getLogger("sandcastle.server")


def create_app(
    settings: Settings,
    db: Database,
    runtime: Runtime,
    *,
    on_admin_key: Callable[[str], None] | None = None,
) -> FastAPI:
    """Build the app around injected parts; nothing starts until the lifespan runs."""
    sandbox_service = SandboxService(settings, db, runtime)
    pool = WarmPoolService(settings, db, sandbox_service)
    sandbox_service.pool = pool
    context_service = ContextService(db, sandbox_service)
    executions = ExecutionService(sandbox_service, context_service)
    files_service = FilesService(sandbox_service)
    activity = ActivityTracker()
    services = Services(
        settings=settings,
        db=db,
        runtime=runtime,
        sandboxes=sandbox_service,
        executions=executions,
        contexts=context_service,
        pool=pool,
        files=files_service,
        activity=activity,
        agent_api=AgentApiService(sandbox_service, executions, files_service, activity),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await db.migrate()
        key = await ensure_defaults(db, settings.admin_key_path)
        if key is not None and on_admin_key is not None:
            on_admin_key(key)
        await sandbox_service.adopt_all()
        log.info("runtime backend: %s", runtime.name)
        background = [
            asyncio.create_task(_reconcile_forever(sandbox_service, settings)),
            asyncio.create_task(pool.run_forever()),
        ]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await runtime.aclose()
            await db.aclose()

    app = FastAPI(
        title="Sandcastle",
        version=__version__,
        description="Self-hosted isolated sandboxes with stateful REPL contexts.",
        lifespan=lifespan,
    )
    app.state.services = services
    errors.install(app)
    app.include_router(health.router)
    app.include_router(sandboxes.router)
    app.include_router(execute.router)
    app.include_router(contexts.router)
    app.include_router(files.router)
    app.include_router(agent_api.router)
    # The last added runs first: sandbox hosts are rewritten before activity is recorded.
    app.add_middleware(ActivityMiddleware, tracker=activity)
    app.add_middleware(HostRoutingMiddleware, domain=settings.sandbox_domain)
    return app


async def _reconcile_forever(service: SandboxService, settings: Settings) -> None:
    while True:
        await asyncio.sleep(settings.reconcile_interval_s)
        try:
            await service.reconcile()
        except Exception:  # noqa: BLE001 - one bad pass must not stop reconciliation
            log.exception("reconciliation failed")
