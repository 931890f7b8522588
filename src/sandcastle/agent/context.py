"""A REPL context: one Jupyter kernel, its client, and what executions need to share it.

Kept apart from the registry of contexts (``kernels.py``) and the execution engine
(``execution.py``), which both work on it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.manager import AsyncKernelManager

from sandcastle.agent.kernel_output import OutputTail


class ContextGoneError(Exception):
    """The context does not exist (or was deleted) in this agent."""


class ContextSetupError(ValueError):
    """A context cannot be created as asked; ``field`` names the parameter at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class KernelManager(AsyncKernelManager):
    """A kernel manager whose kernel gets none of the agent's descriptors for its own output:
    stdout goes nowhere, stderr into a drained pipe whose tail says why a kernel died."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stderr_tail = OutputTail()


#: How long a kernel may take to answer its first kernel_info. A start takes a second or two
#: (gVisor, a loaded machine: a few more); one that has not answered in this long is stuck —
#: typically in a sandbox whose memory is full — and the caller is better told so than held.
KERNEL_READY_S = 30


@dataclass
class Context:
    id: str
    language: str
    cwd: str
    km: KernelManager
    client: Any
    #: Held by an execution from start until the context is settled again.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    restart_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    dead_reason: str | None = None
    #: Bumped by every kernel restart: an execution that sees it change lost its kernel.
    generation: int = 0
    #: Bumped by every interrupt request, so an execution can tell it was interrupted.
    interrupts: int = 0


async def restart_kernel(ctx: Context) -> None:
    async with ctx.restart_lock:
        ctx.generation += 1
        await ctx.km.restart_kernel(now=True)
        await ctx.client.wait_for_ready(timeout=KERNEL_READY_S)
        ctx.dead_reason = None


async def stop_kernel(km: KernelManager, client: Any) -> None:
    client.stop_channels()
    try:
        await km.shutdown_kernel(now=True)
    except Exception:  # noqa: BLE001 - a kernel that is already gone needs no shutdown
        pass
    km.stderr_tail.close()


def kernel_pid(km: AsyncKernelManager) -> int | None:
    pid = getattr(getattr(km, "provisioner", None), "pid", None)
    return pid if isinstance(pid, int) and pid > 0 else None
