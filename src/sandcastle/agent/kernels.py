"""REPL contexts as Jupyter kernels, driven through ``jupyter_client``.

One kernel per context: ipykernel for Python, Deno's kernel for TypeScript/JavaScript. A spare
kernel per language is kept started so that creating a context does not wait ~0.6-1 s for a
kernel to boot: the agent starts the Python spare at once, and a language's next spare whenever a
context is created, unless the host says not to (a Deno kernel holds ~175 MB, too much to keep
idle in a small sandbox). Kernel failures are translated here into execution events
(``error``), never into agent crashes.

A context is *settled* between executions: an execution the host cancels is interrupted and
waited for (or the kernel restarted) before the context's lock is released, and its
``env_vars`` are restored, so the next execution finds the state an interrupt leaves.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import queue
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from sandcastle.agent.kernel_output import OutputTail
from sandcastle.agent.memguard import Victim

log = logging.getLogger("sandcastle.agent")

#: Kernelspec name per language family.
KERNEL_NAMES = {"python": "python3", "typescript": "deno"}
#: ZeroMQ transport per language family. IPC keeps a kernel's sockets off the loopback; Deno's
#: kernel binds with ``Deno.listen`` and can only use TCP, on 127.0.0.1 of the sandbox's own
#: network namespace. Either way every message is signed with the connection file's key.
KERNEL_TRANSPORTS = {"python": "ipc", "typescript": "tcp"}
#: Environment a language's kernels get on top of the sandbox's. The sandbox says
#: ``MPLBACKEND=Agg`` for scripts; in a kernel, figures must become ``display_data`` (PNG).
KERNEL_ENV = {"python": {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}}
#: After a timeout interrupt, how long the kernel has to go idle before it is restarted.
INTERRUPT_GRACE_S = 3.0
#: Per stream, the characters of output one execution may return; the rest is dropped.
MAX_STREAM_CHARS = 1_000_000
_POLL_S = 0.2

#: Languages whose kernel may publish an execution's output *after* its ``idle`` status, and
#: under the parent header of whatever request is current when it does: Deno's kernel forwards
#: its REPL's output (console, results, displays) to IOPub on a queue of its own. After each
#: request the agent pushes a marker through that queue; once the marker is out, so is all
#: output before it.
_FLUSHED_LANGUAGES = frozenset({"typescript"})
_FLUSH_MSG_TYPE = "sandcastle_flush"
_FLUSH_CODE = f'await Deno.jupyter.broadcast("{_FLUSH_MSG_TYPE}", {{}});'
_FLUSH_TIMEOUT_S = 2.0

Emit = Callable[[dict[str, Any]], Awaitable[None]]

#: How long applying or restoring ``env_vars`` may take before the execution fails.
ENV_SWAP_TIMEOUT_S = 10.0

# Per language: constant code that reads environment variables as JSON from the kernel's stdin
# channel (an input request), applies them (null unsets) and prints the previous values, so the
# caller can restore them. The variables travel as data: never spliced into code.
_ENV_SWAP_CODE = {
    "python": """\
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
""",
    # prompt() is Deno's input request; Deno.env is what process.env reads too.
    "typescript": """\
(() => {
  const values = JSON.parse(prompt("") ?? "null");
  const previous = {};
  for (const [key, value] of Object.entries(values)) {
    previous[key] = Deno.env.get(key) ?? null;
    if (value === null) Deno.env.delete(key);
    else Deno.env.set(key, value);
  }
  console.log(JSON.stringify(previous));
})();
""",
}


class ContextGoneError(Exception):
    """The context does not exist (or was deleted) in this agent."""


class ContextSetupError(ValueError):
    """A context cannot be created as asked; ``field`` names the parameter at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class EnvSwapError(Exception):
    """The kernel did not apply (or restore) an execution's environment variables."""


class KernelManager(AsyncKernelManager):
    """A kernel manager whose kernel gets none of the agent's descriptors for its own output:
    stdout goes nowhere, stderr into a drained pipe whose tail says why a kernel died."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stderr_tail = OutputTail()


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


@dataclass
class _Outcome:
    status: str = "ok"  # ok | error | timeout | died | restarted
    msg_id: str | None = None
    #: The shell reply's content, once drained.
    reply: dict[str, Any] = field(default_factory=dict)
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
        self._spares: dict[str, asyncio.Task[tuple[KernelManager, Any]]] = {}

    @property
    def context_ids(self) -> list[str]:
        return list(self._contexts)

    def rename(self, ids: dict[str, str]) -> None:
        """Give contexts new ids (``old -> new``); unknown old ids are ignored."""
        renamed = {}
        for old, new in ids.items():
            ctx = self._contexts.pop(old, None)
            if ctx is not None:
                ctx.id = new
                renamed[new] = ctx
        self._contexts.update(renamed)

    async def ready_spares(self, languages: list[str]) -> None:
        """Start a spare kernel of each language and wait until all are ready."""
        for language in languages:
            if language not in KERNEL_NAMES:
                raise ContextSetupError("language", f"unsupported language {language!r}")
            self.keep_spare(language)
        for language in languages:
            await self._spares[language]

    def keep_spare(self, language: str) -> None:
        """Start a spare kernel for ``language`` in the background if none is pending."""
        if language not in self._spares:
            self._spares[language] = asyncio.create_task(self._start(language, self._default_cwd))

    async def _start(self, language: str, cwd: str) -> tuple[KernelManager, Any]:
        transport = KERNEL_TRANSPORTS[language]
        if transport == "ipc":
            # The kernel's sockets are files in the agent's private runtime directory.
            ip = os.path.join(self._runtime_dir, f"kernel-{uuid.uuid4().hex[:8]}")
        else:
            ip = "127.0.0.1"
        km = KernelManager(
            kernel_name=KERNEL_NAMES[language],
            kernel_spec_manager=self._spec_manager,
            transport=transport,
            ip=ip,
        )
        try:
            await km.start_kernel(
                cwd=cwd,
                env={**self._kernel_env, **KERNEL_ENV.get(language, {})},
                stdout=subprocess.DEVNULL,
                stderr=km.stderr_tail.write_fd,
            )
        except BaseException:
            km.stderr_tail.close()
            raise
        client = km.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=60)
        except Exception:
            client.stop_channels()
            await km.shutdown_kernel(now=True)
            raise
        return km, client

    async def create(
        self, context_id: str, language: str, cwd: str | None, *, keep_spare: bool = True
    ) -> Context:
        if context_id in self._contexts:
            return self._contexts[context_id]
        if language not in KERNEL_NAMES:
            raise ContextSetupError("language", f"unsupported language {language!r}")
        want_cwd = cwd or self._default_cwd
        if not os.path.isabs(want_cwd) or "\0" in want_cwd:
            raise ContextSetupError("cwd", f"cwd must be an absolute path, not {want_cwd!r}")
        try:
            os.makedirs(want_cwd, exist_ok=True)
        except OSError as exc:
            raise ContextSetupError(
                "cwd", f"cannot use {want_cwd!r} as cwd: {exc.strerror}"
            ) from exc
        spare = self._spares.pop(language, None) if want_cwd == self._default_cwd else None
        km, client = None, None
        if spare is not None:
            try:
                km, client = await spare
            except Exception:  # noqa: BLE001 - a failed spare is not fatal: start one directly
                km = None
        if km is None:
            km, client = await self._start(language, want_cwd)
        if keep_spare:
            self.keep_spare(language)
        ctx = Context(id=context_id, language=language, cwd=want_cwd, km=km, client=client)
        self._contexts[context_id] = ctx
        return ctx

    def victims(self) -> list[Victim]:
        """Every started kernel, for the memory guard: the contexts' and the spares'."""
        # A kernel being restarted is still starting: not sized yet, and no one's memory.
        found = [
            Victim(pid, lambda: None)
            for ctx in self._contexts.values()
            if ctx.dead_reason is None
            and not ctx.restart_lock.locked()
            and (pid := _kernel_pid(ctx.km))
        ]
        for language, task in list(self._spares.items()):
            if task.done() and not task.cancelled() and task.exception() is None:
                pid = _kernel_pid(task.result()[0])
                if pid:
                    # A killed spare is forgotten (the next context starts its own kernel).
                    found.append(Victim(pid, functools.partial(self._forget_spare, language)))
        return found

    def _forget_spare(self, language: str) -> None:
        task = self._spares.pop(language, None)
        if task is not None and task.done() and task.exception() is None:
            km, client = task.result()
            asyncio.get_running_loop().create_task(_stop(km, client))

    def get(self, context_id: str) -> Context:
        try:
            return self._contexts[context_id]
        except KeyError:
            raise ContextGoneError(context_id) from None

    async def delete(self, context_id: str) -> None:
        ctx = self._contexts.pop(context_id, None)
        if ctx is not None:
            # An execution still running reports this instead of a generic kernel death.
            ctx.dead_reason = "the context was deleted"
            await _stop(ctx.km, ctx.client)

    async def restart(self, context_id: str) -> None:
        """Replace the context's kernel with a fresh one (same id, cwd and language).

        Does not wait for a running execution: that one ends with ``ContextRestartedError``.
        """
        await _restart(self.get(context_id))

    async def interrupt(self, context_id: str) -> None:
        """Interrupt whatever the context's kernel is running; a no-op when it is idle."""
        ctx = self.get(context_id)
        if ctx.dead_reason is None:
            ctx.interrupts += 1
            await ctx.km.interrupt_kernel()

    async def aclose(self) -> None:
        for context_id in list(self._contexts):
            await self.delete(context_id)
        for task in self._spares.values():
            if task.done() and not task.cancelled() and task.exception() is None:
                await _stop(*task.result())
            else:
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
            generation = ctx.generation
            previous: dict[str, str | None] | None = None
            if env_vars:
                try:
                    previous = await _swap_env(ctx, dict(env_vars))
                except EnvSwapError as exc:
                    await emit(_error_event("EnvironmentError", str(exc)))
                    return {"status": "error", "execution_count": None, "restarted": False}
            outcome = _Outcome()
            try:
                await _run(ctx, code, timeout_s, emit, outcome)
            except asyncio.CancelledError:
                # The host gave up on this execution (its client left). Settle the context
                # before the lock is released, shielded since we are being cancelled.
                await _shielded(_settle(ctx, outcome.msg_id, previous, generation))
                raise
            if previous is not None:
                await _restore_env(ctx, previous, generation)
            return {
                "status": outcome.status,
                "execution_count": outcome.execution_count,
                "restarted": outcome.restarted,
                "truncated_chars": outcome.truncated_chars,
            }


async def _shielded(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to its end even if the caller is cancelled (again) meanwhile."""
    task = asyncio.ensure_future(work)
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            continue
        except Exception:  # settling is best effort; the kernel may be gone
            log.exception("settling a cancelled execution failed")


async def _settle(
    ctx: Context, msg_id: str | None, previous: dict[str, str | None] | None, generation: int
) -> None:
    """Interrupt a cancelled execution and wait until its kernel is idle, else restart it."""
    if msg_id is not None and ctx.dead_reason is None and ctx.generation == generation:
        await ctx.km.interrupt_kernel()
        if await _wait_idle(ctx, msg_id, INTERRUPT_GRACE_S):
            await _drain_shell_reply(ctx.client, msg_id, _Outcome())
            # Late output of the abandoned execution must not surface in the next one.
            await _flush_late_output(ctx, msg_id, _discard)
        elif await ctx.km.is_alive() and ctx.generation == generation:
            # Deno cannot interrupt a pending await; ipykernel can ignore SIGINT.
            await _restart(ctx)
    if previous is not None:
        await _restore_env(ctx, previous, generation)


async def _discard(msg: dict[str, Any]) -> None:
    pass


async def _wait_idle(ctx: Context, msg_id: str, timeout_s: float) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while loop.time() < end:
        try:
            msg = await ctx.client.get_iopub_msg(timeout=_POLL_S)
        except queue.Empty:
            if not await ctx.km.is_alive():
                return False
            continue
        if (
            msg.get("parent_header", {}).get("msg_id") == msg_id
            and msg["header"]["msg_type"] == "status"
            and msg["content"].get("execution_state") == "idle"
        ):
            return True
    return False


async def _restart(ctx: Context) -> None:
    async with ctx.restart_lock:
        ctx.generation += 1
        await ctx.km.restart_kernel(now=True)
        await ctx.client.wait_for_ready(timeout=60)
        ctx.dead_reason = None


async def _restore_env(ctx: Context, previous: dict[str, str | None], generation: int) -> None:
    # A restarted or dead kernel has no trace of the execution's variables left.
    if ctx.dead_reason is not None or ctx.generation != generation:
        return
    try:
        await _swap_env(ctx, previous)
    except EnvSwapError:
        log.warning("context %s: restoring env_vars failed", ctx.id)


async def _stop(km: KernelManager, client: Any) -> None:
    client.stop_channels()
    try:
        await km.shutdown_kernel(now=True)
    except Exception:  # noqa: BLE001 - a kernel that is already gone needs no shutdown
        pass
    km.stderr_tail.close()


def _error_event(name: str, value: str) -> dict[str, Any]:
    return {"kind": "error", "name": name, "value": value, "traceback": []}


def _kernel_pid(km: AsyncKernelManager) -> int | None:
    pid = getattr(getattr(km, "provisioner", None), "pid", None)
    return pid if isinstance(pid, int) and pid > 0 else None


def _kernel_died_event(reason: str) -> dict[str, Any]:
    return _error_event("KernelDiedError", reason)


async def _exit_reason(km: KernelManager) -> str:
    code: int | None = None
    provisioner = getattr(km, "provisioner", None)
    if provisioner is not None:
        try:
            code = await provisioner.poll()
        except Exception:  # noqa: BLE001 - the reason is best effort
            code = None
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited ({code})"
    reason = f"the context's kernel process {how}; its state is lost, create a new context"
    if last := km.stderr_tail.text():
        log.warning("a kernel %s; its last output:\n%s", how, last)
        reason += f". Its last output: {last[-500:]}"
    return reason


async def _run(ctx: Context, code: str, timeout_s: float, emit: Emit, outcome: _Outcome) -> None:
    client = ctx.client
    generation, interrupts = ctx.generation, ctx.interrupts
    sent_chars = {"stdout": 0, "stderr": 0}
    # stop_on_error=False: it exists to abort requests queued behind a failing one, and the
    # agent never queues two in a context; left on, ipykernel aborts the first request that
    # arrives just after an error or interrupt, which then returns nothing.
    msg_id = client.execute(code, store_history=True, allow_stdin=False, stop_on_error=False)
    outcome.msg_id = msg_id
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    grace_deadline: float | None = None

    async def handle(msg: dict[str, Any]) -> None:
        kind = msg["header"]["msg_type"]
        content = msg["content"]
        if kind == "stream":
            name = "stderr" if content.get("name") == "stderr" else "stdout"
            text = str(content.get("text", ""))
            room = MAX_STREAM_CHARS - sent_chars[name]
            if room <= 0:
                outcome.truncated_chars[name] += len(text)
                return
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
                return  # the KeyboardInterrupt we caused is reported as a timeout below
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

    while True:
        now = loop.time()
        if grace_deadline is None and now >= deadline:
            outcome.status = "timeout"
            await ctx.km.interrupt_kernel()
            grace_deadline = now + INTERRUPT_GRACE_S
        try:
            msg = await client.get_iopub_msg(timeout=_POLL_S)
        except queue.Empty:
            if ctx.generation != generation:
                outcome.status = "restarted"
                await emit(
                    _error_event(
                        "ContextRestartedError",
                        "the context was restarted while this code ran; its state is lost",
                    )
                )
                return
            if not await ctx.km.is_alive():
                ctx.dead_reason = ctx.dead_reason or await _exit_reason(ctx.km)
                await emit(_kernel_died_event(ctx.dead_reason))
                outcome.status = "died"
                return
            if grace_deadline is not None and loop.time() >= grace_deadline:
                # The kernel ignored the interrupt (stuck in C code, or Deno awaiting a
                # promise): restart it. The context keeps its id but loses its state.
                await _restart(ctx)
                outcome.restarted = True
                await emit(_timeout_event(timeout_s, restarted=True))
                return
            continue
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if _is_idle(msg):
            break
        await handle(msg)
    # The shell reply first: the flush consumes shell messages up to its own reply.
    await _drain_shell_reply(client, msg_id, outcome)
    await _flush_late_output(ctx, msg_id, handle)
    for name, dropped in outcome.truncated_chars.items():
        if dropped:
            marker = f"\n[output truncated: {dropped} characters of {name} omitted]\n"
            await emit({"kind": name, "text": marker})
    if outcome.status == "timeout":
        await emit(_timeout_event(timeout_s, restarted=False))
    if outcome.status == "ok" and outcome.reply.get("status") in ("error", "aborted"):
        # A failure only the shell reply tells of: Deno reports an interrupted execution that
        # way, and ipykernel an execute_request it aborted after an earlier error.
        outcome.status = "error"
        if ctx.interrupts != interrupts:
            await emit(_error_event("InterruptedError", "the execution was interrupted"))
        elif outcome.reply.get("status") == "aborted":
            await emit(_error_event("AbortedError", "the kernel aborted this execution"))
        else:
            name = str(outcome.reply.get("ename") or "Error")
            await emit(_error_event(name, str(outcome.reply.get("evalue") or "")))


def _is_idle(msg: dict[str, Any]) -> bool:
    kind, state = msg["header"]["msg_type"], msg["content"].get("execution_state")
    return bool(kind == "status" and state == "idle")


async def _flush_late_output(
    ctx: Context, msg_id: str, handle: Callable[[dict[str, Any]], Awaitable[None]]
) -> None:
    """Pass to ``handle`` the output of request ``msg_id``, just finished, that its kernel
    publishes late (see :data:`_FLUSHED_LANGUAGES`); a no-op for kernels that keep order."""
    if ctx.language not in _FLUSHED_LANGUAGES or ctx.dead_reason is not None:
        return
    client = ctx.client
    marker = client.execute(_FLUSH_CODE, silent=True, store_history=False, allow_stdin=False)
    seen_marker = marker_idle = False
    loop = asyncio.get_running_loop()
    end = loop.time() + _FLUSH_TIMEOUT_S
    while not (seen_marker and marker_idle) and loop.time() < end:
        try:
            msg = await client.get_iopub_msg(timeout=_POLL_S)
        except queue.Empty:
            continue
        kind = msg["header"]["msg_type"]
        parent = msg.get("parent_header", {}).get("msg_id")
        if parent == msg_id:
            # Late, still under the finished request's header.
            if kind not in ("status", "execute_input"):
                await handle(msg)
        elif parent != marker:
            continue  # left over from an earlier request
        elif kind == _FLUSH_MSG_TYPE:
            seen_marker = True
        elif _is_idle(msg):
            marker_idle = True
        elif kind not in ("status", "execute_input"):
            await handle(msg)  # late, published under the marker's header
    await _drain_shell_reply(client, marker, _Outcome())


def _timeout_event(timeout_s: float, *, restarted: bool) -> dict[str, Any]:
    after = (
        " The kernel did not respond to the interrupt and was restarted; the context's state is"
        " lost."
        if restarted
        else " The execution was interrupted; the context's earlier state is kept."
    )
    return _error_event(
        "TimeoutError", f"execution exceeded its timeout of {timeout_s:g} s.{after}"
    )


async def _drain_shell_reply(client: Any, msg_id: str, outcome: _Outcome) -> None:
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        try:
            reply = await client.get_shell_msg(timeout=max(0.01, end - time.monotonic()))
        except queue.Empty:
            return
        if reply.get("parent_header", {}).get("msg_id") == msg_id:
            outcome.reply = dict(reply["content"])
            count = reply["content"].get("execution_count")
            if outcome.execution_count is None and isinstance(count, int):
                outcome.execution_count = count
            return


async def _swap_env(ctx: Context, values: dict[str, Any]) -> dict[str, str | None]:
    """Set environment variables in the kernel; return their previous values."""
    client = ctx.client
    msg_id = client.execute(
        _ENV_SWAP_CODE[ctx.language], silent=True, store_history=False, allow_stdin=True
    )
    answered = False
    printed: list[str] = []
    failure: str | None = None

    async def handle(msg: dict[str, Any]) -> None:
        nonlocal failure
        kind = msg["header"]["msg_type"]
        if kind == "stream":
            printed.append(str(msg["content"].get("text", "")))
        elif kind == "error":
            failure = f"{msg['content'].get('ename')}: {msg['content'].get('evalue')}"

    loop = asyncio.get_running_loop()
    end = loop.time() + ENV_SWAP_TIMEOUT_S
    while True:
        if loop.time() >= end:
            raise EnvSwapError("the kernel did not apply env_vars in time")
        if not answered:
            try:
                request = await client.get_stdin_msg(timeout=0.05)
            except queue.Empty:
                request = None
            if request is not None and request.get("parent_header", {}).get("msg_id") == msg_id:
                client.input(json.dumps(values))
                answered = True
        try:
            msg = await client.get_iopub_msg(timeout=_POLL_S if answered else 0)
        except queue.Empty:
            continue
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if _is_idle(msg):
            break
        await handle(msg)
    await _drain_shell_reply(client, msg_id, _Outcome())
    await _flush_late_output(ctx, msg_id, handle)
    try:
        previous = json.loads("".join(printed))
    except json.JSONDecodeError:
        previous = None
    if failure is not None or not isinstance(previous, dict):
        raise EnvSwapError(f"the kernel could not apply env_vars ({failure or 'no answer'})")
    return previous
