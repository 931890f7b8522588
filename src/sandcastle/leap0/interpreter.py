"""The calls Leap0's SDK makes on a sandbox's own host, ``{id}.{sandbox_domain}``, that our
agent API does not already answer: code contexts (``/contexts``) and ``/healthz``.

``POST /execute`` on that host is the agent API's own: its body rule takes Leap0's body (it
always names a ``language``) as ``execute.txt``'s, which is Leap0's execute document, and
answers in its shape. :class:`~sandcastle.leap0.routing.Leap0Routing` sends the paths here as
``/sandboxes/{id}/…``; nothing reaches them otherwise.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from sandcastle.api.deps import ServicesDep
from sandcastle.domain.context import Context
from sandcastle.leap0.access import WorkDep
from sandcastle.leap0.schemas import ContextBody

router = APIRouter(prefix="/sandboxes/{sandbox_id}", tags=["leap0-sandbox"])

#: The paths of a sandbox host served here; every other one is the agent API's.
HOST_PATHS = ("/contexts", "/healthz")


def context_out(context: Context) -> dict[str, Any]:
    return {"id": context.id, "language": context.language, "cwd": context.cwd or ""}


@router.get("/healthz")
async def healthz(call: WorkDep) -> dict[str, str]:
    """``ok`` while the sandbox runs (a paused one is 409)."""
    call.sandbox.require_running()
    return {"status": "ok"}


@router.post("/contexts", status_code=201)
async def create_context(body: ContextBody, call: WorkDep, services: ServicesDep) -> dict[str, Any]:
    """A new context (a fresh kernel) of ``language``, in ``cwd`` (created if missing)."""
    context = await services.contexts.create(
        call.principal, call.sandbox_id, body.language, body.cwd
    )
    return context_out(context)


@router.get("/contexts")
async def list_contexts(call: WorkDep, services: ServicesDep) -> dict[str, Any]:
    contexts = await services.contexts.list(call.principal, call.sandbox_id)
    return {"items": [context_out(c) for c in contexts]}


@router.get("/contexts/{context_id}")
async def get_context(context_id: str, call: WorkDep, services: ServicesDep) -> dict[str, Any]:
    return context_out(await services.contexts.get(call.principal, call.sandbox_id, context_id))


@router.delete("/contexts/{context_id}", status_code=204)
async def delete_context(context_id: str, call: WorkDep, services: ServicesDep) -> Response:
    await services.contexts.delete(call.principal, call.sandbox_id, context_id)
    return Response(status_code=204)
