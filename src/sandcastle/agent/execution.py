"""Running code in a context: an execution's events, its timeout, and settling afterwards.

An execution holds its context's lock from start until the context is *settled* again: an
execution the host cancels is interrupted and waited for (or the kernel restarted) before the
lock is released, and its ``env_vars`` are restored, so the next execution finds the state an
interrupt leaves. Kernel failures become execution events (``error``), never agent crashes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from sandcastle.agent.context import Context, KernelManager, restart_kernel

log = logging.getLogger("sandcastle.agent")

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


class EnvSwapError(Exception):
    """The kernel did not apply (or restore) an execution's environment variables."""


@dataclass
class _Outcome:
    status: str = "ok"  # ok | error | timeout | died | restarted
    msg_id: str | None = None
    #: The shell reply's content, once drained.
    reply: dict[str, Any] = field(default_factory=dict)
    execution_count: int | None = None
    restarted: bool = False
    truncated_chars: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})


async def execute(
    ctx: Context, code: str, *, timeout_s: float, env_vars: dict[str, str], emit: Emit
) -> dict[str, Any]:
    """Run ``code`` in ``ctx``, emitting events as they come; return the reply's result."""
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
        if await _wait_idle(ctx.km, ctx.client, msg_id, INTERRUPT_GRACE_S):
            await _drain_shell_reply(ctx.client, msg_id, _Outcome())
            # Late output of the abandoned execution must not surface in the next one.
            await _flush_late_output(ctx, msg_id, _discard)
        elif await ctx.km.is_alive() and ctx.generation == generation:
            # Deno cannot interrupt a pending await; ipykernel can ignore SIGINT.
            await restart_kernel(ctx)
    if previous is not None:
        await _restore_env(ctx, previous, generation)


async def _discard(msg: dict[str, Any]) -> None:
    pass


async def _wait_idle(km: KernelManager, client: Any, msg_id: str, timeout_s: float) -> bool:
    """Whether the kernel went idle after request ``msg_id`` within ``timeout_s`` (False at
    once if it died); the messages read meanwhile are dropped."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while loop.time() < end:
        try:
            msg = await client.get_iopub_msg(timeout=_POLL_S)
        except queue.Empty:
            if not await km.is_alive():
                return False
            continue
        if msg.get("parent_header", {}).get("msg_id") == msg_id and _is_idle(msg):
            return True
    return False


async def _restore_env(ctx: Context, previous: dict[str, str | None], generation: int) -> None:
    # A restarted or dead kernel has no trace of the execution's variables left.
    if ctx.dead_reason is not None or ctx.generation != generation:
        return
    try:
        await _swap_env(ctx, previous)
    except EnvSwapError:
        log.warning("context %s: restoring env_vars failed", ctx.id)


def _error_event(name: str, value: str) -> dict[str, Any]:
    return {"kind": "error", "name": name, "value": value, "traceback": []}


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
                await restart_kernel(ctx)
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


async def run_unrecorded(km: KernelManager, client: Any, code: str, timeout_s: float) -> bool:
    """Run ``code`` in a kernel outside its history and execution count, its output dropped,
    and wait until it is done; False if the kernel did not finish within ``timeout_s``."""
    msg_id = client.execute(code, store_history=False, allow_stdin=False)
    if not await _wait_idle(km, client, msg_id, timeout_s):
        return False
    await _drain_shell_reply(client, msg_id, _Outcome())
    return True


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
