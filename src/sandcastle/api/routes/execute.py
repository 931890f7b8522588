"""``POST /v1/sandboxes/{id}/execute`` (``execute.txt``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from sandcastle.api.deps import PrincipalDep, ServicesDep
from sandcastle.api.errors import execute_document_errors
from sandcastle.api.schemas import ExecuteBody, ExecuteOut, execute_out
from sandcastle.services.executions import ExecuteRequest

router = APIRouter(prefix="/v1/sandboxes", tags=["execute"])


@router.post(
    "/{sandbox_id}/execute",
    response_model=ExecuteOut,
    response_model_by_alias=True,
    response_model_exclude_unset=True,
)
@execute_document_errors
async def execute(
    sandbox_id: str, body: ExecuteBody, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Run code in a persistent REPL context and wait for the full result.

    Without ``context_id`` a new context is created; its id is in the response. An exception in
    the code is a result (``error``), not an HTTP error.
    """
    context_id, result = await services.executions.execute(
        principal,
        sandbox_id,
        ExecuteRequest(
            code=body.code,
            context_id=body.context_id,
            language=body.language,
            env_vars=body.env_vars,
            timeout_ms=body.timeout_ms,
        ),
    )
    return execute_out(context_id, result)
