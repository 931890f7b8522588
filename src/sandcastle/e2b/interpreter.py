"""E2B's code interpreter (port 49999): ``/execute`` streaming its NDJSON, and ``/contexts``.

An execution without a context runs in the sandbox's default context of its language (python
unless it says), started at first use and kept, so state persists across calls as in E2B. The
default contexts are ordinary contexts labelled :data:`DEFAULT_LABEL`; ``javascript`` and
``typescript`` share one (the same kernel runs both). A client that disconnects interrupts its
execution; the context keeps its state.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from sandcastle.api import streaming
from sandcastle.api.bounded import EnvVars
from sandcastle.api.deps import ServicesDep
from sandcastle.domain.context import Context
from sandcastle.domain.languages import normalise_language
from sandcastle.e2b.sandbox_calls import InterpreterCall
from sandcastle.services.executions import ExecuteRequest
from sandcastle.wiring import Services

router = APIRouter(tags=["e2b-code-interpreter"])

DEFAULT_LABEL = "e2b-default"
#: The longest an execution may run here; E2B's clients bound it themselves (and disconnect).
EXECUTION_LIMIT_MS = 3_600_000
#: A keepalive line after this much silence, so proxies keep the stream open.
KEEPALIVE_S = 5.0


class ExecuteBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: str = Field(max_length=2_000_000)
    context_id: str | None = Field(default=None, max_length=64)
    language: str | None = Field(default=None, max_length=32)
    env_vars: EnvVars = None


class ContextBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    language: str | None = Field(default=None, max_length=32)
    cwd: str | None = Field(default=None, max_length=4096)


def context_out(context: Context) -> dict[str, Any]:
    return {"id": context.id, "language": context.language, "cwd": context.cwd or ""}


class DefaultContexts:
    """Starts each sandbox's default context of a language once, however many executions ask
    for it at the same time (one server per database, so a process-wide lock is enough)."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def get(self, services: Services, call: InterpreterCall, language: str) -> Context:
        key = (call.sandbox_id, language)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            return await services.contexts.labelled(
                call.principal, call.sandbox_id, language, DEFAULT_LABEL
            )


# --- the NDJSON lines ------------------------------------------------------------------------


def e2b_line(event: BaseModel) -> bytes:
    """One of our stream events as E2B's interpreter writes it."""
    body = event.model_dump(mode="json", by_alias=True, exclude_none=True)
    kind = body.get("type")
    if kind in ("stdout", "stderr"):
        body["timestamp"] = time.time_ns() // 1000
    elif kind == "result":
        body["is_main_result"] = bool(body.pop("is_primary", False))
    elif kind == "execution_count":
        body = {"type": "number_of_executions", "execution_count": body["execution_count"]}
    elif kind == "end_of_execution":
        body = {"type": "end_of_execution"}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


# --- routes ----------------------------------------------------------------------------------


@router.post("/execute", response_class=streaming.EventStreamResponse)
async def execute(
    body: ExecuteBody, request: Request, call: InterpreterCall, services: ServicesDep
) -> streaming.EventStreamResponse:
    context_id = body.context_id
    language = None
    if context_id is None:
        family = normalise_language(body.language)
        defaults: DefaultContexts = request.app.state.default_contexts
        context_id = (await defaults.get(services, call, family)).id
    elif body.language is not None:
        language = body.language
    wanted = ExecuteRequest(
        code=body.code,
        context_id=context_id,
        language=language,
        env_vars=body.env_vars,
        timeout_ms=EXECUTION_LIMIT_MS,
    )
    prepared = await services.executions.prepare(call.principal, call.sandbox_id, wanted)

    return streaming.EventStreamResponse(
        streaming.execution_events(services.executions, prepared),
        media_type=streaming.NDJSON,
        keepalive_s=KEEPALIVE_S,
        what=f"execution in {prepared.context_id}",
        last=lambda: streaming.EndOfExecutionEvent(context_id=prepared.context_id),
        encode=e2b_line,
    )


@router.post("/contexts")
async def create_context(
    body: ContextBody, call: InterpreterCall, services: ServicesDep
) -> dict[str, Any]:
    context = await services.contexts.create(
        call.principal, call.sandbox_id, body.language, body.cwd
    )
    return context_out(context)


@router.get("/contexts")
async def list_contexts(call: InterpreterCall, services: ServicesDep) -> list[dict[str, Any]]:
    return [context_out(c) for c in await services.contexts.list(call.principal, call.sandbox_id)]


@router.delete("/contexts/{context_id}", status_code=204)
async def delete_context(context_id: str, call: InterpreterCall, services: ServicesDep) -> Response:
    await services.contexts.delete(call.principal, call.sandbox_id, context_id)
    return Response(status_code=204)


@router.post("/contexts/{context_id}/restart", status_code=204)
async def restart_context(
    context_id: str, call: InterpreterCall, services: ServicesDep
) -> Response:
    await services.contexts.restart(call.principal, call.sandbox_id, context_id)
    return Response(status_code=204)
