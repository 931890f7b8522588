"""``/v1/sandboxes``: create, get, list, destroy (``sandbox-get.txt``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from sandcastle.api.deps import PrincipalDep, ServicesDep
from sandcastle.api.schemas import SandboxCreateBody, SandboxListOut, SandboxOut, sandbox_out
from sandcastle.domain.sandbox import TimeoutAction
from sandcastle.services.sandboxes import CreateSandbox

router = APIRouter(prefix="/v1/sandboxes", tags=["sandboxes"])


@router.post("", status_code=201, response_model=SandboxOut, response_model_exclude_unset=True)
async def create_sandbox(
    body: SandboxCreateBody, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Create a sandbox; answers once its agent is connected (``status: running``)."""
    sandbox = await services.sandboxes.create(
        principal,
        CreateSandbox(
            template=body.template,
            vcpus=body.vcpus,
            memory_mb=body.memory_mb,
            disk_mb=body.disk_mb,
            metadata=body.metadata,
            timeout_ms=body.timeout_ms,
            timeout_action=TimeoutAction(body.timeout_action),
            cwd=body.cwd,
        ),
    )
    return sandbox_out(sandbox)


@router.get("", response_model=SandboxListOut, response_model_exclude_unset=True)
async def list_sandboxes(
    principal: PrincipalDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    """The caller's sandboxes, newest first; ``next_cursor`` is null on the last page."""
    sandboxes, next_cursor = await services.sandboxes.list(principal, limit=limit, cursor=cursor)
    return {"items": [sandbox_out(s) for s in sandboxes], "next_cursor": next_cursor}


@router.get("/{sandbox_id}", response_model=SandboxOut, response_model_exclude_unset=True)
async def get_sandbox(
    sandbox_id: str, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Get sandbox details."""
    return sandbox_out(await services.sandboxes.get(principal, sandbox_id))


@router.delete("/{sandbox_id}", response_model=SandboxOut, response_model_exclude_unset=True)
async def destroy_sandbox(
    sandbox_id: str, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Destroy the sandbox's processes and files; the record stays, ``destroyed``."""
    return sandbox_out(await services.sandboxes.destroy(principal, sandbox_id))
