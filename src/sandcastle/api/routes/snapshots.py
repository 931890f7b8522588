"""``/v1/snapshots``: the org's snapshots (made with ``POST /v1/sandboxes/{id}/snapshots``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from sandcastle.api.deps import PrincipalDep, ServicesDep
from sandcastle.api.schemas import SnapshotListOut, SnapshotOut, snapshot_out

router = APIRouter(prefix="/v1/snapshots", tags=["snapshots"])


@router.get("", response_model=SnapshotListOut)
async def list_snapshots(
    principal: PrincipalDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query()] = None,
) -> JSONResponse:
    """The org's snapshots, newest first; ``next_cursor`` is null on the last page."""
    snapshots, next_cursor = await services.snapshots.list(principal, limit=limit, cursor=cursor)
    return JSONResponse({"items": [snapshot_out(s) for s in snapshots], "next_cursor": next_cursor})


@router.get("/{snapshot_id}", response_model=SnapshotOut)
async def get_snapshot(
    snapshot_id: str, principal: PrincipalDep, services: ServicesDep
) -> JSONResponse:
    return JSONResponse(snapshot_out(await services.snapshots.get(principal, snapshot_id)))


@router.delete("/{snapshot_id}", status_code=204)
async def delete_snapshot(
    snapshot_id: str, principal: PrincipalDep, services: ServicesDep
) -> Response:
    """Delete the snapshot and its image; sandboxes made from it are not affected."""
    await services.snapshots.delete(principal, snapshot_id)
    return Response(status_code=204)
