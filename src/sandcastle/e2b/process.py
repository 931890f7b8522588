"""envd's ``process.Process`` Connect service over our processes service.

A process outlives the call that started it (``docs/PROCESSES.md``), as in E2B: ``Start`` and
``Connect`` stream its events while the client listens, and a client that goes away (or whose
``timeout`` ends the stream) leaves it running; ``SendSignal`` ends it. Output is raw bytes
(the SDK decodes it); ``Connect`` replays what the agent kept of it first. There is no time
limit on a process here: E2B's ``timeout`` bounds the client's connection, not the command.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal

from connectrpc.request import RequestContext
from e2b.envd.process import process_connect
from e2b.envd.process import process_pb as pb
from protobuf import Oneof

from sandcastle.e2b.access import SandboxCall
from sandcastle.e2b.errors import connect_errors
from sandcastle.e2b.sandbox_calls import EnvdRpc
from sandcastle.errors import InvalidRequestError, NotFoundError
from sandcastle.services.processes import ProcessSpec

#: Events held between the agent and a slow client before the agent's reader waits.
_BUFFER = 256
_SIGNALS = {pb.Signal.SIGTERM: "SIGTERM", pb.Signal.SIGKILL: "SIGKILL"}


def end_event(process: dict[str, Any]) -> pb.ProcessEvent:
    """E2B's end of a process: ``exited`` with its status, or killed by a signal (-1)."""
    signal = process.get("signal")
    if signal:
        end = pb.ProcessEvent.EndEvent(exit_code=-1, exited=False, status=f"signal: {signal}")
        if process.get("killed_by"):
            end.error = f"killed by {process['killed_by']}"
    else:
        code = int(process.get("exit_code") or 0)
        end = pb.ProcessEvent.EndEvent(exit_code=code, exited=True, status=f"exit status {code}")
    return pb.ProcessEvent(event=Oneof[Literal["end"], pb.ProcessEvent.EndEvent]("end", end))


def process_info(process: dict[str, Any]) -> pb.ProcessInfo:
    info = pb.ProcessInfo(
        config=pb.ProcessConfig(
            cmd=str(process.get("cmd", "")),
            args=[str(a) for a in process.get("args", [])],
            cwd=process.get("cwd") or None,
        ),
        pid=int(process["pid"]),
    )
    if process.get("tag") is not None:
        info.tag = str(process["tag"])
    return info


class Process(EnvdRpc, process_connect.Process):
    async def _pid(self, call: SandboxCall, selector: pb.ProcessSelector | None) -> int:
        choice = selector.selector if selector is not None else None
        if choice is None:
            raise InvalidRequestError("a process selector (pid or tag) is required")
        if choice.field == "pid":
            return int(choice.value)
        for process in await self._services.processes.list(call.principal, call.sandbox_id):
            if process.get("tag") == choice.value and process.get("running"):
                return int(process["pid"])
        raise NotFoundError(f"no running process tagged {choice.value!r}")

    # --- streams -----------------------------------------------------------------------------

    async def start(
        self, request: pb.StartRequest, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[pb.StartResponse]:
        config = request.process or pb.ProcessConfig()
        pty = None
        if request.pty is not None and request.pty.size is not None:
            pty = (request.pty.size.cols, request.pty.size.rows)
        spec = ProcessSpec(
            argv=[config.cmd, *config.args],
            env=dict(config.envs),
            cwd=config.cwd if config.has_field("cwd") else None,
            tag=request.tag if request.has_field("tag") else None,
            pty=pty,
            # Older clients do not say, and expect a stdin.
            stdin=request.stdin if request.has_field("stdin") else True,
            timeout_ms=0,
        )

        with connect_errors():
            call = await self._call(ctx)
            if not config.cmd:
                raise InvalidRequestError("process.cmd is required")
            process = await self._services.processes.start(call.principal, call.sandbox_id, spec)
        async with contextlib.aclosing(self._follow(call, int(process["pid"]))) as events:
            async for event in events:
                yield pb.StartResponse(event=event)

    async def connect(
        self, request: pb.ConnectRequest, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[pb.ConnectResponse]:
        with connect_errors():
            call = await self._call(ctx)
            pid = await self._pid(call, request.process)
        async with contextlib.aclosing(self._follow(call, pid)) as events:
            async for event in events:
                yield pb.ConnectResponse(event=event)

    async def _follow(self, call: SandboxCall, pid: int) -> AsyncGenerator[pb.ProcessEvent]:
        """The start event, the output as it comes, then the end; the reader is stopped (the
        process is not) when the client goes away."""
        yield pb.ProcessEvent(
            event=Oneof[Literal["start"], pb.ProcessEvent.StartEvent](
                "start", pb.ProcessEvent.StartEvent(pid=pid)
            )
        )
        queue: asyncio.Queue[pb.ProcessEvent | None] = asyncio.Queue(_BUFFER)

        async def on_event(event: dict[str, Any]) -> None:
            if event.get("kind") != "output":
                return
            data = base64.b64decode(str(event.get("data_b64", "")))
            match event.get("stream"):
                case "stdout":
                    output = pb.ProcessEvent.DataEvent(
                        output=Oneof[Literal["stdout"], bytes]("stdout", data)
                    )
                case "stderr":
                    output = pb.ProcessEvent.DataEvent(
                        output=Oneof[Literal["stderr"], bytes]("stderr", data)
                    )
                case "pty":
                    output = pb.ProcessEvent.DataEvent(
                        output=Oneof[Literal["pty"], bytes]("pty", data)
                    )
                case _:
                    return
            await queue.put(
                pb.ProcessEvent(
                    event=Oneof[Literal["data"], pb.ProcessEvent.DataEvent]("data", output)
                )
            )

        async def read() -> dict[str, Any]:
            try:
                return await self._services.processes.connect(
                    call.principal, call.sandbox_id, pid, on_event
                )
            finally:
                # The end mark, for a consumer still reading. Not when cancelled: the consumer
                # went away, and a full queue would hold this task (and its closing) for ever.
                task = asyncio.current_task()
                if task is None or not task.cancelling():
                    await queue.put(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await queue.get()) is not None:
                yield item
            with connect_errors():
                final = await reader
            yield end_event(final)
        finally:
            reader.cancel()
            # Waits for the reader without taking on its outcome (and without swallowing a
            # cancellation of this stream itself).
            await asyncio.wait({reader})

    # --- unary -------------------------------------------------------------------------------

    async def list(self, request: pb.ListRequest, ctx: RequestContext[Any, Any]) -> pb.ListResponse:
        with connect_errors():
            call = await self._call(ctx)
            found = await self._services.processes.list(call.principal, call.sandbox_id)
            return pb.ListResponse(processes=[process_info(p) for p in found if p.get("running")])

    async def send_input(
        self, request: pb.SendInputRequest, ctx: RequestContext[Any, Any]
    ) -> pb.SendInputResponse:
        with connect_errors():
            call = await self._call(ctx)
            await self._write(call, request.process, request.input)
            return pb.SendInputResponse()

    async def stream_input(
        self, request: AsyncIterator[pb.StreamInputRequest], ctx: RequestContext[Any, Any]
    ) -> pb.StreamInputResponse:
        with connect_errors():
            call = await self._call(ctx)
            selector: pb.ProcessSelector | None = None
            async for message in request:
                event = message.event.value if message.event is not None else None
                if isinstance(event, pb.StreamInputRequest.StartEvent):
                    selector = event.process
                elif isinstance(event, pb.StreamInputRequest.DataEvent):
                    if selector is None:
                        raise InvalidRequestError("input before the stream's start event")
                    await self._write(call, selector, event.input)
            return pb.StreamInputResponse()

    async def _write(
        self, call: SandboxCall, selector: pb.ProcessSelector | None, data: pb.ProcessInput | None
    ) -> None:
        pid = await self._pid(call, selector)
        if data is None or data.input is None:
            return
        await self._services.processes.write_stdin(
            call.principal, call.sandbox_id, pid, bytes(data.input.value)
        )

    async def send_signal(
        self, request: pb.SendSignalRequest, ctx: RequestContext[Any, Any]
    ) -> pb.SendSignalResponse:
        with connect_errors():
            call = await self._call(ctx)
            name = _SIGNALS.get(request.signal) if request.signal is not None else None
            if name is None:
                raise InvalidRequestError("signal must be SIGNAL_SIGTERM or SIGNAL_SIGKILL")
            pid = await self._pid(call, request.process)
            await self._services.processes.signal(call.principal, call.sandbox_id, pid, name)
            return pb.SendSignalResponse()

    async def close_stdin(
        self, request: pb.CloseStdinRequest, ctx: RequestContext[Any, Any]
    ) -> pb.CloseStdinResponse:
        with connect_errors():
            call = await self._call(ctx)
            pid = await self._pid(call, request.process)
            await self._services.processes.close_stdin(call.principal, call.sandbox_id, pid)
            return pb.CloseStdinResponse()

    async def update(
        self, request: pb.UpdateRequest, ctx: RequestContext[Any, Any]
    ) -> pb.UpdateResponse:
        with connect_errors():
            call = await self._call(ctx)
            pid = await self._pid(call, request.process)
            if request.pty is not None and request.pty.size is not None:
                size = request.pty.size
                await self._services.processes.resize(
                    call.principal, call.sandbox_id, pid, size.cols, size.rows
                )
            return pb.UpdateResponse()
