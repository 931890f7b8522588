"""Following a process for E2B's ``Start``/``Connect`` streams: a client that goes away stops
the reader, however much output is waiting (``sandcastle.e2b.process``)."""

from __future__ import annotations

import asyncio
import base64
from types import SimpleNamespace
from typing import Any, cast

from e2b.envd.process import process_pb as pb

from sandcastle.api.ratelimit import RateLimiter
from sandcastle.e2b.access import SandboxCall
from sandcastle.e2b.process import Process
from sandcastle.wiring import Services


class ChattyProcesses:
    """A process that writes far more than the stream holds, and never ends."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def connect(self, principal: Any, sandbox_id: str, pid: int, output: Any) -> Any:
        chunk = {"kind": "output", "stream": "stdout", "data_b64": base64.b64encode(b"x").decode()}
        try:
            while True:
                await output(chunk)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def test_a_client_that_leaves_a_full_stream_stops_the_reader() -> None:
    processes = ChattyProcesses()
    services = cast(Services, SimpleNamespace(processes=processes))
    call = cast(SandboxCall, SimpleNamespace(principal=None, sandbox_id="sb_00000001"))
    stream = Process(services, RateLimiter())._follow(call, 7)
    first = await anext(stream)
    assert first.event is not None and first.event.field == "start"
    await anext(stream)  # output flows
    await asyncio.sleep(0.05)  # and fills the stream's buffer
    closing = asyncio.create_task(stream.aclose())
    done, _ = await asyncio.wait({closing}, timeout=5)
    assert done, "the stream did not close: its reader waits on a full buffer"
    assert processes.cancelled.is_set()


async def test_the_stream_ends_with_the_process() -> None:
    class Short:
        async def connect(self, principal: Any, sandbox_id: str, pid: int, output: Any) -> Any:
            await output({"kind": "output", "stream": "stderr", "data_b64": "aGk="})
            return {"pid": pid, "exit_code": 3, "signal": None}

    services = cast(Services, SimpleNamespace(processes=Short()))
    call = cast(SandboxCall, SimpleNamespace(principal=None, sandbox_id="sb_00000001"))
    events = [e async for e in Process(services, RateLimiter())._follow(call, 7)]
    kinds = [e.event.field for e in events if e.event is not None]
    assert kinds == ["start", "data", "end"]
    end = events[-1].event
    assert end is not None and isinstance(end.value, pb.ProcessEvent.EndEvent)
    assert end.value.exit_code == 3 and end.value.exited is True
