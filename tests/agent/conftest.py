"""The real agent process on the host, real ipykernel kernels, a real ``AgentLink``.

The agent runs outside any sandbox: it dials a socket in a temporary directory and starts kernels
from a kernelspec that uses this venv's Python. One agent serves a whole module (its loop is the
module's), so tests pay for the agent and its first kernel once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest_asyncio

from sandcastle.runtime.channel import AgentLink

_context_ids = itertools.count(1)


@dataclass
class Execution:
    """What one ``execute`` request produced: its events in order and its reply result."""

    events: list[dict[str, Any]]
    reply: dict[str, Any]

    def texts(self, kind: str) -> str:
        return "".join(str(e["text"]) for e in self.events if e["kind"] == kind)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == kind]

    @property
    def primary(self) -> str | None:
        """``text/plain`` of the ``execute_result``, if any."""
        for event in self.of_kind("result"):
            if event["is_primary"]:
                return str(event["data"]["text/plain"])
        return None


@dataclass
class RunningAgent:
    """``python -m sandcastle.agent`` dialing ``socket_path``, and the host's link to it."""

    sandbox_id: str
    root: Path
    socket_path: Path
    cwd: Path
    proc: asyncio.subprocess.Process
    link: AgentLink
    log_path: Path
    contexts: list[str] = field(default_factory=list)

    async def new_context(self, cwd: str | None = None) -> str:
        context_id = f"ctx_{next(_context_ids)}"
        result = await self.link.call(
            "context.create", {"context_id": context_id, "language": "python", "cwd": cwd}
        )
        assert result["context_id"] == context_id
        return context_id

    async def execute(self, context_id: str, code: str, **params: Any) -> Execution:
        events: list[dict[str, Any]] = []

        async def collect(event: dict[str, Any]) -> None:
            events.append(event)

        reply = await self.link.call(
            "execute",
            {"context_id": context_id, "code": code, "timeout_ms": 10_000, **params},
            on_event=collect,
        )
        return Execution(events, reply)

    async def relink(self) -> None:
        """Close the host's end and listen again, as a restarted server does."""
        await self.link.aclose()
        self.link = AgentLink(self.sandbox_id, self.socket_path)
        await self.link.listen()
        await self.link.wait_connected(10)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


def _write_kernelspec(jupyter_dir: Path) -> None:
    spec_dir = jupyter_dir / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))


@contextlib.asynccontextmanager
async def start_agent(sandbox_id: str) -> AsyncIterator[RunningAgent]:
    """Start an agent and wait for its hello; stop it (and its kernels) afterwards."""
    # A short directory of our own: a Unix socket path must fit in 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="sc-agent-"))
    jupyter_dir, cwd, socket_path = root / "jupyter", root / "home", root / "chan" / "agent.sock"
    _write_kernelspec(jupyter_dir)
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDCASTLE_")}
    env.update(
        {
            "SANDCASTLE_CHANNEL_SOCKET": str(socket_path),
            "SANDCASTLE_JUPYTER_DIR": str(jupyter_dir),
            "SANDCASTLE_CWD": str(cwd),
            "SANDCASTLE_SANDBOX_ID": sandbox_id,
        }
    )
    link = AgentLink(sandbox_id, socket_path)
    await link.listen()
    log_path = root / "agent.log"
    with open(log_path, "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sandcastle.agent", env=env, stdout=log, stderr=log
        )
    agent = RunningAgent(sandbox_id, root, socket_path, cwd, proc, link, log_path)
    try:
        try:
            await link.wait_connected(15)
        except Exception as exc:
            raise RuntimeError(f"the agent did not connect:\n{agent.log_tail()}") from exc
        yield agent
    finally:
        await agent.link.aclose()
        if proc.returncode is None:
            # SIGINT lets asyncio.run unwind, so the agent shuts its kernels down itself.
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def agent() -> AsyncIterator[RunningAgent]:
    async with start_agent("sb_agenttest") as running:
        yield running
