"""Streamed executions (and processes): typed events, their NDJSON/SSE encodings, and a response
that notices a client that left.

Events carry a ``type`` discriminator; the last one is always ``end_of_execution``. During
silences a ``keepalive`` is sent (an SSE comment in SSE), so proxies and clients can tell a
quiet execution from a dead connection. See ``docs/STREAMING.md``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import anyio
from anyio.abc import ObjectSendStream
from pydantic import BaseModel, ConfigDict, Field, RootModel
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from sandcastle.api.schemas import ExecuteItemOut
from sandcastle.domain.execution import to_error, to_item
from sandcastle.errors import SandcastleError
from sandcastle.services.executions import ExecutionService, PreparedExecution

log = logging.getLogger("sandcastle.api")

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
#: Events buffered between the execution and a slow client before the execution waits.
_BUFFER = 256


class StdoutEvent(BaseModel):
    type: Literal["stdout"] = "stdout"
    text: str


class StderrEvent(BaseModel):
    type: Literal["stderr"] = "stderr"
    text: str


class ResultEvent(ExecuteItemOut):
    """One item of ``execute.txt``'s ``items``, in the order it was produced."""

    model_config = ConfigDict(populate_by_name=True)

    type: Literal["result"] = "result"


class ErrorEvent(BaseModel):
    """The code raised (or the kernel died, timed out, ...). A later one supersedes it."""

    type: Literal["error"] = "error"
    name: str
    value: str
    traceback: str


class ExecutionCountEvent(BaseModel):
    type: Literal["execution_count"] = "execution_count"
    execution_count: int


class EndOfExecutionEvent(BaseModel):
    """Always the last event."""

    type: Literal["end_of_execution"] = "end_of_execution"
    context_id: str


class KeepaliveEvent(BaseModel):
    type: Literal["keepalive"] = "keepalive"


StreamEvent = Annotated[
    StdoutEvent
    | StderrEvent
    | ResultEvent
    | ErrorEvent
    | ExecutionCountEvent
    | EndOfExecutionEvent
    | KeepaliveEvent,
    Field(discriminator="type"),
]


class StreamEventDoc(RootModel[StreamEvent]):
    """One line of an NDJSON stream (the ``data`` of one SSE event)."""


def from_agent(event: dict[str, Any]) -> BaseModel | None:
    """The stream event for one agent execution event; ``None`` for kinds we do not stream."""
    kind = event.get("kind")
    if kind in ("stdout", "stderr"):
        text = str(event.get("text", ""))
        return StdoutEvent(text=text) if kind == "stdout" else StderrEvent(text=text)
    if kind == "result":
        data = event.get("data")
        item = to_item(data if isinstance(data, dict) else {}, bool(event.get("is_primary")))
        fields: dict[str, Any] = {"is_primary": item.is_primary, **item.fields}
        if item.extra:
            fields["extra"] = item.extra
        return ResultEvent.model_validate(fields)
    if kind == "error":
        error = to_error(event)
        return ErrorEvent(name=error.name, value=error.value, traceback=error.traceback)
    if kind == "execution_count" and isinstance(event.get("value"), int):
        return ExecutionCountEvent(execution_count=event["value"])
    return None


def execution_events(executions: ExecutionService, prepared: PreparedExecution) -> Producer:
    """A producer that runs ``prepared`` and sends each of its events as a stream event."""

    async def produce(sender: ObjectSendStream[BaseModel]) -> None:
        async def forward(event: dict[str, Any]) -> None:
            converted = from_agent(event)
            if converted is not None:
                await sender.send(converted)

        await executions.run(prepared, on_event=forward)

    return produce


def media_type_for(accept: str) -> str:
    """SSE when the client's ``Accept`` asks for it, else NDJSON."""
    return SSE if SSE in accept else NDJSON


def encode_ndjson(event: BaseModel) -> bytes:
    return _json(event) + b"\n"


def encode_sse(event: BaseModel) -> bytes:
    if isinstance(event, KeepaliveEvent):
        return b": keepalive\n\n"
    kind = str(event.model_dump()["type"])
    return b"event: " + kind.encode() + b"\ndata: " + _json(event) + b"\n\n"


def _json(event: BaseModel) -> bytes:
    # Absent MIME types are left out, as in execute.txt's items; only at the top: a nested
    # object keeps its nulls (a process's exit_code is null while it runs, and the document
    # says the field is always there).
    dumped = event.model_dump(mode="json", by_alias=True)
    body = {name: value for name, value in dumped.items() if value is not None}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


#: Runs the execution, sending each event; returns when the execution is over.
Producer = Callable[[ObjectSendStream[BaseModel]], Awaitable[None]]


class EventStreamResponse(Response):
    """Streams the events a producer sends; a client that disconnects cancels the producer.

    The producer runs in a task group beside a task that listens for ``http.disconnect``, so
    a client that leaves mid-execution is noticed at once, not at the next write; cancelling
    the producer cancels its agent call, which tells the agent to interrupt the kernel.
    """

    media_type = NDJSON

    def __init__(
        self,
        producer: Producer,
        *,
        media_type: str,
        keepalive_s: float,
        what: str,
        last: Callable[[], BaseModel | None] = lambda: None,
        encode: Callable[[BaseModel], bytes] | None = None,
    ) -> None:
        """``what`` is streamed (for the log); ``last()`` is sent after the producer is done,
        whether it succeeded or failed (an execution's ``end_of_execution``). ``encode`` writes
        an event (by default as ``media_type`` says)."""
        # Not Response.__init__: it would announce a Content-Length for an empty body.
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers({"Cache-Control": "no-store"})
        self._producer = producer
        self._what = what
        self._last = last
        self._keepalive_s = keepalive_s
        self._encode = encode or (encode_sse if media_type == SSE else encode_ndjson)
        if media_type == SSE:
            # Nginx and friends buffer responses unless told otherwise.
            self.headers["X-Accel-Buffering"] = "no"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        disconnected = False
        try:
            async with anyio.create_task_group() as group:

                async def watch_disconnect() -> None:
                    nonlocal disconnected
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    disconnected = True
                    group.cancel_scope.cancel()

                group.start_soon(watch_disconnect)
                await self._stream(send)
                group.cancel_scope.cancel()
        except OSError:
            return  # the client went away while we wrote to it
        if not disconnected:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(self, send: Send) -> None:
        sender, receiver = anyio.create_memory_object_stream[BaseModel](_BUFFER)

        async def produce() -> None:
            async with sender:
                try:
                    await self._producer(sender)
                except SandcastleError as exc:
                    # The response has started: a failure of the platform (not of the code)
                    # can only be told as an event.
                    log.warning("streamed %s failed: %s", self._what, exc)
                    await sender.send(
                        ErrorEvent(name=type(exc).__name__, value=exc.message, traceback="")
                    )
                last = self._last()
                if last is not None:
                    await sender.send(last)

        async with anyio.create_task_group() as group, receiver:
            group.start_soon(produce)
            while True:
                event: BaseModel | None = None
                with anyio.move_on_after(self._keepalive_s):
                    try:
                        event = await receiver.receive()
                    except anyio.EndOfStream:
                        return
                await send(
                    {
                        "type": "http.response.body",
                        "body": self._encode(event or KeepaliveEvent()),
                        "more_body": True,
                    }
                )
