"""``/v1/sandboxes``: the lifecycle of ``sandbox-get.txt``."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from sandcastle.api.deps import PrincipalDep, ServicesDep
from sandcastle.api.schemas import (
    FIELDS_PATTERN,
    SandboxCreateBody,
    SandboxListOut,
    SandboxOut,
    SnapshotOut,
    TimeoutBody,
    parse_fields,
    sandbox_out,
    snapshot_out,
)
from sandcastle.domain.sandbox import ListFilter, SandboxStatus, TimeoutAction
from sandcastle.errors import FieldError
from sandcastle.services.provisioning import CreateSandbox

router = APIRouter(prefix="/v1/sandboxes", tags=["sandboxes"])

FieldsQuery = Annotated[
    str | None,
    Query(
        description="Comma-separated field mask: id, status, config, template, metadata, "
        "started_at, timeout_ms, timeout_at, expires_at, timeout_action, created_at, cwd, "
        "snapshot_id, traffic_access_token.",
        # Documented here, enforced by parse_fields (with a message that names the unknown).
        json_schema_extra={"pattern": FIELDS_PATTERN},
    ),
]
_METADATA_KEY = re.compile(r"^metadata\[(.+)\]$")


def _statuses(raw: list[str]) -> list[str]:
    """``status=a&status=b,c`` → ``[a, b, c]``, each a known status."""
    known = {s.value for s in SandboxStatus}
    out = [part.strip() for item in raw for part in item.split(",") if part.strip()]
    unknown = sorted(set(out) - known)
    if unknown:
        raise FieldError(
            "status",
            f"unknown status {', '.join(unknown)}; use {', '.join(sorted(known))}",
            location="query",
        )
    return out


def _metadata_filter(request: Request) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        match = _METADATA_KEY.match(key)
        if match:
            found[match.group(1)] = value
    return found


@router.post("", status_code=201, response_model=SandboxOut)
async def create_sandbox(
    body: SandboxCreateBody, principal: PrincipalDep, services: ServicesDep
) -> JSONResponse:
    """Create a sandbox; answers once its agent is connected (``status: running``).

    A warm-pool sandbox is used when one fits (``warm_pool_checkout.hit``). With
    ``snapshot_id``, the sandbox is restored from that snapshot instead (docs/SNAPSHOTS.md).
    """
    request = CreateSandbox(
        template=body.template,
        vcpus=body.vcpus,
        memory_mb=body.memory_mb,
        disk_mb=body.disk_mb,
        metadata=body.metadata,
        timeout_ms=body.timeout_ms,
        timeout_action=TimeoutAction(body.timeout_action),
        cwd=body.cwd,
        internet=body.network.internet,
        project_id=body.project_id,
        workspace_id=body.workspace_id,
        sandbox_kind=body.sandbox_kind,
        auto_resume=body.auto_resume,
    )
    if body.snapshot_id is not None:
        sandbox = await services.snapshots.fork(principal, body.snapshot_id, request)
    else:
        sandbox = await services.sandboxes.create(principal, request)
    return JSONResponse(sandbox_out(sandbox), status_code=201)


@router.get("", response_model=SandboxListOut)
async def list_sandboxes(
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query()] = None,
    status: Annotated[list[str], Query(description="Repeatable or comma-separated.")] = [],  # noqa: B006 - FastAPI copies query defaults
    template: Annotated[str | None, Query()] = None,
    fields: FieldsQuery = None,
) -> JSONResponse:
    """The caller's sandboxes, newest first. Filter with ``status``, ``template`` and
    ``metadata[key]=value``; ``next_cursor`` is null on the last page."""
    mask = parse_fields(fields)
    where = ListFilter(
        statuses=_statuses(status), template=template, metadata=_metadata_filter(request)
    )
    sandboxes, next_cursor = await services.sandboxes.list(
        principal, limit=limit, cursor=cursor, where=where
    )
    return JSONResponse(
        {"items": [sandbox_out(s, mask) for s in sandboxes], "next_cursor": next_cursor}
    )


@router.get("/{sandbox_id}", response_model=SandboxOut)
async def get_sandbox(
    sandbox_id: str, principal: PrincipalDep, services: ServicesDep, fields: FieldsQuery = None
) -> JSONResponse:
    """Get sandbox details."""
    mask = parse_fields(fields)
    return JSONResponse(sandbox_out(await services.sandboxes.get(principal, sandbox_id), mask))


@router.delete("/{sandbox_id}", response_model=SandboxOut)
async def destroy_sandbox(
    sandbox_id: str, principal: PrincipalDep, services: ServicesDep
) -> JSONResponse:
    """Destroy the sandbox's processes and files; the record stays, ``destroyed``."""
    return JSONResponse(sandbox_out(await services.sandboxes.destroy(principal, sandbox_id)))


@router.post("/{sandbox_id}/pause", response_model=SandboxOut)
async def pause_sandbox(
    sandbox_id: str, principal: PrincipalDep, services: ServicesDep
) -> JSONResponse:
    """Freeze every process in place: memory stays, no CPU is used. ``running`` only."""
    return JSONResponse(sandbox_out(await services.sandboxes.pause(principal, sandbox_id)))


@router.post("/{sandbox_id}/hibernate", response_model=SandboxOut)
async def hibernate_sandbox(
    sandbox_id: str, principal: PrincipalDep, services: ServicesDep
) -> JSONResponse:
    """Save the memory of a running (or paused) sandbox and end its processes: ``paused``
    with ``snapshot_id`` until resumed. 409 while code is running in it; 422 on a backend
    without memory snapshots."""
    return JSONResponse(sandbox_out(await services.sandboxes.hibernate(principal, sandbox_id)))


@router.post("/{sandbox_id}/resume", response_model=SandboxOut)
async def resume_sandbox(
    sandbox_id: str, principal: PrincipalDep, services: ServicesDep
) -> JSONResponse:
    """Let a paused sandbox run again, its contexts as they were (a hibernated one is
    restored from its image)."""
    return JSONResponse(sandbox_out(await services.sandboxes.resume(principal, sandbox_id)))


@router.post("/{sandbox_id}/snapshots", status_code=201, response_model=SnapshotOut)
async def snapshot_sandbox(
    sandbox_id: str, principal: PrincipalDep, services: ServicesDep
) -> JSONResponse:
    """Save a running sandbox's memory and files as a snapshot; the sandbox runs on. 409 if
    it is not running or code is running in it; 422 on a backend without memory snapshots."""
    snapshot = await services.snapshots.create(principal, sandbox_id)
    return JSONResponse(snapshot_out(snapshot), status_code=201)


@router.post("/{sandbox_id}/timeout", response_model=SandboxOut)
async def set_sandbox_timeout(
    sandbox_id: str, body: TimeoutBody, principal: PrincipalDep, services: ServicesDep
) -> JSONResponse:
    """Set a new deadline ``timeout_ms`` from now (and optionally ``timeout_action``)."""
    action = TimeoutAction(body.timeout_action) if body.timeout_action else None
    sandbox = await services.sandboxes.set_timeout(principal, sandbox_id, body.timeout_ms, action)
    return JSONResponse(sandbox_out(sandbox))
