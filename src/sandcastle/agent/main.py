"""Entry point of the agent inside a sandbox: ``python -m sandcastle.agent``."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
from typing import Any

from sandcastle.agent import layout
from sandcastle.agent.channel import AgentChannel, Emit, RequestFailed
from sandcastle.agent.context import ContextGoneError, ContextSetupError
from sandcastle.agent.files import AgentFiles
from sandcastle.agent.kernels import Kernels
from sandcastle.agent.memguard import MemoryGuard
from sandcastle.agent.processes import AgentProcesses

_AGENT_ONLY_ENV = (
    "PYTHONPATH",
    "PYTHONDONTWRITEBYTECODE",
    "SANDCASTLE_SANDBOX_ID",
    "SANDCASTLE_CHANNEL_SOCKET",
    "SANDCASTLE_JUPYTER_DIR",
    "SANDCASTLE_CWD",
)


def user_env() -> dict[str, str]:
    """The environment user code sees: the agent's, minus what only the agent needs."""
    return {k: v for k, v in os.environ.items() if k not in _AGENT_ONLY_ENV}


def kernel_env() -> dict[str, str]:
    return {**user_env(), "JUPYTER_PATH": _jupyter_dir()}


def _jupyter_dir() -> str:
    # Overridable so the agent can be tested on the host, outside any sandbox.
    return os.environ.get("SANDCASTLE_JUPYTER_DIR", layout.JUPYTER_DIR)


def build_handlers(kernels: Kernels) -> dict[str, Any]:
    async def ping(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        return {"contexts": kernels.context_ids}

    async def context_create(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        try:
            ctx = await kernels.create(
                str(params["context_id"]),
                str(params["language"]),
                params.get("cwd"),
                keep_spare=bool(params.get("keep_spare", True)),
            )
        except ContextSetupError as exc:
            code = "invalid" if exc.field == "language" else f"invalid_{exc.field}"
            raise RequestFailed(code, str(exc)) from exc
        return {"context_id": ctx.id, "language": ctx.language, "cwd": ctx.cwd}

    async def context_delete(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        await kernels.delete(str(params["context_id"]))
        return {}

    async def context_restart(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        try:
            await kernels.restart(str(params["context_id"]))
        except ContextGoneError as exc:
            raise RequestFailed("context_not_found", f"no context {exc} in this sandbox") from exc
        return {}

    async def context_interrupt(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        try:
            await kernels.interrupt(str(params["context_id"]))
        except ContextGoneError as exc:
            raise RequestFailed("context_not_found", f"no context {exc} in this sandbox") from exc
        return {}

    async def context_rename(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        # A sandbox forked from a snapshot has its source's contexts under new ids.
        kernels.rename({str(k): str(v) for k, v in dict(params["ids"]).items()})
        return {"contexts": kernels.context_ids}

    async def warm(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        # Before a template snapshot: a started spare kernel of each language, so sandboxes
        # restored from it never start one cold.
        await kernels.ready_spares([str(lang) for lang in params.get("languages", [])])
        return {}

    async def execute(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        try:
            return await kernels.execute(
                str(params["context_id"]),
                str(params["code"]),
                timeout_s=float(params.get("timeout_ms", 30_000)) / 1000.0,
                env_vars={str(k): str(v) for k, v in (params.get("env_vars") or {}).items()},
                emit=emit,
            )
        except ContextGoneError as exc:
            raise RequestFailed("context_not_found", f"no context {exc} in this sandbox") from exc

    return {
        "ping": ping,
        "context.create": context_create,
        "context.delete": context_delete,
        "context.restart": context_restart,
        "context.interrupt": context_interrupt,
        "context.rename": context_rename,
        "warm": warm,
        "execute": execute,
    }


def _not_dumpable() -> None:
    """Keep other processes of the sandbox user out of the agent's memory and /proc files.

    User code runs as the agent's user; without this it could read the channel secret from
    ``/proc/<agent>/mem``. Kernels the agent starts are dumpable again after their ``exec``.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0


async def amain() -> None:
    sandbox_id = os.environ.get("SANDCASTLE_SANDBOX_ID", "")
    kernels = Kernels(
        jupyter_dir=_jupyter_dir(),
        default_cwd=os.environ.get("SANDCASTLE_CWD", layout.USER_HOME),
        kernel_env=kernel_env(),
    )
    kernels.keep_spare("python")
    files = AgentFiles(home=layout.USER_HOME)
    files.remove_left_over()
    processes = AgentProcesses(
        env=user_env(), home=os.environ.get("SANDCASTLE_CWD", layout.USER_HOME)
    )
    channel = AgentChannel(
        os.environ.get("SANDCASTLE_CHANNEL_SOCKET", layout.CHANNEL_SOCKET),
        sandbox_id,
        {**build_handlers(kernels), **files.handlers(), **processes.handlers()},
        lambda: kernels.context_ids,
        on_disconnect=files.drop_all,
    )
    guard = MemoryGuard(lambda: kernels.victims() + processes.victims())
    guarding = asyncio.create_task(guard.run_forever())
    try:
        await channel.run_forever()
    finally:
        guarding.cancel()
        await processes.aclose()
        await files.aclose()
        await kernels.aclose()


def _stay_as_init() -> None:
    """As the sandbox's PID 1 (under gVisor), fork: the agent goes on in the child, and this
    process stays behind as the sandbox's init, reaping every orphan (else each one would stay a
    zombie, counted against the process limit for good) and leaving with the agent's status."""
    agent = os.fork()
    if agent == 0:
        return
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == agent:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)


def main() -> None:
    # Not dumpable first: the flag is inherited across fork, and PID 1 must not be readable.
    _not_dumpable()
    if os.getpid() == 1:
        _stay_as_init()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agent %(levelname)s %(message)s")
    asyncio.run(amain())
