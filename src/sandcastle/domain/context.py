"""A REPL context: one Jupyter kernel inside a sandbox, addressed by id across executions."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class ContextStatus(enum.StrEnum):
    #: Its row is written; the agent is starting the kernel.
    CREATING = "creating"
    READY = "ready"
    #: The agent could not start it; never usable.
    ERROR = "error"
    #: Deleted by the user; its kernel is shut down.
    DELETED = "deleted"


#: Statuses of contexts the API shows; the others answer 404.
VISIBLE_STATUSES = frozenset({ContextStatus.CREATING, ContextStatus.READY})


@dataclass(frozen=True)
class Context:
    id: str
    sandbox_id: str
    #: The language family (``python`` or ``typescript``), whatever spelling created it.
    language: str
    #: The kernel's working directory inside the sandbox.
    cwd: str | None
    status: ContextStatus
    created_at: datetime
    #: A role the context plays for a client (the E2B default context of its language), if any.
    label: str | None = None
