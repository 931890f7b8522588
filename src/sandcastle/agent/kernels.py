"""REPL contexts as Jupyter kernels, driven through ``jupyter_client``.

One kernel per context. A spare kernel per language is kept started so that creating a context
does not wait ~0.6 s for a kernel to boot. Kernel failures are translated here into execution
events (``error``), never into agent crashes.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

#: Kernelspec name per language family.
KERNEL_NAMES = {"python": "python3"}
#: After a timeout interrupt, how long the kernel has to go idle before it is restarted.
INTERRUPT_GRACE_S = 3.0
#: Per stream, the characters of output one execution may return; the rest is dropped.
MAX_STREAM_CHARS = 1_000_000
_POLL_S = 0.2

Emit = Callable[[dict[str, Any]], Awaitable[None]]

# Applies environment variables sent over the kernel's stdin channel and prints the previous
# values, so the caller can restore them. The variables travel as data: never spliced into code.
_ENV_SWAP_CODE = """\
def __sandcastle_env_swap():
    import json, os
    new = json.loads(input())
    old = {k: os.environ.get(k) for k in new}
    for k, v in new.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    print(json.dumps(old))
__sandcastle_env_swap()
del __sandcastle_env_swap
"""


class ContextGoneError(Exception):
    """The context does not exist (or was deleted) in this agent."""


@dataclass
class Context:
    id: str
    language: str
    cwd: str
    km: AsyncKernelManager
    client: Any
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    dead_reason: str | None = None


@dataclass
class _Outcome:
    status: str = "ok"  # ok | error | timeout | died
    execution_count: int | None = None
    restarted: bool = False
    truncated_chars: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})


class Kernels:
    """All contexts of one sandbox."""

    def __init__(self, *, jupyter_dir: str, default_cwd: str, kernel_env: dict[str, str]) -> None:
        self._spec_manager = KernelSpecManager(kernel_dirs=[os.path.join(jupyter_dir, "kernels")])
        self._runtime_dir = tempfile.mkdtemp(prefix="sandcastle-kernels-")
        self._default_cwd = default_cwd
        self._kernel_env = kernel_env
        self._contexts: dict[str, Context] = {}
        self._spares: dict[str, asyncio.Task[tuple[AsyncKernelManager, Any]]] = {}

    @property
    def context_ids(self) -> list[str]:
        return list(self._contexts)

    def keep_spare(self, language: str) -> None:
        """Start a spare kernel for ``language`` in the background if none is pending."""
        if language not in self._spares:
            self._spares[language] = asyncio.create_task(self._start(language, self._default_cwd))

    async def _start(self, language: str, cwd: str) -> tuple[AsyncKernelManager, Any]:
        # IPC transport: the kernel's sockets are files, not TCP ports on the sandbox's loopback.
        km = AsyncKernelManager(
            kernel_name=KERNEL_NAMES[language],
            kernel_spec_manager=self._spec_manager,
            transport="ipc",
            ip=os.path.join(self._runtime_dir, f"kernel-{uuid.uuid4().hex[:8]}"),
        )
        await km.start_kernel(cwd=cwd, env=dict(self._kernel_env))
        client = km.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=60)
        except Exception:
            client.stop_channels()
            await km.shutdown_kernel(now=True)
            raise
        return km, client

    async def create(self, context_id: str, language: str, cwd: str | None) -> Context:
        if context_id in self._contexts:
            return self._contexts[context_id]
        if language not in KERNEL_NAMES:
            raise ValueError(f"unsupported language {language!r}")
        want_cwd = cwd or self._default_cwd
        os.makedirs(want_cwd, exist_ok=True)
        spare = self._spares.pop(language, None) if want_cwd == self._default_cwd else None
        km, client = None, None
        if spare is not None:
            try:
                km, client = await spare
            except Exception:
                km = None  # a failed spare is not fatal: start one directly
        if km is None:
            km, client = await self._start(language, want_cwd)
        self.keep_spare(language)
        ctx = Context(id=context_id, language=language, cwd=want_cwd, km=km, client=client)
        self._contexts[context_id] = ctx
        return ctx

    def get(self, context_id: str) -> Context:
        try:
            return self._contexts[context_id]
        except KeyError:
            raise ContextGoneError(context_id) from None

    async def delete(self, context_id: str) -> None:
        ctx = self._contexts.pop(context_id, None)
        if ctx is not None:
            await _stop(ctx.km, ctx.client)

    async def aclose(self) -> None:
        for context_id in list(self._contexts):
            await self.delete(context_id)
        for task in self._spares.values():
            task.cancel()
        self._spares.clear()

    async def execute(
        self,
        context_id: str,
        code: str,
        *,
        timeout_s: float,
        env_vars: dict[str, str],
        emit: Emit,
    ) -> dict[str, Any]:
        """Run ``code`` in a context, emitting events as they come; return the reply result."""
        ctx = self.get(context_id)
        async with ctx.lock:
            if ctx.dead_reason is not None:
                await emit(_kernel_died_event(ctx.dead_reason))
                return {"status": "died", "execution_count": None, "restarted": False}
            previous: dict[str, str | None] | None = None
            if env_vars:
                previous = await _swap_env(ctx, dict(env_vars))
            try:
                outcome = await _run(ctx, code, timeout_s, emit)
            finally:
                if previous is not None and ctx.dead_reason is None and not _cancelled():
                    await _swap_env(ctx, previous)
            return {
                "status": outcome.status,
                "execution_count": outcome.execution_count,
                "restarted": outcome.restarted,
                "truncated_chars": outcome.truncated_chars,
            }

    async def interrupt(self, context_id: str) -> None:
        await self.get(context_id).km.interrupt_kernel()


def _cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _stop(km: AsyncKernelManager, client: Any) -> None:
    client.stop_channels()
    try:
        await km.shutdown_kernel(now=True)
    except Exception:  # noqa: BLE001 - a kernel that is already gone needs no shutdown
        pass


def _kernel_died_event(reason: str) -> dict[str, Any]:
    return {"kind": "error", "name": "KernelDiedError", "value": reason, "traceback": []}


async def _exit_reason(km: AsyncKernelManager) -> str:
    code: int | None = None
    provisioner = getattr(km, "provisioner", None)
    if provisioner is not None:
        try:
            code = await provisioner.poll()
        except Exception:  # noqa: BLE001 - the reason is best effort
            code = None
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited ({code})"
    return f"the context's kernel process {how}; its state is lost, create a new context"


async def _run(ctx: Context, code: str, timeout_s: float, emit: Emit) -> _Outcome:
    client = ctx.client
    outcome = _Outcome()
    sent_chars = {"stdout": 0, "stderr": 0}
    msg_id = client.execute(code, store_history=True, allow_stdin=False, stop_on_error=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    grace_deadline: float | None = None
    try:
        while True:
            now = loop.time()
            if grace_deadline is None and now >= deadline:
                outcome.status = "timeout"
                await ctx.km.interrupt_kernel()
                grace_deadline = now + INTERRUPT_GRACE_S
            try:
                msg = await client.get_iopub_msg(timeout=_POLL_S)
            except queue.Empty:
                if not await ctx.km.is_alive():
                    ctx.dead_reason = await _exit_reason(ctx.km)
                    await emit(_kernel_died_event(ctx.dead_reason))
                    outcome.status = "died"
                    return outcome
                if grace_deadline is not None and loop.time() >= grace_deadline:
                    # The kernel ignored SIGINT (e.g. stuck in C code): restart it. The context
                    # keeps its id but loses its state; the reply says so.
                    await ctx.km.restart_kernel(now=True)
                    await ctx.client.wait_for_ready(timeout=60)
                    outcome.restarted = True
                    await emit(_timeout_event(timeout_s, restarted=True))
                    return outcome
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            content = msg["content"]
            if kind == "status" and content.get("execution_state") == "idle":
                break
            if kind == "stream":
                name = "stderr" if content.get("name") == "stderr" else "stdout"
                text = str(content.get("text", ""))
                room = MAX_STREAM_CHARS - sent_chars[name]
                if room <= 0:
                    outcome.truncated_chars[name] += len(text)
                    continue
                if len(text) > room:
                    outcome.truncated_chars[name] += len(text) - room
                    text = text[:room]
                sent_chars[name] += len(text)
                await emit({"kind": name, "text": text})
            elif kind in ("execute_result", "display_data"):
                await emit(
                    {
                        "kind": "result",
                        "is_primary": kind == "execute_result",
                        "data": content.get("data", {}),
                    }
                )
            elif kind == "error":
                if outcome.status == "timeout":
                    continue  # the KeyboardInterrupt we caused is reported as a timeout below
                outcome.status = "error"
                await emit(
                    {
                        "kind": "error",
                        "name": str(content.get("ename", "Error")),
                        "value": str(content.get("evalue", "")),
                        "traceback": [str(line) for line in content.get("traceback", [])],
                    }
                )
            elif kind == "execute_input":
                count = content.get("execution_count")
                if isinstance(count, int):
                    outcome.execution_count = count
                    await emit({"kind": "execution_count", "value": count})
    except asyncio.CancelledError:
        # The host gave up on this execution (client left): stop the kernel's work, shielded so
        # the interrupt is sent even though we are being cancelled.
        await asyncio.shield(ctx.km.interrupt_kernel())
        raise
    for name, dropped in outcome.truncated_chars.items():
        if dropped:
            marker = f"\n[output truncated: {dropped} characters of {name} omitted]\n"
            await emit({"kind": name, "text": marker})
    if outcome.status == "timeout":
        await emit(_timeout_event(timeout_s, restarted=False))
    await _drain_shell_reply(client, msg_id, outcome)
    return outcome


def _timeout_event(timeout_s: float, *, restarted: bool) -> dict[str, Any]:
    after = (
        " The kernel did not respond to the interrupt and was restarted; the context's state is"
        " lost."
        if restarted
        else " The execution was interrupted; the context's earlier state is kept."
    )
    return {
        "kind": "error",
        "name": "TimeoutError",
        "value": f"execution exceeded its timeout of {timeout_s:g} s.{after}",
        "traceback": [],
    }


async def _drain_shell_reply(client: Any, msg_id: str, outcome: _Outcome) -> None:
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        try:
            reply = await client.get_shell_msg(timeout=max(0.01, end - time.monotonic()))
        except queue.Empty:
            return
        if reply.get("parent_header", {}).get("msg_id") == msg_id:
            count = reply["content"].get("execution_count")
            if outcome.execution_count is None and isinstance(count, int):
                outcome.execution_count = count
            return


async def _swap_env(ctx: Context, values: dict[str, Any]) -> dict[str, str | None]:
    """Set environment variables in the kernel; return their previous values."""
    client = ctx.client
    msg_id = client.execute(_ENV_SWAP_CODE, silent=True, store_history=False, allow_stdin=True)
    payload = json.dumps(values)
    previous: dict[str, str | None] = {}
    answered = False
    end = time.monotonic() + 10.0
    while time.monotonic() < end:
        if not answered:
            try:
                request = await client.get_stdin_msg(timeout=_POLL_S)
            except queue.Empty:
                continue
            if request.get("parent_header", {}).get("msg_id") == msg_id:
                client.input(payload)
                answered = True
            continue
        try:
            msg = await client.get_iopub_msg(timeout=_POLL_S)
        except queue.Empty:
            continue
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["header"]["msg_type"]
        if kind == "stream":
            previous = json.loads(msg["content"]["text"])
        elif kind == "status" and msg["content"].get("execution_state") == "idle":
            break
    await _drain_shell_reply(client, msg_id, _Outcome())
    return previous
