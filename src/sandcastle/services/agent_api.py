"""The agent API of ``sandbox-agent-api.txt``: ping and execute in a sandbox's default context.

Each sandbox gets one default Python context for this API, created on first use; its id is kept
in memory (after a server restart, or if the context is gone or its kernel died, the next call
starts a new one). Executions through this API run one at a time per sandbox, so the files an
execution wrote can be told apart: the working directory is snapshotted (``files.snapshot``)
before and after, and every regular file created or changed in between is a ``file`` event.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sandcastle.agent import layout
from sandcastle.domain.clock import utcnow
from sandcastle.domain.execution import ExecutionResult
from sandcastle.errors import NotFoundError
from sandcastle.services.activity import ActivityTracker
from sandcastle.services.auth import Principal
from sandcastle.services.executions import ExecuteRequest, ExecutionService, OnEvent
from sandcastle.services.files import FilesService
from sandcastle.services.sandboxes import SandboxService

#: Default contexts remembered; the least recently used are forgotten beyond this.
MAX_DEFAULT_CONTEXTS = 10_000
#: Errors after which a context is beyond use: the next execution starts a new one.
_FATAL_ERRORS = frozenset({"KernelDiedError", "OutOfMemoryError"})

EventType = Literal["stream", "display_data", "file", "error"]


@dataclass(frozen=True)
class AgentEvent:
    type: EventType
    timestamp: datetime
    data: dict[str, Any]


@dataclass
class AgentExecution:
    status: Literal["ok", "timeout"] = "ok"
    events: list[AgentEvent] = field(default_factory=list)


def is_timeout_event(event: dict[str, Any]) -> bool:
    # The agent reports its own timeout as an ``error`` event with no traceback; a TimeoutError
    # raised by user code always carries one.
    return (
        event.get("kind") == "error"
        and event.get("name") == "TimeoutError"
        and not event.get("traceback")
        and str(event.get("value", "")).startswith("execution exceeded its timeout")
    )


def to_agent_event(event: dict[str, Any], at: datetime) -> AgentEvent | None:
    """The document's event for a raw agent event; ``None`` for kinds it has no place for."""
    kind = event.get("kind")
    if kind in ("stdout", "stderr"):
        return AgentEvent("stream", at, {"name": kind, "text": str(event.get("text", ""))})
    if kind == "result":
        data = event.get("data")
        return AgentEvent("display_data", at, {"variants": data if isinstance(data, dict) else {}})
    if kind == "error":
        traceback = event.get("traceback")
        return AgentEvent(
            "error",
            at,
            {
                "ename": str(event.get("name", "Error")),
                "evalue": str(event.get("value", "")),
                "traceback": [str(line) for line in traceback]
                if isinstance(traceback, list)
                else [],
            },
        )
    return None


class AgentApiService:
    def __init__(
        self,
        sandboxes: SandboxService,
        executions: ExecutionService,
        files: FilesService,
        activity: ActivityTracker,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sandboxes = sandboxes
        self._executions = executions
        self._files = files
        self._activity = activity
        self._clock = clock
        self._contexts: OrderedDict[str, str] = OrderedDict()
        # A lock lives while someone holds or waits for it, so idle sandboxes cost nothing.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def ping(self, principal: Principal, sandbox_id: str) -> datetime:
        """The sandbox's last activity, once its agent has answered (so it is alive)."""
        sandbox = await self._sandboxes.get(principal, sandbox_id)
        link = await self._sandboxes.agent(sandbox)
        await link.call("ping", {})
        since = sandbox.started_at or sandbox.created_at
        return self._activity.last(sandbox_id, since)

    async def execute(
        self, principal: Principal, sandbox_id: str, code: str, timeout_s: float
    ) -> AgentExecution:
        sandbox = await self._sandboxes.get(principal, sandbox_id)
        link = await self._sandboxes.agent(sandbox)
        workdir = sandbox.cwd or layout.USER_HOME
        outcome = AgentExecution()
        fatal = False

        async def on_event(raw: dict[str, Any]) -> None:
            nonlocal fatal
            at = self._clock()
            if is_timeout_event(raw):
                outcome.status = "timeout"
                return
            if raw.get("kind") == "error" and raw.get("name") in _FATAL_ERRORS:
                fatal = True
            event = to_agent_event(raw, at)
            if event is not None:
                outcome.events.append(event)

        lock = self._locks.get(sandbox_id)
        if lock is None:
            lock = self._locks[sandbox_id] = asyncio.Lock()
        async with lock:
            before = await self._files.snapshot(link, workdir)
            request = ExecuteRequest(code=code, timeout_ms=max(1, round(timeout_s * 1000)))
            result = await self._run(principal, sandbox_id, request, on_event)
            if result.error is not None and result.error.name == "OutOfMemoryError":
                fatal = True
                outcome.events.append(
                    AgentEvent(
                        "error",
                        self._clock(),
                        {"ename": result.error.name, "evalue": result.error.value, "traceback": []},
                    )
                )
            if fatal:
                self._contexts.pop(sandbox_id, None)
            after = await self._files.snapshot(link, workdir)
        if before is not None and after is not None:
            at = self._clock()
            for path in after.changed_since(before):
                size = after.files[path][0]
                outcome.events.append(AgentEvent("file", at, {"path": path, "size": size}))
        return outcome

    async def _run(
        self,
        principal: Principal,
        sandbox_id: str,
        request: ExecuteRequest,
        on_event: OnEvent,
    ) -> ExecutionResult:
        context_id = self._contexts.get(sandbox_id)
        if context_id is not None:
            try:
                _, result = await self._executions.execute(
                    principal,
                    sandbox_id,
                    ExecuteRequest(
                        code=request.code, context_id=context_id, timeout_ms=request.timeout_ms
                    ),
                    on_event=on_event,
                )
                self._contexts.move_to_end(sandbox_id)
                return result
            except NotFoundError:
                self._contexts.pop(sandbox_id, None)  # deleted, or lost with its agent
        context_id, result = await self._executions.execute(
            principal,
            sandbox_id,
            ExecuteRequest(code=request.code, language="python", timeout_ms=request.timeout_ms),
            on_event=on_event,
        )
        self._contexts[sandbox_id] = context_id
        while len(self._contexts) > MAX_DEFAULT_CONTEXTS:
            self._contexts.popitem(last=False)
        return result
