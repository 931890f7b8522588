"""The composition root: every service of the control plane, built once, in dependency order.

Each collaborator is a constructor argument, so the graph reads top to bottom and has no
cycle. Where a lower part must tell a higher one something — a sandbox ended, so its runs are
settled and its memory image deleted — the lower part is given listeners here (``states.py``)
instead of a reference to the service above it. The server builds this in ``create_app``
(which benches and tests start too); a test that needs the services at another clock builds
them directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from sandcastle.config import Settings
from sandcastle.domain.clock import Clock, utcnow
from sandcastle.domain.metering import Prices
from sandcastle.runtime.base import Runtime
from sandcastle.services.accounting import AccountingService
from sandcastle.services.active_runs import ActiveRuns
from sandcastle.services.activity import ActivityTracker
from sandcastle.services.admission import Admission
from sandcastle.services.agent_api import AgentApiService
from sandcastle.services.artifacts import ArtifactService
from sandcastle.services.bootstrap import ensure_defaults
from sandcastle.services.contexts import ContextService
from sandcastle.services.executions import ExecutionService
from sandcastle.services.files import FilesService
from sandcastle.services.hibernation import Hibernation
from sandcastle.services.images import MemoryImages
from sandcastle.services.members import MemberService
from sandcastle.services.oplocks import OperationLocks
from sandcastle.services.org_sandboxes import OrgSandboxes
from sandcastle.services.pool import WarmPoolService
from sandcastle.services.principals import PrincipalCache
from sandcastle.services.processes import ProcessService
from sandcastle.services.provisioning import Provisioning
from sandcastle.services.reconciler import Reconciler
from sandcastle.services.run_dispatcher import RunDispatcher
from sandcastle.services.run_settlement import RunSettlement
from sandcastle.services.runs import RunService
from sandcastle.services.sandboxes import SandboxService
from sandcastle.services.snapshots import SnapshotService
from sandcastle.services.states import SandboxStates
from sandcastle.services.template_builds import TemplateBuildService
from sandcastle.services.templates import TemplateService
from sandcastle.services.tenancy import TenancyService
from sandcastle.store.contexts import ContextRepository
from sandcastle.store.db import Database
from sandcastle.store.ledger import LedgerStore
from sandcastle.store.org_listing import OrgSandboxListing
from sandcastle.store.runs import RunRepository
from sandcastle.store.sandboxes import SandboxRepository
from sandcastle.store.snapshots import SnapshotRepository
from sandcastle.store.tenancy import TenancyStore

log = logging.getLogger("sandcastle.server")


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: Database
    #: Orgs, members and keys: what authenticates a request and sets up the first org.
    tenancy_store: TenancyStore
    #: The principals of recently presented keys (``services/principals.py``).
    principals: PrincipalCache
    runtime: Runtime
    sandboxes: SandboxService
    reconciler: Reconciler
    executions: ExecutionService
    contexts: ContextService
    pool: WarmPoolService
    files: FilesService
    processes: ProcessService
    activity: ActivityTracker
    agent_api: AgentApiService
    runs: RunService
    artifacts: ArtifactService
    run_dispatcher: RunDispatcher
    tenancy: TenancyService
    members: MemberService
    accounting: AccountingService
    org_sandboxes: OrgSandboxes
    snapshots: SnapshotService
    templates: TemplateService
    template_builds: TemplateBuildService
    #: Why ``runtime`` was chosen (``registry.select_runtime``), if the caller said.
    runtime_reason: str | None = None

    async def start(self, on_admin_key: Callable[[str], None] | None = None) -> None:
        """Before serving: the schema, the default org and key, the sandboxes and runs a
        previous process left."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        await self.db.migrate()
        key = await ensure_defaults(
            self.tenancy_store,
            self.settings.admin_key_path,
            initial_credits=self.settings.initial_org_credits,
        )
        if key is not None and on_admin_key is not None:
            on_admin_key(key)
        await self.reconciler.adopt_all()
        await self.runs.recover()
        await self.template_builds.recover()

    def loops(self) -> list[Coroutine[Any, Any, None]]:
        """The background work of a serving process, each running until cancelled."""
        return [
            self.reconciler.run_forever(),
            self.accounting.run_forever(),
            self.pool.run_forever(),
            self.run_dispatcher.run_forever(),
            self.runs.maintain_forever(),
            self.templates.collect_forever(self.settings.template_collect_interval_s),
        ]

    @contextlib.asynccontextmanager
    async def running(
        self, on_admin_key: Callable[[str], None] | None = None
    ) -> AsyncIterator[None]:
        """Started, with the background loops running; everything closed on exit."""
        await self.start(on_admin_key)
        if self.runtime_reason:
            log.info("runtime: %s (%s)", self.runtime.name, self.runtime_reason)
        else:
            log.info("runtime: %s", self.runtime.name)
        tasks = [asyncio.create_task(loop) for loop in self.loops()]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.template_builds.aclose()
            await self.runtime.aclose()
            await self.db.aclose()


def build_services(
    settings: Settings,
    db: Database,
    runtime: Runtime,
    *,
    clock: Clock = utcnow,
    runtime_reason: str | None = None,
) -> Services:
    """Every service, each given what it uses; nothing starts until :meth:`Services.running`."""
    sandbox_records = SandboxRepository(db)
    contexts_store = ContextRepository(db)
    run_records = RunRepository(db)
    snapshot_records = SnapshotRepository(db)
    locks = OperationLocks()
    active_runs = ActiveRuns()
    tenancy_store = TenancyStore(db)
    images = MemoryImages(settings, sandbox_records, runtime)
    settlement = RunSettlement(settings, run_records, sandbox_records, active_runs, clock)
    states = SandboxStates(
        sandbox_records,
        runtime,
        locks,
        Prices.from_settings(settings),
        clock,
        ended=(images.on_sandbox_ended, settlement.on_sandbox_ended),
    )
    admission = Admission(settings, tenancy_store)
    provisioning = Provisioning(settings, sandbox_records, runtime, states, admission, clock)
    hibernation = Hibernation(
        settings, sandbox_records, runtime, states, provisioning, admission, images, locks, clock
    )
    pool = WarmPoolService(settings, sandbox_records, runtime, provisioning, states)
    sandboxes = SandboxService(
        settings,
        sandbox_records,
        runtime,
        provisioning,
        states,
        admission,
        hibernation,
        pool,
        clock,
    )
    tenancy = TenancyService(settings, tenancy_store, clock=clock)
    accounting = AccountingService(settings, LedgerStore(db), tenancy, sandboxes, clock=clock)
    contexts = ContextService(contexts_store, sandboxes)
    executions = ExecutionService(sandboxes, contexts)
    files = FilesService(sandboxes)
    artifacts = ArtifactService(settings, run_records, sandboxes)
    dispatcher = RunDispatcher(
        settings,
        run_records,
        active_runs,
        sandbox_records,
        sandboxes,
        contexts,
        executions,
        artifacts,
        clock,
    )
    activity = ActivityTracker()
    return Services(
        settings=settings,
        db=db,
        tenancy_store=tenancy_store,
        principals=PrincipalCache(settings.principal_cache_s),
        runtime=runtime,
        runtime_reason=runtime_reason,
        sandboxes=sandboxes,
        reconciler=Reconciler(settings, sandbox_records, runtime, states, hibernation, clock),
        executions=executions,
        contexts=contexts,
        pool=pool,
        files=files,
        processes=ProcessService(sandboxes),
        activity=activity,
        agent_api=AgentApiService(sandboxes, executions, files, activity),
        runs=RunService(
            settings, run_records, sandboxes, contexts, artifacts, active_runs, settlement, clock
        ),
        artifacts=artifacts,
        run_dispatcher=dispatcher,
        tenancy=tenancy,
        members=MemberService(settings, tenancy_store, tenancy, clock=clock),
        accounting=accounting,
        org_sandboxes=OrgSandboxes(OrgSandboxListing(db), tenancy, accounting.prices, clock),
        snapshots=SnapshotService(
            settings,
            snapshot_records,
            sandbox_records,
            contexts_store,
            sandboxes,
            provisioning,
            images,
            locks,
            runtime,
            clock,
        ),
        templates=TemplateService(settings, snapshot_records, sandbox_records),
        template_builds=TemplateBuildService(settings, clock),
    )
