"""``/v1/sandboxes/{id}/contexts``: a sandbox's REPL contexts, each one Jupyter kernel.

Control-plane routes: errors use the envelope. An unknown context, a deleted one, or one of
another sandbox or tenant is a 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from sandcastle.api.deps import PrincipalDep, ServicesDep
from sandcastle.api.request_body import Language, RequestBody
from sandcastle.api.schemas import ABSOLUTE_PATH, rfc3339
from sandcastle.domain.context import Context, ContextStatus

router = APIRouter(prefix="/v1/sandboxes", tags=["contexts"])


class ContextCreateBody(RequestBody):
    language: Language = Field(
        default="python",
        description="Any spelling `execute` accepts: python, py, python3, typescript, ts, "
        "javascript, js, bun, node.",
    )
    cwd: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        pattern=ABSOLUTE_PATH,
        description="Absolute working directory of the kernel, created if missing; "
        "defaults to the sandbox's cwd.",
    )


class ContextOut(BaseModel):
    id: str
    sandbox_id: str
    language: str = Field(description="The language family: python or typescript.")
    cwd: str | None
    status: ContextStatus
    created_at: str


class ContextListOut(BaseModel):
    items: list[ContextOut]


def context_out(context: Context) -> dict[str, Any]:
    return {
        "id": context.id,
        "sandbox_id": context.sandbox_id,
        "language": context.language,
        "cwd": context.cwd,
        "status": context.status.value,
        "created_at": rfc3339(context.created_at),
    }


@router.post("/{sandbox_id}/contexts", status_code=201, response_model=ContextOut)
async def create_context(
    sandbox_id: str, body: ContextCreateBody, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Start a context (a fresh kernel) in a running sandbox."""
    context = await services.contexts.create(principal, sandbox_id, body.language, body.cwd)
    return context_out(context)


@router.get("/{sandbox_id}/contexts", response_model=ContextListOut)
async def list_contexts(
    sandbox_id: str, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """The sandbox's contexts, oldest first (deleted ones are not listed)."""
    contexts = await services.contexts.list(principal, sandbox_id)
    return {"items": [context_out(c) for c in contexts]}


@router.get("/{sandbox_id}/contexts/{context_id}", response_model=ContextOut)
async def get_context(
    sandbox_id: str, context_id: str, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """One context."""
    return context_out(await services.contexts.get(principal, sandbox_id, context_id))


@router.delete("/{sandbox_id}/contexts/{context_id}", status_code=204)
async def delete_context(
    sandbox_id: str, context_id: str, principal: PrincipalDep, services: ServicesDep
) -> Response:
    """Shut the context's kernel down; the context answers 404 afterwards."""
    await services.contexts.delete(principal, sandbox_id, context_id)
    return Response(status_code=204)


@router.post("/{sandbox_id}/contexts/{context_id}/restart", response_model=ContextOut)
async def restart_context(
    sandbox_id: str, context_id: str, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Replace the kernel with a fresh one under the same id: variables, imports and the
    execution count start over. An execution running meanwhile ends with
    ``ContextRestartedError``."""
    return context_out(await services.contexts.restart(principal, sandbox_id, context_id))


@router.post("/{sandbox_id}/contexts/{context_id}/interrupt", response_model=ContextOut)
async def interrupt_context(
    sandbox_id: str, context_id: str, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Interrupt the context's running execution, if any; its state is kept. The execution
    ends with an error (Python: ``KeyboardInterrupt``; TypeScript: ``InterruptedError``)."""
    return context_out(await services.contexts.interrupt(principal, sandbox_id, context_id))
