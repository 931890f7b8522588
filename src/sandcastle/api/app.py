"""``create_app``: the FastAPI application, its lifespan, and the background reconciler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from fastapi import FastAPI

from sandcastle import __version__
from sandcastle.api import errors
from sandcastle.api.activity import ActivityMiddleware
from sandcastle.api.bounded import BodyLimitMiddleware
from sandcastle.api.deps import Services
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
    sandboxes,
    snapshots,
    templates,
)
from sandcastle.config import Settings
from sandcastle.domain.sandbox import Sandbox
from sandcastle.errors import SandcastleError
from sandcastle.runtime.base import Runtime
from sandcastle.runtime.templates.builder import load_template
from sandcastle.services.accounting import AccountingService
from sandcastle.services.activity import ActivityTracker
from sandcastle.services.admission import Admission
from sandcastle.services.agent_api import AgentApiService
from sandcastle.services.artifacts import ArtifactService
from sandcastle.services.bootstrap import ensure_defaults
from sandcastle.services.contexts import ContextService
from sandcastle.services.executions import ExecutionService
from sandcastle.services.files import FilesService
from sandcastle.services.members import MemberService
from sandcastle.services.org_sandboxes import OrgSandboxes
from sandcastle.services.pool import WarmPoolService
from sandcastle.services.run_dispatcher import RunDispatcher
from sandcastle.services.runs import RunService
from sandcastle.services.sandboxes import SandboxService, utcnow
from sandcastle.services.snapshots import SnapshotService
from sandcastle.services.templates import TemplateService
from sandcastle.services.tenancy import TenancyService
from sandcastle.store.db import Database

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
    sandbox_service = SandboxService(settings, db, runtime, clock=clock)
    tenancy = TenancyService(settings, db, clock=clock)
    sandbox_service.admission = Admission(settings, db)
    accounting = AccountingService(settings, db, tenancy, sandbox_service, clock=clock)
    pool = WarmPoolService(settings, db, sandbox_service)
    sandbox_service.pool = pool
    context_service = ContextService(db, sandbox_service)
    executions = ExecutionService(sandbox_service, context_service)
    files_service = FilesService(sandbox_service)
    artifact_service = ArtifactService(settings, db, sandbox_service)
    dispatcher = RunDispatcher(
        settings, db, sandbox_service, context_service, executions, artifact_service, clock
    )
    runs = RunService(
        settings, db, sandbox_service, context_service, artifact_service, dispatcher, clock
    )
    snapshot_service = SnapshotService(settings, db, sandbox_service, clock=clock)
    sandbox_service.hibernation = snapshot_service

    async def on_ended(sandbox: Sandbox) -> None:
        await snapshot_service.on_sandbox_ended(sandbox)
        await runs.on_sandbox_ended(sandbox)

    sandbox_service.on_ended = on_ended
    activity = ActivityTracker()
    services = Services(
        settings=settings,
        db=db,
        runtime=runtime,
        runtime_reason=runtime_reason,
        sandboxes=sandbox_service,
        executions=executions,
        contexts=context_service,
        pool=pool,
        files=files_service,
        activity=activity,
        agent_api=AgentApiService(sandbox_service, executions, files_service, activity),
        runs=runs,
        artifacts=artifact_service,
        run_dispatcher=dispatcher,
        tenancy=tenancy,
        members=MemberService(settings, db, tenancy, clock=clock),
        accounting=accounting,
        org_sandboxes=OrgSandboxes(db, tenancy, accounting.prices, clock),
        ratelimit=RateLimiter(),
        snapshots=snapshot_service,
        templates=TemplateService(settings, db),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await db.migrate()
        key = await ensure_defaults(
            db, settings.admin_key_path, initial_credits=settings.initial_org_credits
        )
        if key is not None and on_admin_key is not None:
            on_admin_key(key)
        await sandbox_service.adopt_all()
        await runs.recover()
        if runtime_reason:
            log.info("runtime: %s (%s)", runtime.name, runtime_reason)
        else:
            log.info("runtime: %s", runtime.name)
        background = [
            asyncio.create_task(_reconcile_forever(sandbox_service, settings)),
            asyncio.create_task(accounting.run_forever()),
            asyncio.create_task(_prepare_then_pool(runtime, pool, settings)),
            asyncio.create_task(dispatcher.run_forever()),
            asyncio.create_task(runs.maintain_forever()),
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
    app.include_router(snapshots.router)
    app.include_router(templates.router)
    app.include_router(execute.router)
    app.include_router(contexts.router)
    app.include_router(files.router)
    app.include_router(agent_api.router)
    app.include_router(code_runs.router)
    app.include_router(artifacts.router)
    app.include_router(orgs.router)
    app.include_router(org_sandboxes.router)
    # The last added runs first: sandbox hosts are rewritten before activity is recorded. The
    # body limit is innermost: it reads the endpoint the router sets in the scope, and host
    # routing hands the app a new scope.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ActivityMiddleware, tracker=activity)
    app.add_middleware(HostRoutingMiddleware, domain=settings.sandbox_domain)
    return app


async def _reconcile_forever(service: SandboxService, settings: Settings) -> None:
    while True:
        await asyncio.sleep(settings.reconcile_interval_s)
        try:
            await service.reconcile()
        except Exception:  # one bad pass must not stop reconciliation
            log.exception("reconciliation failed")


async def _prepare_then_pool(runtime: Runtime, pool: WarmPoolService, settings: Settings) -> None:
    """Let the backend prepare the templates in use (gVisor: a memory image of a booted
    sandbox), then keep the warm pools filled, so pool entries start from it too."""
    names = {settings.default_template, *settings.warm_pool}
    for name in sorted(names):
        template = load_template(name, settings.resolved_templates_dir)
        if template is None:
            continue
        try:
            backend = runtime.backend(template.runtime)
        except SandcastleError as exc:
            log.warning("template %s: %s", name, exc)
            continue
        try:
            await backend.prepare_template(template.rootfs)
        except Exception:  # launches still work without it, only slower
            log.exception("could not prepare template %s for fast starts", name)
    try:
        await runtime.prune_template_images()
    except OSError:
        log.exception("could not delete old template images")
    await pool.run_forever()
