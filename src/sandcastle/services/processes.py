"""Plain processes in a running sandbox, through its agent's ``process.*`` methods.

A process belongs to the sandbox, not to the request that started it (``docs/PROCESSES.md``):
starting one answers at once, and its output is read by connecting to it, as often as wanted,
until it exits. :meth:`ProcessService.run` does both and gathers the output within a bound.
"""

from __future__ import annotations

import base64
import codecs
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sandcastle.errors import (
    AgentError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    SandcastleError,
)
from sandcastle.runtime.channel import AgentLink, AgentRequestError
from sandcastle.services.auth import Principal
from sandcastle.services.sandboxes import SandboxService

#: What ``run`` keeps of each stream; the rest is counted in ``Gathered.truncated``.
RUN_OUTPUT_CHARS = 1 << 20
#: The shell of a ``shell`` command (Debian's templates all have it).
SHELL = "/bin/bash"

_ERRORS: dict[str, type[SandcastleError]] = {
    "invalid": InvalidRequestError,
    "not_found": InvalidRequestError,
    "permission_denied": InvalidRequestError,
    "process_not_found": NotFoundError,
    "exited": ConflictError,
    "no_stdin": ConflictError,
    "no_pty": ConflictError,
}


#: Takes each of the agent's events for a process: ``output`` (``stream``, ``data_b64``) and
#: ``dropped`` (``bytes`` the agent could not keep for a slow reader).
OnEvent = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class ProcessSpec:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    tag: str | None = None
    #: ``(cols, rows)`` of a terminal to run on, or None for pipes.
    pty: tuple[int, int] | None = None
    #: Keep stdin open for writes (a terminal always has one).
    stdin: bool = False
    #: 0: no limit.
    timeout_ms: int = 60_000

    @staticmethod
    def shell_argv(command: str) -> list[str]:
        return [SHELL, "-c", command]


@dataclass
class Output:
    """Output as it arrives: text per stream (UTF-8, decoded across chunk boundaries), raw
    bytes of a terminal, and bytes the agent dropped before they could be sent."""

    on_text: Callable[[str, str], Awaitable[None]]
    on_terminal: Callable[[bytes], Awaitable[None]]
    on_dropped: Callable[[int], Awaitable[None]]
    _decoders: dict[str, codecs.IncrementalDecoder] = field(default_factory=dict)

    async def __call__(self, event: dict[str, Any]) -> None:
        if event.get("kind") == "dropped":
            await self.on_dropped(int(event.get("bytes", 0)))
            return
        if event.get("kind") != "output":
            return
        data = base64.b64decode(str(event.get("data_b64", "")))
        stream = str(event.get("stream"))
        if stream == "pty":
            await self.on_terminal(data)
            return
        decoder = self._decoders.setdefault(
            stream, codecs.getincrementaldecoder("utf-8")("replace")
        )
        text = decoder.decode(data)
        if text:
            await self.on_text(stream, text)


@dataclass
class Gathered:
    """A finished process's exit and what ``run`` kept of its output."""

    process: dict[str, Any]
    stdout: str = ""
    stderr: str = ""
    #: Characters of each stream left out (past ``RUN_OUTPUT_CHARS``, or dropped by the agent).
    truncated: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    _terminal: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )

    async def add(self, stream: str, text: str) -> None:
        kept = getattr(self, stream)
        room = max(0, RUN_OUTPUT_CHARS - len(kept))
        setattr(self, stream, kept + text[:room])
        self.truncated[stream] += max(0, len(text) - room)

    async def add_terminal(self, data: bytes) -> None:
        await self.add("stdout", self._terminal.decode(data))

    async def add_dropped(self, count: int) -> None:
        self.truncated["stdout"] += count


class ProcessService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self._sandboxes = sandboxes

    async def start(
        self, principal: Principal, sandbox_id: str, spec: ProcessSpec
    ) -> dict[str, Any]:
        sandbox = await self._sandboxes.get(principal, sandbox_id)
        params: dict[str, Any] = {
            "argv": spec.argv,
            # The sandbox's own environment, then the process's.
            "env": {**sandbox.env, **spec.env},
            "cwd": spec.cwd,
            "tag": spec.tag,
            "stdin": spec.stdin,
            "timeout_ms": spec.timeout_ms,
        }
        if spec.pty is not None:
            params["pty"] = {"cols": spec.pty[0], "rows": spec.pty[1]}
        return await self._request(await self._sandboxes.agent(sandbox), "process.start", params)

    async def connect(
        self, principal: Principal, sandbox_id: str, pid: int, output: OnEvent
    ) -> dict[str, Any]:
        """Stream the process's output events to ``output`` until it exits (an :class:`Output`
        decodes them); its final state."""
        return await self._call(principal, sandbox_id, "process.connect", {"pid": pid}, output)

    async def run(self, principal: Principal, sandbox_id: str, spec: ProcessSpec) -> Gathered:
        """Start, wait for the exit, and gather the output (each stream within its bound)."""
        started = await self.start(principal, sandbox_id, spec)
        gathered = Gathered(started)
        output = Output(gathered.add, gathered.add_terminal, gathered.add_dropped)
        gathered.process = await self.connect(principal, sandbox_id, started["pid"], output)
        return gathered

    async def list(self, principal: Principal, sandbox_id: str) -> list[dict[str, Any]]:
        reply = await self._call(principal, sandbox_id, "process.list", {})
        return list(reply.get("processes", []))

    async def get(self, principal: Principal, sandbox_id: str, pid: int) -> dict[str, Any]:
        for process in await self.list(principal, sandbox_id):
            if process.get("pid") == pid:
                return process
        raise NotFoundError(f"no process {pid} in sandbox {sandbox_id}")

    async def write_stdin(
        self, principal: Principal, sandbox_id: str, pid: int, data: bytes
    ) -> int:
        params = {"pid": pid, "data_b64": base64.b64encode(data).decode("ascii")}
        reply = await self._call(principal, sandbox_id, "process.input", params)
        return int(reply.get("written", 0))

    async def close_stdin(self, principal: Principal, sandbox_id: str, pid: int) -> None:
        await self._call(principal, sandbox_id, "process.close_stdin", {"pid": pid})

    async def signal(
        self, principal: Principal, sandbox_id: str, pid: int, signal: str
    ) -> dict[str, Any]:
        params = {"pid": pid, "signal": signal}
        return await self._call(principal, sandbox_id, "process.signal", params)

    async def resize(
        self, principal: Principal, sandbox_id: str, pid: int, cols: int, rows: int
    ) -> dict[str, Any]:
        params = {"pid": pid, "cols": cols, "rows": rows}
        return await self._call(principal, sandbox_id, "process.resize", params)

    async def _call(
        self,
        principal: Principal,
        sandbox_id: str,
        method: str,
        params: dict[str, Any],
        on_event: OnEvent | None = None,
    ) -> dict[str, Any]:
        return await self._request(
            await self._sandboxes.agent_of(principal, sandbox_id), method, params, on_event
        )

    @staticmethod
    async def _request(
        link: AgentLink, method: str, params: dict[str, Any], on_event: OnEvent | None = None
    ) -> dict[str, Any]:
        try:
            return await link.call(method, params, on_event=on_event)
        except AgentRequestError as exc:
            raise _ERRORS.get(exc.code, AgentError)(f"{exc.code}: {exc}") from exc
