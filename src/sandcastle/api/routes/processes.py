"""``/v1/sandboxes/{id}/processes``: plain processes — start (in the background, waited for, or
streamed), list, reconnect to their output, stdin, signals, a terminal. See docs/PROCESSES.md.

A process belongs to the sandbox: a client that leaves a stream stops reading, it does not
stop the process (``DELETE`` or a signal does; its ``timeout_ms`` too).
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from anyio.abc import ObjectSendStream
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel

from sandcastle.api import streaming
from sandcastle.api.deps import PrincipalDep, ServicesDep
from sandcastle.api.process_schemas import (
    DroppedEvent,
    EndEvent,
    ProcessEventDoc,
    ProcessListOut,
    ProcessOut,
    ProcessRunOut,
    SignalBody,
    StartEvent,
    StartProcessBody,
    StdinBody,
    StdinOut,
    TerminalEvent,
    TerminalSize,
    process_out,
)
from sandcastle.errors import FieldError
from sandcastle.services.auth import Principal
from sandcastle.services.processes import Output
from sandcastle.wiring import Services

router = APIRouter(prefix="/v1/sandboxes", tags=["processes"])

Pid = Annotated[int, Path(ge=1, le=4_194_304, description="The process id in the sandbox.")]
KeepaliveMs = Annotated[
    int, Query(ge=100, le=60_000, description="Silence after which a keepalive event is sent.")
]
_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Typed events, one per line (NDJSON) or as SSE with "
        "`Accept: text/event-stream`; the last is `end` once the process exited.",
        "model": ProcessEventDoc,
        "content": {streaming.SSE: {"schema": {"type": "string"}}},
    }
}


@router.post("/{sandbox_id}/processes", status_code=201, response_model=ProcessOut)
async def start_process(
    sandbox_id: str, body: StartProcessBody, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Start a process in the background; it runs until it exits, is killed, or reaches its
    ``timeout_ms``. Read its output with ``GET …/processes/{pid}/stream``."""
    started = await services.processes.start(principal, sandbox_id, body.spec())
    return process_out(started)


@router.post("/{sandbox_id}/processes/run", response_model=ProcessRunOut)
async def run_process(
    sandbox_id: str, body: StartProcessBody, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Start a process and wait for it to exit: its exit and output (1 MiB of each stream at
    most; ``truncated`` counts the rest). A non-zero exit is a result, not an HTTP error."""
    done = await services.processes.run(principal, sandbox_id, body.spec())
    return {
        "process": process_out(done.process),
        "stdout": done.stdout,
        "stderr": done.stderr,
        "truncated": done.truncated,
    }


@router.post(
    "/{sandbox_id}/processes/stream",
    status_code=200,
    response_class=streaming.EventStreamResponse,
    responses=_STREAM_DOC,
)
async def stream_process(
    sandbox_id: str,
    body: StartProcessBody,
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    keepalive_ms: KeepaliveMs = 5_000,
) -> streaming.EventStreamResponse:
    """Start a process and stream its events: ``start``, its output, ``end``. Errors before
    the start are HTTP errors; after it, an ``error`` event."""
    started = await services.processes.start(principal, sandbox_id, body.spec())
    return _stream(request, services, principal, sandbox_id, started, keepalive_ms, first=True)


@router.get("/{sandbox_id}/processes", response_model=ProcessListOut)
async def list_processes(
    sandbox_id: str, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Running processes and the last exited ones, oldest first."""
    found = await services.processes.list(principal, sandbox_id)
    return {"items": [process_out(p) for p in found]}


@router.get("/{sandbox_id}/processes/{pid:int}", response_model=ProcessOut)
async def get_process(
    sandbox_id: str, pid: Pid, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    return process_out(await services.processes.get(principal, sandbox_id, pid))


@router.get(
    "/{sandbox_id}/processes/{pid:int}/stream",
    status_code=200,
    response_class=streaming.EventStreamResponse,
    responses=_STREAM_DOC,
)
async def reconnect_process(
    sandbox_id: str,
    pid: Pid,
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    keepalive_ms: KeepaliveMs = 5_000,
) -> streaming.EventStreamResponse:
    """A process's output from what the sandbox still holds of it (the last 512 KiB), then as
    it comes, and ``end`` once it exited (at once for one that has)."""
    found = await services.processes.get(principal, sandbox_id, pid)
    return _stream(request, services, principal, sandbox_id, found, keepalive_ms, first=False)


@router.post("/{sandbox_id}/processes/{pid:int}/stdin", response_model=StdinOut)
async def write_stdin(
    sandbox_id: str, pid: Pid, body: StdinBody, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Write to the process's stdin (started with ``stdin: true``, or on a terminal)."""
    if body.text is not None:
        data = body.text.encode()
    else:
        try:
            data = base64.b64decode(body.data_b64 or "", validate=True)
        except ValueError as exc:  # binascii.Error, or characters outside ASCII
            raise FieldError("data_b64", "is not valid base64") from exc
    written = await services.processes.write_stdin(principal, sandbox_id, pid, data)
    return {"written": written}


@router.post("/{sandbox_id}/processes/{pid:int}/stdin/close", response_model=ProcessOut)
async def close_stdin(
    sandbox_id: str, pid: Pid, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """End the process's input (on a terminal: an end-of-file, ``^D``)."""
    await services.processes.close_stdin(principal, sandbox_id, pid)
    return process_out(await services.processes.get(principal, sandbox_id, pid))


@router.post("/{sandbox_id}/processes/{pid:int}/signal", response_model=ProcessOut)
async def signal_process(
    sandbox_id: str, pid: Pid, body: SignalBody, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Send a signal to the process's group (what it started gets it too)."""
    return process_out(await services.processes.signal(principal, sandbox_id, pid, body.signal))


@router.post("/{sandbox_id}/processes/{pid:int}/resize", response_model=ProcessOut)
async def resize_terminal(
    sandbox_id: str, pid: Pid, body: TerminalSize, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Resize the process's terminal (409 for a process without one)."""
    resized = await services.processes.resize(principal, sandbox_id, pid, body.cols, body.rows)
    return process_out(resized)


@router.delete("/{sandbox_id}/processes/{pid:int}", response_model=ProcessOut)
async def kill_process(
    sandbox_id: str, pid: Pid, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Kill the process and its group (SIGKILL); its record stays until forgotten."""
    return process_out(await services.processes.signal(principal, sandbox_id, pid, "SIGKILL"))


def _stream(
    request: Request,
    services: Services,
    principal: Principal,
    sandbox_id: str,
    process: dict[str, Any],
    keepalive_ms: int,
    *,
    first: bool,
) -> streaming.EventStreamResponse:
    pid = int(process["pid"])

    async def produce(sender: ObjectSendStream[BaseModel]) -> None:
        async def text(stream: str, chunk: str) -> None:
            event = streaming.StdoutEvent if stream == "stdout" else streaming.StderrEvent
            await sender.send(event(text=chunk))

        async def terminal(data: bytes) -> None:
            await sender.send(TerminalEvent(data_b64=base64.b64encode(data).decode("ascii")))

        async def dropped(count: int) -> None:
            await sender.send(DroppedEvent(bytes=count))

        if first:
            await sender.send(StartEvent.model_validate({"process": process_out(process)}))
        output = Output(text, terminal, dropped)
        ended = await services.processes.connect(principal, sandbox_id, pid, output)
        await sender.send(EndEvent.model_validate({"process": process_out(ended)}))

    return streaming.EventStreamResponse(
        produce,
        media_type=streaming.media_type_for(request.headers.get("accept", "")),
        keepalive_s=keepalive_ms / 1000,
        what=f"process {pid} of {sandbox_id}",
    )
