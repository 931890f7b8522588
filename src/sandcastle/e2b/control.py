"""E2B's control plane (``/sandboxes``, ``/v2/sandboxes``) over our sandbox service.

Authenticated by ``X-API-Key: <a Sandcastle key>`` (or ``Authorization: Bearer``), with the
same tenancy as our own API: another org's sandbox is not found. Times are seconds, as E2B's.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from sandcastle.api.deps import ServicesDep, principal_for_key
from sandcastle.api.schemas import rfc3339
from sandcastle.domain.sandbox import ListFilter, Sandbox, SandboxStatus, TimeoutAction
from sandcastle.e2b import schemas
from sandcastle.e2b.mapping import e2b_state, template_for
from sandcastle.errors import ConflictError, InvalidRequestError, NotFoundError
from sandcastle.services.auth import Principal
from sandcastle.services.executions import check_env_vars
from sandcastle.services.provisioning import CreateSandbox

router = APIRouter(tags=["e2b"])

#: E2B's page size bounds for ``GET /v2/sandboxes``.
MAX_PAGE = 100
#: Between the two samples of a sandbox's CPU time that make ``cpuUsedPct``.
CPU_SAMPLE_S = 0.2


async def e2b_principal(request: Request) -> Principal:
    key = request.headers.get("x-api-key")
    if key is None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        key = value.strip() if scheme.lower() == "bearer" else None
    return await principal_for_key(request, key)


PrincipalDep = Annotated[Principal, Depends(e2b_principal)]


def _time(moment: datetime | None) -> str:
    """E2B's times are never null: a sandbox with no deadline ends "now" as far as it knows."""
    return str(rfc3339(moment or datetime.now(UTC)))


def _connection(services: ServicesDep, sandbox: Sandbox) -> dict[str, Any]:
    return schemas.SandboxOut(
        template_id=sandbox.template,
        sandbox_id=sandbox.id,
        alias=sandbox.template,
        envd_access_token=sandbox.envd_access_token,
        traffic_access_token=sandbox.traffic_access_token,
        domain=services.settings.sandbox_domain,
    ).model_dump(by_alias=True)


def _listed(sandbox: Sandbox) -> dict[str, Any]:
    return schemas.ListedSandboxOut(**_listed_fields(sandbox)).model_dump(by_alias=True)


def _listed_fields(sandbox: Sandbox) -> dict[str, Any]:
    return {
        "template_id": sandbox.template,
        "alias": sandbox.template,
        "sandbox_id": sandbox.id,
        "started_at": _time(sandbox.started_at or sandbox.created_at),
        "end_at": _time(sandbox.timeout_at),
        "cpu_count": sandbox.config.vcpus,
        "memory_mb": sandbox.config.memory_mb,
        "disk_size_mb": sandbox.config.disk_mb,
        "metadata": sandbox.metadata,
        "state": e2b_state(sandbox.status),
    }


def _live(sandbox: Sandbox) -> Sandbox:
    """E2B knows no ended sandboxes: they are simply not found."""
    if e2b_state(sandbox.status) is None:
        raise NotFoundError(f"sandbox {sandbox.id} not found")
    return sandbox


# --- create ----------------------------------------------------------------------------------


@router.post("/sandboxes", status_code=201)
@router.post("/v2/sandboxes", status_code=201)
async def create(
    body: schemas.NewSandboxBody, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    refused = body.unsupported(schemas.UNSUPPORTED_CREATE_FIELDS)
    if refused:
        raise InvalidRequestError(f"not supported by this server: {', '.join(refused)}")
    env = dict(body.env_vars or {})
    check_env_vars(env)
    request = CreateSandbox(
        template=template_for(services.settings, body.template_id),
        metadata={str(k): str(v) for k, v in body.metadata.items()},
        timeout_ms=None if body.timeout is None else max(1, body.timeout) * 1000,
        timeout_action=TimeoutAction.HIBERNATE if body.auto_pause else TimeoutAction.DESTROY,
        internet=bool(body.allow_internet_access),
        auto_resume=bool(body.auto_resume and body.auto_resume.enabled),
        env=env,
    )
    sandbox = await services.sandboxes.create(principal, request)
    return _connection(services, sandbox)


# --- read ------------------------------------------------------------------------------------


def _filter(states: list[str], metadata: str | None, template: str | None) -> ListFilter:
    statuses: list[str] = []
    for state in (s.strip() for item in states for s in item.split(",") if s.strip()):
        if state == "running":
            statuses += [SandboxStatus.CREATING.value, SandboxStatus.RUNNING.value]
        elif state == "paused":
            statuses.append(SandboxStatus.PAUSED.value)
        else:
            raise InvalidRequestError(f"unknown state {state!r}: use running or paused")
    pairs = urllib.parse.parse_qsl(metadata or "", keep_blank_values=True)
    return ListFilter(
        statuses=statuses
        or [SandboxStatus.CREATING.value, SandboxStatus.RUNNING.value, SandboxStatus.PAUSED.value],
        template=template,
        metadata={urllib.parse.unquote(k): urllib.parse.unquote(v) for k, v in pairs},
    )


@router.get("/v2/sandboxes")
async def list_v2(
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    state: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI copies defaults
    metadata: str | None = None,
    template: str | None = None,
    order: str | None = None,
    next_token: Annotated[str | None, Query(alias="nextToken")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
) -> list[dict[str, Any]]:
    if order not in (None, "desc"):
        raise InvalidRequestError("only order=desc (newest first) is supported")
    where = _filter(state, metadata, template)
    page, cursor = await services.sandboxes.list(
        principal, limit=limit, cursor=next_token, where=where
    )
    if cursor is not None:
        response.headers["x-next-token"] = cursor
    return [_listed(s) for s in page]


@router.get("/sandboxes")
async def list_running(
    principal: PrincipalDep, services: ServicesDep, metadata: str | None = None
) -> list[dict[str, Any]]:
    """E2B's first listing: every running sandbox, unpaged."""
    where = _filter(["running"], metadata, None)
    found: list[Sandbox] = []
    cursor: str | None = None
    while True:
        page, cursor = await services.sandboxes.list(
            principal, limit=MAX_PAGE, cursor=cursor, where=where
        )
        found += page
        if cursor is None:
            return [_listed(s) for s in found]


@router.get("/sandboxes/metrics")
async def many_metrics(
    principal: PrincipalDep,
    services: ServicesDep,
    sandbox_ids: Annotated[str, Query(max_length=10_000)] = "",
) -> dict[str, Any]:
    ids = [i for i in sandbox_ids.split(",") if i][:MAX_PAGE]
    sandboxes = [_live(await services.sandboxes.get(principal, i)) for i in ids]
    samples = await asyncio.gather(*(_metric(services, s) for s in sandboxes))
    return {"sandboxes": {s.id: m for s, m in zip(sandboxes, samples, strict=True)}}


@router.get("/sandboxes/{sandbox_id}")
async def get(sandbox_id: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    sandbox = _live(await services.sandboxes.get(principal, sandbox_id))
    return schemas.SandboxDetailOut(
        **_listed_fields(sandbox),
        envd_access_token=sandbox.envd_access_token,
        domain=services.settings.sandbox_domain,
        allow_internet_access=sandbox.internet,
        lifecycle={
            "onTimeout": "pause" if sandbox.timeout_action is TimeoutAction.HIBERNATE else "kill",
            "autoResume": sandbox.auto_resume,
        },
    ).model_dump(by_alias=True)


@router.get("/sandboxes/{sandbox_id}/metrics")
async def metrics(
    sandbox_id: str, principal: PrincipalDep, services: ServicesDep
) -> list[dict[str, Any]]:
    """One sample, taken now (no history is kept)."""
    sandbox = _live(await services.sandboxes.get(principal, sandbox_id))
    return [await _metric(services, sandbox)]


async def _metric(services: ServicesDep, sandbox: Sandbox) -> dict[str, Any]:
    runtime = services.sandboxes.runtime
    before = await runtime.poll(sandbox.id)
    await asyncio.sleep(CPU_SAMPLE_S)
    after = await runtime.poll(sandbox.id)
    now = datetime.now(UTC)
    used = max(0.0, after.cpu_seconds - before.cpu_seconds)
    return schemas.MetricOut(
        timestamp=_time(now),
        timestamp_unix=int(now.timestamp()),
        cpu_count=sandbox.config.vcpus,
        cpu_used_pct=round(100 * used / (CPU_SAMPLE_S * sandbox.config.vcpus), 2),
        mem_used=max(0, after.memory_bytes - after.memory_cache_bytes),
        mem_total=sandbox.config.memory_mb * 1024 * 1024,
        mem_cache=after.memory_cache_bytes,
        disk_used=0,
        disk_total=sandbox.config.disk_mb * 1024 * 1024,
    ).model_dump(by_alias=True)


# --- lifecycle -------------------------------------------------------------------------------


@router.delete("/sandboxes/{sandbox_id}", status_code=204)
async def kill(sandbox_id: str, principal: PrincipalDep, services: ServicesDep) -> None:
    _live(await services.sandboxes.get(principal, sandbox_id))
    await services.sandboxes.destroy(principal, sandbox_id)


@router.post("/sandboxes/{sandbox_id}/timeout", status_code=204)
async def set_timeout(
    sandbox_id: str, body: schemas.TimeoutBody, principal: PrincipalDep, services: ServicesDep
) -> None:
    _live(await services.sandboxes.get(principal, sandbox_id))
    await services.sandboxes.set_timeout(principal, sandbox_id, max(1, body.timeout) * 1000)


@router.post("/sandboxes/{sandbox_id}/refreshes", status_code=204)
async def refresh(
    sandbox_id: str, body: schemas.RefreshBody, principal: PrincipalDep, services: ServicesDep
) -> None:
    """Keep the sandbox alive ``duration`` seconds more from now (never shortens it)."""
    sandbox = _live(await services.sandboxes.get(principal, sandbox_id))
    await _extend(services, principal, sandbox, body.duration or 60)


async def _extend(
    services: ServicesDep, principal: Principal, sandbox: Sandbox, seconds: int
) -> None:
    wanted = datetime.now(UTC) + timedelta(seconds=seconds)
    if sandbox.timeout_at is None or sandbox.timeout_at.replace(tzinfo=UTC) < wanted:
        await services.sandboxes.set_timeout(principal, sandbox.id, max(1, seconds) * 1000)


@router.post("/sandboxes/{sandbox_id}/pause", status_code=204)
async def pause(sandbox_id: str, principal: PrincipalDep, services: ServicesDep) -> None:
    """E2B's pause keeps the sandbox's memory: a hibernation where the backend can save memory
    (gVisor), else a freeze in place."""
    sandbox = _live(await services.sandboxes.get(principal, sandbox_id))
    if sandbox.status is SandboxStatus.PAUSED:
        raise ConflictError(f"sandbox {sandbox_id} is already paused")
    if services.sandboxes.can_hibernate(sandbox):
        await services.sandboxes.hibernate(principal, sandbox_id)
    else:
        await services.sandboxes.pause(principal, sandbox_id)


@router.post("/sandboxes/{sandbox_id}/connect")
@router.post("/v2/sandboxes/{sandbox_id}/connect")
async def connect(
    sandbox_id: str,
    body: schemas.ConnectBody,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
) -> dict[str, Any]:
    """Resume a paused sandbox (201) or reach a running one (200); ``timeout`` extends it."""
    sandbox = _live(await services.sandboxes.get(principal, sandbox_id))
    response.status_code = 200
    if sandbox.status is SandboxStatus.PAUSED:
        sandbox = await services.sandboxes.resume(principal, sandbox_id)
        response.status_code = 201
    if body.timeout:
        await _extend(services, principal, sandbox, body.timeout)
    return _connection(services, sandbox)


@router.post("/sandboxes/{sandbox_id}/resume", status_code=201)
async def resume(
    sandbox_id: str, body: schemas.ResumeBody, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """E2B's older resume: 409 unless the sandbox is paused."""
    sandbox = _live(await services.sandboxes.get(principal, sandbox_id))
    if sandbox.status is not SandboxStatus.PAUSED:
        raise ConflictError(f"sandbox {sandbox_id} is not paused")
    sandbox = await services.sandboxes.resume(principal, sandbox_id)
    if body.timeout:
        await services.sandboxes.set_timeout(principal, sandbox_id, max(1, body.timeout) * 1000)
    return _connection(services, sandbox)
