"""Running code in a sandbox's REPL contexts (``execute.txt``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sandcastle.domain import ids
from sandcastle.domain.execution import ExecutionError, ExecutionResult
from sandcastle.errors import FieldError, NotFoundError
from sandcastle.runtime.channel import AgentLink, AgentRequestError
from sandcastle.services.auth import Principal
from sandcastle.services.sandboxes import SandboxService
from sandcastle.store.db import Database
from sandcastle.store.models import ContextRow

#: Every spelling ``execute.txt`` accepts, mapped to the language family that runs it.
LANGUAGES: dict[str, str] = {
    "python": "python",
    "py": "python",
    "python3": "python",
    "typescript": "typescript",
    "ts": "typescript",
    "javascript": "typescript",
    "js": "typescript",
    "bun": "typescript",
    "node": "typescript",
}
#: Language families whose kernel this server's templates carry.
AVAILABLE = frozenset({"python"})

OnEvent = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class ExecuteRequest:
    code: str
    context_id: str | None = None
    language: str | None = None
    env_vars: dict[str, str] | None = None
    timeout_ms: int = 30_000


def normalise_language(language: str | None) -> str:
    family = LANGUAGES.get((language or "python").lower())
    if family is None:
        raise FieldError(
            "language", f"unsupported language {language!r}; use one of {sorted(LANGUAGES)}"
        )
    if family not in AVAILABLE:
        raise FieldError("language", f"language {language!r} is not available on this server yet")
    return family


class ExecutionService:
    def __init__(self, db: Database, sandboxes: SandboxService) -> None:
        self._db = db
        self._sandboxes = sandboxes

    async def execute(
        self,
        principal: Principal,
        sandbox_id: str,
        request: ExecuteRequest,
        *,
        on_event: OnEvent | None = None,
    ) -> tuple[str, ExecutionResult]:
        sandbox = await self._sandboxes.get(principal, sandbox_id)
        sandbox.require_running()
        link = await self._sandboxes.agent(sandbox)
        if request.context_id is None:
            language = normalise_language(request.language)
            context_id = await self._create_context(link, sandbox_id, language, sandbox.cwd)
        else:
            context_id = request.context_id
            await self._check_context(sandbox_id, context_id, request.language)

        result = ExecutionResult()

        async def collect(event: dict[str, Any]) -> None:
            result.add_event(event)
            if on_event is not None:
                await on_event(event)

        params = {
            "context_id": context_id,
            "code": request.code,
            "timeout_ms": request.timeout_ms,
            "env_vars": request.env_vars or {},
        }
        try:
            reply = await link.call("execute", params, on_event=collect)
        except AgentRequestError as exc:
            if exc.code == "context_not_found":
                raise NotFoundError(
                    f"context {context_id} not found in sandbox {sandbox_id}"
                ) from exc
            raise
        if result.execution_count is None and isinstance(reply.get("execution_count"), int):
            result.execution_count = reply["execution_count"]
        if reply.get("status") == "died":
            memory_mb = await self._sandboxes.record_oom(sandbox_id)
            if memory_mb is not None:
                result.error = ExecutionError(
                    name="OutOfMemoryError",
                    value=(
                        f"the context's kernel was killed for exceeding the sandbox's memory limit"
                        f" of {memory_mb} MB; its state is lost, create a new context"
                    ),
                    traceback="",
                )
        return context_id, result

    async def _create_context(
        self, link: AgentLink, sandbox_id: str, language: str, cwd: str | None
    ) -> str:
        context_id = ids.new_context_id()
        async with self._db.session() as session:
            session.add(
                ContextRow(
                    id=context_id,
                    sandbox_id=sandbox_id,
                    language=language,
                    cwd=cwd,
                    status="creating",
                    created_at=datetime.now(UTC),
                )
            )
        await link.call(
            "context.create", {"context_id": context_id, "language": language, "cwd": cwd}
        )
        async with self._db.session() as session:
            row = await session.get(ContextRow, context_id)
            if row is not None:
                row.status = "ready"
        return context_id

    async def _check_context(self, sandbox_id: str, context_id: str, language: str | None) -> None:
        async with self._db.session() as session:
            row = await session.get(ContextRow, context_id)
        if row is None or row.sandbox_id != sandbox_id:
            raise NotFoundError(f"context {context_id} not found in sandbox {sandbox_id}")
        if language is not None and normalise_language(language) != row.language:
            raise FieldError(
                "language", f"context {context_id} runs {row.language}, not {language!r}"
            )
