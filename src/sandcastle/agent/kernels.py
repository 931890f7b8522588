"""The registry of an agent's REPL contexts: Jupyter kernels started through ``jupyter_client``.

One kernel per context: ipykernel for Python, Deno's kernel for TypeScript/JavaScript. A spare
kernel per language is kept started so that creating a context does not wait ~0.6-1 s for a
kernel to boot: the agent starts the Python spare at once, and a language's next spare whenever a
context is created, unless the host says not to (a Deno kernel holds ~175 MB, too much to keep
idle in a small sandbox). Running code in a context is ``execution.py``'s; the context itself is
``context.py``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import subprocess
import tempfile
import uuid
from typing import Any

import zmq
import zmq.asyncio
from jupyter_client.kernelspec import KernelSpecManager

from sandcastle.agent import execution
from sandcastle.agent.context import (
    KERNEL_READY_S,
    Context,
    ContextGoneError,
    ContextSetupError,
    KernelManager,
    kernel_pid,
    restart_kernel,
    stop_kernel,
)
from sandcastle.agent.execution import Emit
from sandcastle.agent.memguard import Victim, expendable

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
#: Command-line options a language's kernels get. IPython's history lives in memory: on disk it
#: is a SQLite database written and synced after every cell (four ``fdatasync`` calls and a
#: journal created and unlinked), which under gVisor each go through the Sentry to the host, a
#: quarter of a warm ``1+1``'s CPU there (``docs/PERFORMANCE.md``). ``%history`` still sees the
#: context's own cells; no context ever read another's history.
KERNEL_ARGS = {"python": ["--HistoryManager.hist_file=:memory:"]}
#: A cell every new kernel runs before a context gets it, outside its history and count and
#: leaving nothing in its namespace (its value is None, which is not displayed: ``_`` and
#: ``Out`` stay as they were). A kernel's first cell cost about twice a later one, IPython
#: warming up its machinery and its result formatters (+8 ms on the host, +60 ms under
#: gVisor); after this cell the user's first is within ~2 ms of a later one on the host.
FIRST_CELL = {"python": "get_ipython().display_formatter.format(0) and None"}
#: How long after a context took the spare kernel the next spare starts booting, unless another
#: context asks for one sooner. A boot is most of a second of CPU (several under gVisor) in
#: the sandbox's own CPU quota: begun at once, it takes that from the new context's first
#: execution, the call a user is waiting on (``docs/PERFORMANCE.md``).
SPARE_DELAY_S = 1.0


class Kernels:
    """All contexts of one sandbox."""

    def __init__(self, *, jupyter_dir: str, default_cwd: str, kernel_env: dict[str, str]) -> None:
        self._spec_manager = KernelSpecManager(kernel_dirs=[os.path.join(jupyter_dir, "kernels")])
        self._runtime_dir = tempfile.mkdtemp(prefix="sandcastle-kernels-")
        self._default_cwd = default_cwd
        self._kernel_env = kernel_env
        self._contexts: dict[str, Context] = {}
        self._spares: dict[str, asyncio.Task[tuple[KernelManager, Any]]] = {}
        #: Set to make a spare still waiting out its delay start booting now.
        self._hurry: dict[str, asyncio.Event] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        #: One ZeroMQ context for every kernel's manager and client, its threads started now.
        #: jupyter_client would make a context per manager and per client, each starting an I/O
        #: thread with its first socket; user code runs as the agent's user and shares its
        #: process limit, and libzmq aborts the whole agent when it cannot start a thread (a
        #: spare booting during a fork bomb took the agent down).
        self._zmq = zmq.asyncio.Context()
        self._zmq.socket(zmq.PAIR).close()

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
            self._hurry[language].set()  # one pending since a context's creation boots now
        for language in languages:
            await self._spares[language]

    def keep_spare(self, language: str, *, delay_s: float = 0.0) -> None:
        """Start a spare kernel for ``language`` in the background if none is pending, after
        ``delay_s`` (cut short by a context that wants it meanwhile)."""
        if language not in self._spares:
            hurry = self._hurry[language] = asyncio.Event()
            self._spares[language] = asyncio.create_task(
                self._start(language, self._default_cwd, hurry=hurry, delay_s=delay_s)
            )

    def _take_spare(self, language: str) -> asyncio.Task[tuple[KernelManager, Any]] | None:
        """The pending spare, told to boot now if it was still waiting out its delay."""
        spare = self._spares.pop(language, None)
        hurry = self._hurry.pop(language, None)
        if hurry is not None:
            hurry.set()
        return spare

    async def _start(
        self,
        language: str,
        cwd: str,
        *,
        hurry: asyncio.Event | None = None,
        delay_s: float = 0.0,
    ) -> tuple[KernelManager, Any]:
        """Boot a kernel; after ``delay_s``, or as soon as ``hurry`` is set."""
        if hurry is not None and delay_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await hurry.wait()
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
            context=self._zmq,
        )
        try:
            await km.start_kernel(
                cwd=cwd,
                env={**self._kernel_env, **KERNEL_ENV.get(language, {})},
                extra_arguments=KERNEL_ARGS.get(language, []),
                stdout=subprocess.DEVNULL,
                stderr=km.stderr_tail.write_fd,
            )
        except BaseException:
            km.stderr_tail.close()
            raise
        expendable(kernel_pid(km))
        client = km.client(context=self._zmq)
        # No heartbeat channel: the agent asks the provisioner whether a kernel lives, and the
        # heartbeat's ping every second wakes a thread in both processes of every context, a
        # share of what an idle gVisor sandbox costs.
        client.start_channels(hb=False)
        try:
            await client.wait_for_ready(timeout=KERNEL_READY_S)
        except Exception:
            client.stop_channels()
            await km.shutdown_kernel(now=True)
            raise
        first = FIRST_CELL.get(language)
        if first is not None and not await execution.run_unrecorded(
            km, client, first, KERNEL_READY_S
        ):
            log.warning("a new %s kernel did not run its first cell in time", language)
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
        spare = self._take_spare(language) if want_cwd == self._default_cwd else None
        km, client = None, None
        if spare is not None:
            try:
                km, client = await spare
            except Exception:  # noqa: BLE001 - a failed spare is not fatal: start one directly
                km = None
        if km is None:
            km, client = await self._start(language, want_cwd)
        if keep_spare:
            self.keep_spare(language, delay_s=SPARE_DELAY_S)
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
            and (pid := kernel_pid(ctx.km))
        ]
        for language, task in list(self._spares.items()):
            if task.done() and not task.cancelled() and task.exception() is None:
                pid = kernel_pid(task.result()[0])
                if pid:
                    # A killed spare is forgotten (the next context starts its own kernel).
                    found.append(Victim(pid, functools.partial(self._forget_spare, language)))
        return found

    def _forget_spare(self, language: str) -> None:
        self._hurry.pop(language, None)
        task = self._spares.pop(language, None)
        if task is not None and task.done() and task.exception() is None:
            km, client = task.result()
            # Owned until done: a task nobody references may be collected mid-way.
            stopping = asyncio.get_running_loop().create_task(stop_kernel(km, client))
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)

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
            await stop_kernel(ctx.km, ctx.client)

    async def restart(self, context_id: str) -> None:
        """Replace the context's kernel with a fresh one (same id, cwd and language).

        Does not wait for a running execution: that one ends with ``ContextRestartedError``.
        """
        await restart_kernel(self.get(context_id))

    async def interrupt(self, context_id: str) -> None:
        """Interrupt whatever the context's kernel is running; a no-op when it is idle."""
        ctx = self.get(context_id)
        if ctx.dead_reason is None:
            ctx.interrupts += 1
            await ctx.km.interrupt_kernel()

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
        return await execution.execute(
            self.get(context_id), code, timeout_s=timeout_s, env_vars=env_vars, emit=emit
        )

    async def aclose(self) -> None:
        for context_id in list(self._contexts):
            await self.delete(context_id)
        for task in self._spares.values():
            if task.done() and not task.cancelled() and task.exception() is None:
                await stop_kernel(*task.result())
            else:
                task.cancel()
        self._spares.clear()
        self._hurry.clear()
        self._zmq.destroy(linger=0)
