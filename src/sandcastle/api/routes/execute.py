"""``POST /v1/sandboxes/{id}/execute`` (``execute.txt``) and its streamed twin ``…/execute/stream``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from sandcastle.api import streaming
from sandcastle.api.deps import PrincipalDep, ServicesDep
from sandcastle.api.errors import execute_document_errors
from sandcastle.api.openapi import EXECUTE_DOCUMENT_422
from sandcastle.api.schemas import ExecuteBody, ExecuteOut, execute_out
from sandcastle.services.executions import ExecuteRequest

router = APIRouter(prefix="/v1/sandboxes", tags=["execute"])


@router.post(
    "/{sandbox_id}/execute",
    response_model=ExecuteOut,
    response_model_by_alias=True,
    response_model_exclude_unset=True,
    responses=EXECUTE_DOCUMENT_422,
)
@execute_document_errors
async def execute(
    sandbox_id: str, body: ExecuteBody, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Run code in a persistent REPL context and wait for the full result.

    Without ``context_id`` a new context is created; its id is in the response. An exception in
    the code is a result (``error``), not an HTTP error.
    """
    context_id, result = await services.executions.execute(principal, sandbox_id, _request(body))
    return execute_out(context_id, result)


def _request(body: ExecuteBody) -> ExecuteRequest:
    return ExecuteRequest(
        code=body.code,
        context_id=body.context_id,
        language=body.language,
        env_vars=body.env_vars,
        timeout_ms=body.timeout_ms,
    )


_STREAM_DOC = {
    200: {
        "description": "Typed events, one per line (NDJSON) or as SSE with "
        "`Accept: text/event-stream`; the last is `end_of_execution`. See docs/STREAMING.md.",
        "model": streaming.StreamEventDoc,
        "content": {streaming.SSE: {"schema": {"type": "string"}}},
    }
}


@router.post(
    "/{sandbox_id}/execute/stream",
    status_code=200,
    response_class=streaming.EventStreamResponse,
    responses={**_STREAM_DOC, **EXECUTE_DOCUMENT_422},  # type: ignore[dict-item]
)
@execute_document_errors
async def execute_stream(
    sandbox_id: str,
    body: ExecuteBody,
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    keepalive_ms: Annotated[
        int,
        Query(ge=100, le=60_000, description="Silence after which a keepalive event is sent."),
    ] = 5_000,
) -> streaming.EventStreamResponse:
    """Run code like ``/execute`` and stream its events as they happen.

    Request errors (validation, unknown sandbox or context) are HTTP errors as for
    ``/execute``; once the stream has started, everything is an event. A client that
    disconnects interrupts the execution; the context keeps its state.
    """
    prepared = await services.executions.prepare(principal, sandbox_id, _request(body))

    return streaming.EventStreamResponse(
        streaming.execution_events(services.executions, prepared),
        media_type=streaming.media_type_for(request.headers.get("accept", "")),
        keepalive_s=keepalive_ms / 1000,
        what=f"execution in {prepared.context_id}",
        last=lambda: streaming.EndOfExecutionEvent(context_id=prepared.context_id),
    )
