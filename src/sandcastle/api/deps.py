"""Dependencies: the services built in ``create_app``, and the authenticated principal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sandcastle.api.ratelimit import RateLimiter
from sandcastle.config import Settings
from sandcastle.runtime.base import Runtime
from sandcastle.services.accounting import AccountingService
from sandcastle.services.activity import ActivityTracker
from sandcastle.services.agent_api import AgentApiService
from sandcastle.services.artifacts import ArtifactService
from sandcastle.services.auth import Principal, authenticate
from sandcastle.services.contexts import ContextService
from sandcastle.services.executions import ExecutionService
from sandcastle.services.files import FilesService
from sandcastle.services.members import MemberService
from sandcastle.services.org_sandboxes import OrgSandboxes
from sandcastle.services.pool import WarmPoolService
from sandcastle.services.run_dispatcher import RunDispatcher
from sandcastle.services.runs import RunService
from sandcastle.services.sandboxes import SandboxService
from sandcastle.services.snapshots import SnapshotService
from sandcastle.services.templates import TemplateService
from sandcastle.services.tenancy import TenancyService
from sandcastle.store.db import Database


@dataclass
class Services:
    settings: Settings
    db: Database
    runtime: Runtime
    sandboxes: SandboxService
    executions: ExecutionService
    contexts: ContextService
    pool: WarmPoolService
    files: FilesService
    activity: ActivityTracker
    agent_api: AgentApiService
    runs: RunService
    artifacts: ArtifactService
    run_dispatcher: RunDispatcher
    tenancy: TenancyService
    members: MemberService
    accounting: AccountingService
    org_sandboxes: OrgSandboxes
    ratelimit: RateLimiter
    snapshots: SnapshotService
    templates: TemplateService
    #: Why ``runtime`` was chosen (``registry.select_runtime``), if the caller said.
    runtime_reason: str | None = None


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


_bearer = HTTPBearer(auto_error=False, description="API key passed as Bearer token")


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    services = get_services(request)
    principal = await authenticate(services.db, credentials.credentials if credentials else None)
    settings = services.settings
    services.ratelimit.check(
        principal.key_id,
        settings.rate_limit_per_s
        if principal.rate_limit_per_s is None
        else principal.rate_limit_per_s,
        principal.rate_limit_burst or settings.rate_limit_burst,
    )
    return principal


ServicesDep = Annotated[Services, Depends(get_services)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
