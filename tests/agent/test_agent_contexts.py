"""The agent's context methods (``context.restart``, ``context.interrupt``, ``cwd``) and Deno's
TypeScript kernel, on the host with real kernels and a real ``AgentLink``.

Deno comes from the ``deno`` PyPI package: this venv's ``bin/deno`` or ``PATH``, else the built
template's copy. Without any, the Deno tests fail rather than skip: they are what proves the
TypeScript kernel works with this agent.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sandcastle.runtime.channel import AgentRequestError
from sandcastle.runtime.templates.recipes import _DENO_KERNELSPEC
from tests.agent.conftest import Execution, RunningAgent, start_agent
from tests.serverproc import templates_dir

pytestmark = pytest.mark.asyncio(loop_scope="module")


def find_deno() -> str:
    candidates = [
        Path(sys.executable).parent / "deno",
        Path(shutil.which("deno") or "/nonexistent"),
        templates_dir() / "python" / "rootfs" / "opt" / "venv" / "bin" / "deno",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail("no deno binary: `pip install deno` into the venv, or build the template")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def agent() -> AsyncIterator[RunningAgent]:
    async with start_agent("sb_ctxtest") as running:
        # The template's kernelspec, pointed at a deno on this host; the agent reads kernelspecs
        # when it starts a kernel, so adding one now is in time.
        spec = json.loads(json.dumps(_DENO_KERNELSPEC))
        spec["argv"][0] = find_deno()
        spec["env"]["DENO_DIR"] = str(running.root / "deno-dir")
        spec_dir = running.root / "jupyter" / "kernels" / "deno"
        spec_dir.mkdir(parents=True)
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        yield running


async def new_context(agent: RunningAgent, context_id: str, language: str = "python") -> str:
    result = await agent.link.call(
        "context.create", {"context_id": context_id, "language": language, "cwd": None}
    )
    assert result["context_id"] == context_id
    return context_id


class Running:
    """An execution started in the background, whose events can be awaited one by one."""

    def __init__(self, agent: RunningAgent, context_id: str, code: str, **params: Any) -> None:
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.call = asyncio.create_task(
            agent.link.call(
                "execute",
                {"context_id": context_id, "code": code, "timeout_ms": 60_000, **params},
                on_event=self._collect,
            )
        )

    async def _collect(self, event: dict[str, Any]) -> None:
        await self.events.put(event)

    async def next_of_kind(self, kind: str) -> dict[str, Any]:
        while True:
            event = await asyncio.wait_for(self.events.get(), 30)
            if event["kind"] == kind:
                return event

    async def finish(self) -> Execution:
        reply = await asyncio.wait_for(self.call, 30)
        events = []
        while not self.events.empty():
            events.append(self.events.get_nowait())
        return Execution(events, reply)


# --- restart ---------------------------------------------------------------------------------


async def test_restart_gives_a_fresh_kernel_under_the_same_id(agent: RunningAgent) -> None:
    context_id = await new_context(agent, "ctx_restart")
    await agent.execute(context_id, "x = 1")
    await agent.execute(context_id, "x")
    assert await agent.link.call("context.restart", {"context_id": context_id}) == {}
    after = await agent.execute(context_id, "'x' in globals()")
    assert after.primary == "False"
    assert after.reply["execution_count"] == 1
    assert context_id in (await agent.link.call("ping", {}))["contexts"]


async def test_restart_revives_a_dead_kernel(agent: RunningAgent) -> None:
    context_id = await new_context(agent, "ctx_revive")
    died = await agent.execute(context_id, "import os; os._exit(3)")
    assert died.reply["status"] == "died"
    await agent.link.call("context.restart", {"context_id": context_id})
    assert (await agent.execute(context_id, "6 * 7")).primary == "42"


async def test_restart_ends_a_running_execution(agent: RunningAgent) -> None:
    context_id = await new_context(agent, "ctx_restart_running")
    running = Running(agent, context_id, "import time\nprint('go', flush=True)\ntime.sleep(60)")
    await running.next_of_kind("stdout")
    await agent.link.call("context.restart", {"context_id": context_id})
    ended = await running.finish()
    assert ended.reply["status"] == "restarted"
    assert [e["name"] for e in ended.of_kind("error")] == ["ContextRestartedError"]
    assert (await agent.execute(context_id, "1 + 1")).primary == "2"


# --- interrupt -------------------------------------------------------------------------------


async def test_interrupt_stops_the_running_code_and_keeps_state(agent: RunningAgent) -> None:
    context_id = await new_context(agent, "ctx_interrupt")
    await agent.execute(context_id, "kept = 'yes'")
    running = Running(agent, context_id, "import time\nprint('go', flush=True)\ntime.sleep(60)")
    await running.next_of_kind("stdout")
    assert await agent.link.call("context.interrupt", {"context_id": context_id}) == {}
    ended = await running.finish()
    assert ended.reply["status"] == "error"
    assert [e["name"] for e in ended.of_kind("error")] == ["KeyboardInterrupt"]
    assert (await agent.execute(context_id, "kept")).primary == "'yes'"


async def test_interrupting_an_idle_context_is_harmless(agent: RunningAgent) -> None:
    context_id = await new_context(agent, "ctx_idle_interrupt")
    await agent.link.call("context.interrupt", {"context_id": context_id})
    assert (await agent.execute(context_id, "1 + 1")).primary == "2"


@pytest.mark.parametrize("method", ["context.restart", "context.interrupt"])
async def test_unknown_context(agent: RunningAgent, method: str) -> None:
    with pytest.raises(AgentRequestError) as caught:
        await agent.link.call(method, {"context_id": "ctx_nope"})
    assert caught.value.code == "context_not_found"


@pytest.mark.parametrize("cwd", ["relative/dir", "/proc/no-such-dir"])
async def test_unusable_cwd_is_invalid_cwd(agent: RunningAgent, cwd: str) -> None:
    with pytest.raises(AgentRequestError) as caught:
        await agent.link.call(
            "context.create", {"context_id": "ctx_badcwd", "language": "python", "cwd": cwd}
        )
    assert caught.value.code == "invalid_cwd"
    assert "ctx_badcwd" not in (await agent.link.call("ping", {}))["contexts"]


# --- Deno ------------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ts(agent: RunningAgent) -> str:
    return await new_context(agent, "ctx_ts", "typescript")


async def test_deno_runs_typescript(agent: RunningAgent, ts: str) -> None:
    run = await agent.execute(ts, "const n: number = 41;\nawait Promise.resolve(n + 1)")
    assert run.reply["status"] == "ok"
    assert run.primary == "42"


async def test_deno_output_of_each_execution_arrives_with_it(agent: RunningAgent, ts: str) -> None:
    # Deno's kernel may publish console output and results after its "idle" status, under the
    # header of whatever request comes next; the agent's flush marker keeps them in place.
    for i in range(30):
        run = await agent.execute(ts, f"console.log('line {i}'); {i}")
        assert run.texts("stdout") == f"line {i}\n", (i, run.events)
        assert run.primary == str(i), (i, run.events)


async def test_deno_env_vars_travel_as_data(agent: RunningAgent, ts: str) -> None:
    tricky = "a'b\"c`${d}`\n\\n); console.log('injected'); ("
    code = "console.log(JSON.stringify(Deno.env.get('TRICKY') ?? null))"
    during = await agent.execute(ts, code, env_vars={"TRICKY": tricky})
    assert json.loads(during.texts("stdout")) == tricky
    after = await agent.execute(ts, code)
    assert json.loads(after.texts("stdout")) is None


async def test_deno_interrupt_stops_a_busy_loop_and_keeps_state(
    agent: RunningAgent, ts: str
) -> None:
    await agent.execute(ts, "var kept = 'yes'")
    running = Running(agent, ts, "console.log('go'); while (true) {}")
    await running.next_of_kind("stdout")
    await agent.link.call("context.interrupt", {"context_id": ts})
    ended = await running.finish()
    assert [e["name"] for e in ended.of_kind("error")] == ["InterruptedError"]
    assert (await agent.execute(ts, "kept")).primary == '"yes"'


async def test_deno_cancel_of_a_pending_await_restarts_before_the_next_execution(
    agent: RunningAgent,
) -> None:
    context_id = await new_context(agent, "ctx_ts_cancel", "typescript")
    await agent.execute(context_id, "var lost = 1")
    # The timer prints only once the evaluation is suspended in its await: Deno's interrupt
    # stops running JavaScript (an earlier cancel would just end the code, state kept).
    code = (
        "setTimeout(() => console.log('waiting'), 0);\n"
        "await new Promise((ok) => setTimeout(ok, 60_000))"
    )
    running = Running(agent, context_id, code)
    await running.next_of_kind("stdout")
    running.call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running.call
    # Deno cannot interrupt an await: the agent restarts the kernel before it runs anything else.
    after = await agent.execute(context_id, "typeof lost")
    assert after.reply["status"] == "ok"
    assert after.primary == '"undefined"'
