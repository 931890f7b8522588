"""Running code in a sandbox's REPL contexts (``execute.txt``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sandcastle.domain.execution import ExecutionResult
from sandcastle.domain.languages import normalise_language
from sandcastle.domain.sandbox import Sandbox
from sandcastle.errors import AgentUnavailableError, FieldError, NotFoundError
from sandcastle.runtime.channel import AgentLink, AgentRequestError
from sandcastle.services.auth import Principal
from sandcastle.services.contexts import ContextService
from sandcastle.services.sandboxes import SandboxService

#: Beyond an execution's own timeout, how long the agent may take to interrupt, restart a
#: stuck kernel and answer, before the host gives up on it.
AGENT_ANSWER_MARGIN_S = 90.0

OnEvent = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class ExecuteRequest:
    code: str
    context_id: str | None = None
    language: str | None = None
    env_vars: dict[str, str] | None = None
    timeout_ms: int = 30_000


@dataclass(frozen=True)
class PreparedExecution:
    """An execution whose sandbox, context and input are checked: it only has to run."""

    sandbox: Sandbox
    link: AgentLink
    context_id: str
    request: ExecuteRequest


def check_env_vars(env_vars: dict[str, str] | None) -> None:
    """Names and values any process environment can hold (they reach the kernel as data)."""
    for name, value in (env_vars or {}).items():
        if not name or "=" in name or "\0" in name:
            raise FieldError("env_vars", f"invalid environment variable name {name!r}")
        if "\0" in value:
            raise FieldError("env_vars", f"the value of {name} contains a NUL character")


class ExecutionService:
    def __init__(self, sandboxes: SandboxService, contexts: ContextService) -> None:
        self._sandboxes = sandboxes
        self._contexts = contexts

    async def execute(
        self,
        principal: Principal,
        sandbox_id: str,
        request: ExecuteRequest,
        *,
        on_event: OnEvent | None = None,
    ) -> tuple[str, ExecutionResult]:
        prepared = await self.prepare(principal, sandbox_id, request)
        return prepared.context_id, await self.run(prepared, on_event=on_event)

    async def prepare(
        self, principal: Principal, sandbox_id: str, request: ExecuteRequest
    ) -> PreparedExecution:
        """Check everything and resolve (or create) the context; nothing runs yet.

        Every request error is raised here, so a streaming caller can still answer with an
        HTTP error before its stream starts.
        """
        sandbox = await self._sandboxes.get(principal, sandbox_id)
        check_env_vars(request.env_vars)
        if request.context_id is None:
            language = normalise_language(request.language)
            sandbox.require_running()
            link = await self._sandboxes.agent(sandbox)
            context = await self._contexts.start(link, sandbox, language, sandbox.cwd)
        else:
            context = await self._contexts.find(sandbox_id, request.context_id)
            if request.language is not None and normalise_language(request.language) != (
                context.language
            ):
                raise FieldError(
                    "language",
                    f"context {context.id} runs {context.language}, not {request.language!r}",
                )
            sandbox.require_running()
            link = await self._sandboxes.agent(sandbox)
        return PreparedExecution(sandbox, link, context.id, request)

    async def run(
        self, prepared: PreparedExecution, *, on_event: OnEvent | None = None
    ) -> ExecutionResult:
        """Run a prepared execution, passing each agent event to ``on_event`` as it comes."""
        sandbox, context_id, request = prepared.sandbox, prepared.context_id, prepared.request
        result = ExecutionResult()

        async def collect(event: dict[str, Any]) -> None:
            result.add_event(event)
            if on_event is not None:
                await on_event(event)

        params = {
            "context_id": context_id,
            "code": request.code,
            "timeout_ms": request.timeout_ms,
            # The sandbox's own environment, then the execution's.
            "env_vars": {**sandbox.env, **(request.env_vars or {})},
        }
        # Only the cgroup's counter here (no database on the hot path); it is recorded on the
        # sandbox only if the execution died.
        oom_before = (await self._sandboxes.runtime.poll(sandbox.id)).oom_kills
        # The agent enforces timeout_ms itself (interrupt, then restart after a grace period);
        # this host-side bound only catches an agent that stopped answering altogether.
        deadline_s = request.timeout_ms / 1000 + AGENT_ANSWER_MARGIN_S
        try:
            async with asyncio.timeout(deadline_s):
                reply = await prepared.link.call("execute", params, on_event=collect)
        except TimeoutError as exc:
            raise AgentUnavailableError(
                f"the agent of sandbox {sandbox.id} did not answer within {deadline_s:g} s"
            ) from exc
        except AgentRequestError as exc:
            if exc.code == "context_not_found":
                raise NotFoundError(
                    f"context {context_id} not found in sandbox {sandbox.id}"
                ) from exc
            raise
        if result.execution_count is None and isinstance(reply.get("execution_count"), int):
            result.execution_count = reply["execution_count"]
        if reply.get("status") == "died":
            if await self._sandboxes.observe_oom(sandbox.id) > oom_before:
                memory_mb = sandbox.config.memory_mb
                # An event like the agent's, so a stream tells it too; it supersedes the
                # KernelDiedError before it.
                await collect(
                    {
                        "kind": "error",
                        "name": "OutOfMemoryError",
                        "value": (
                            f"the context's kernel was killed for exceeding the sandbox's memory"
                            f" limit of {memory_mb} MB; its state is lost, create a new context"
                        ),
                        "traceback": [],
                    }
                )
        return result
