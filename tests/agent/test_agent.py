"""The agent on the host with real ipykernel kernels, driven through a real ``AgentLink``.

These prove the agent's side of ``docs/AGENT_PROTOCOL.md``: hello, contexts, execution events and
replies, per-execution environment, timeouts, restarts, dead kernels, output limits, concurrency,
cancellation and reconnecting.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from sandcastle.agent.execution import MAX_STREAM_CHARS
from sandcastle.agent.kernels import SPARE_DELAY_S
from sandcastle.agent.protocol import PROTOCOL_VERSION
from sandcastle.runtime.channel import AgentRequestError
from tests.agent.conftest import RunningAgent, start_agent

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_hello_carries_the_sandbox_id_and_its_contexts(agent: RunningAgent) -> None:
    assert agent.link.hello == {
        "type": "hello",
        "version": PROTOCOL_VERSION,
        "sandbox_id": "sb_agenttest",
        "contexts": [],
    }


async def test_ping_lists_contexts(agent: RunningAgent) -> None:
    context_id = await agent.new_context()
    assert context_id in (await agent.link.call("ping", {}))["contexts"]


#: The kernel's own process start, as a Unix time, from /proc (no third-party modules needed).
KERNEL_START_EPOCH = (
    "import os, time\n"
    "ticks = int(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19])\n"
    "uptime = float(open('/proc/uptime').read().split()[0])\n"
    "time.time() - uptime + ticks / os.sysconf('SC_CLK_TCK')"
)


async def test_context_create_takes_the_spare_kernel(agent: RunningAgent) -> None:
    # A context adopts a kernel that was already running before the create was asked for.
    await agent.new_context()  # the first may wait for the spare to finish booting
    await agent.link.call("warm", {"languages": ["python"]})  # the next spare is up
    asked_at = time.time()
    context_id = await agent.new_context()
    run = await agent.execute(context_id, KERNEL_START_EPOCH)
    assert float(run.primary or "inf") < asked_at


async def test_the_next_spare_waits_until_a_new_contexts_first_moments_are_over(
    agent: RunningAgent,
) -> None:
    # Its boot would take CPU from the first execution of the context that just took one.
    await agent.link.call("warm", {"languages": ["python"]})
    taken_at = time.time()
    await agent.new_context()
    await asyncio.sleep(SPARE_DELAY_S + 5)  # the delay, then a boot's time on a slow host
    asked_at = time.time()
    context_id = await agent.new_context()
    started = float((await agent.execute(context_id, KERNEL_START_EPOCH)).primary or "nan")
    assert taken_at + SPARE_DELAY_S - 0.05 <= started < asked_at


async def test_a_context_asking_during_the_delay_boots_the_spare_at_once(
    agent: RunningAgent,
) -> None:
    await agent.link.call("warm", {"languages": ["python"]})
    await agent.new_context()
    asked_at = time.time()
    context_id = await agent.new_context()
    started = float((await agent.execute(context_id, KERNEL_START_EPOCH)).primary or "nan")
    assert asked_at - 0.05 <= started < asked_at + SPARE_DELAY_S


async def test_new_kernels_start_no_zeromq_threads_in_the_agent(agent: RunningAgent) -> None:
    # User code shares the agent's process limit, and libzmq aborts the whole process when it
    # cannot start a thread: every kernel's sockets live in the one context the agent started
    # with (one reaper thread), not in a context of their own.
    for _ in range(3):
        await agent.new_context()
    await agent.link.call("warm", {"languages": ["python"]})
    tasks = Path(f"/proc/{agent.proc.pid}/task")
    names = [(task / "comm").read_text().strip() for task in tasks.iterdir()]
    assert names.count("ZMQbg/Reaper") == 1, names


async def test_context_in_a_custom_cwd(agent: RunningAgent) -> None:
    cwd = agent.root / "made" / "by-the-agent"
    result = await agent.link.call(
        "context.create", {"context_id": "ctx_cwd", "language": "python", "cwd": str(cwd)}
    )
    assert result == {"context_id": "ctx_cwd", "language": "python", "cwd": str(cwd)}
    assert cwd.is_dir()
    run = await agent.execute("ctx_cwd", "import os; os.getcwd()")
    assert run.primary == repr(str(cwd))


async def test_context_create_rejects_an_unknown_language(agent: RunningAgent) -> None:
    with pytest.raises(AgentRequestError) as caught:
        await agent.link.call(
            "context.create", {"context_id": "ctx_cobol", "language": "cobol", "cwd": None}
        )
    assert caught.value.code == "invalid"


async def test_deleted_context_is_not_found(agent: RunningAgent) -> None:
    context_id = await agent.new_context()
    assert await agent.link.call("context.delete", {"context_id": context_id}) == {}
    assert context_id not in (await agent.link.call("ping", {}))["contexts"]
    with pytest.raises(AgentRequestError) as caught:
        await agent.execute(context_id, "1")
    assert caught.value.code == "context_not_found"


async def test_unknown_method_is_an_error_reply(agent: RunningAgent) -> None:
    with pytest.raises(AgentRequestError) as caught:
        await agent.link.call("files.read", {})
    assert caught.value.code == "unknown_method"


async def test_execute_events_and_reply(agent: RunningAgent) -> None:
    context_id = await agent.new_context()
    first = await agent.execute(context_id, "x = 41")
    assert first.events == [{"kind": "execution_count", "value": 1}]
    assert first.reply == {
        "status": "ok",
        "execution_count": 1,
        "restarted": False,
        "truncated_chars": {"stdout": 0, "stderr": 0},
    }
    second = await agent.execute(context_id, "x + 1")
    assert second.events == [
        {"kind": "execution_count", "value": 2},
        {"kind": "result", "is_primary": True, "data": {"text/plain": "42"}},
    ]
    assert second.reply["execution_count"] == 2


async def test_stdout_and_stderr_arrive_in_order(agent: RunningAgent) -> None:
    # ipykernel buffers each stream on its own, so only flushed writes have a defined order.
    context_id = await agent.new_context()
    code = (
        "import sys\n"
        "print('one', flush=True)\n"
        "print('two', file=sys.stderr, flush=True)\n"
        "print('three', flush=True)\n"
    )
    run = await agent.execute(context_id, code)
    streams = [(e["kind"], e["text"]) for e in run.events if e["kind"] in ("stdout", "stderr")]
    assert streams == [("stdout", "one\n"), ("stderr", "two\n"), ("stdout", "three\n")]


async def test_display_data_is_not_primary(agent: RunningAgent) -> None:
    context_id = await agent.new_context()
    run = await agent.execute(
        context_id, "from IPython.display import display\ndisplay('shown')\n'returned'"
    )
    assert run.of_kind("result") == [
        {"kind": "result", "is_primary": False, "data": {"text/plain": "'shown'"}},
        {"kind": "result", "is_primary": True, "data": {"text/plain": "'returned'"}},
    ]


async def test_error_has_a_traceback_list(agent: RunningAgent) -> None:
    context_id = await agent.new_context()
    run = await agent.execute(context_id, "1/0")
    assert run.reply["status"] == "error"
    [error] = run.of_kind("error")
    assert error["name"] == "ZeroDivisionError"
    assert error["value"] == "division by zero"
    assert isinstance(error["traceback"], list) and error["traceback"]
    assert all(isinstance(line, str) for line in error["traceback"])
    assert "ZeroDivisionError" in error["traceback"][-1]


async def test_env_vars_apply_to_one_execution_only(agent: RunningAgent) -> None:
    context_id = await agent.new_context()
    await agent.execute(context_id, "import os; os.environ['KEPT'] = 'before'")
    tricky = "it's \"quoted\"\nline two'); print('injected'); ('\\n"
    code = "import os; (os.environ['TRICKY'], os.environ['KEPT'])"
    run = await agent.execute(context_id, code, env_vars={"TRICKY": tricky, "KEPT": "during"})
    assert run.primary == repr((tricky, "during"))
    assert run.of_kind("stdout") == [] and run.of_kind("stderr") == []
    after = await agent.execute(
        context_id, "import os; (os.environ.get('TRICKY'), os.environ['KEPT'])"
    )
    assert after.primary == repr((None, "before"))
    assert after.of_kind("stdout") == []


async def test_timeout_interrupts_and_state_survives(agent: RunningAgent) -> None:
    context_id = await agent.new_context()
    await agent.execute(context_id, "kept = 'yes'")
    slow = await agent.execute(context_id, "import time; time.sleep(30)", timeout_ms=500)
    # Interrupted, not restarted: had the interrupt failed, the kernel would have been restarted.
    assert slow.reply["status"] == "timeout" and slow.reply["restarted"] is False
    [error] = slow.of_kind("error")
    assert error["name"] == "TimeoutError" and "state is kept" in error["value"]
    after = await agent.execute(context_id, "kept")
    assert after.primary == "'yes'"


async def test_kernel_ignoring_the_interrupt_is_restarted(agent: RunningAgent) -> None:
    context_id = await agent.new_context()
    await agent.execute(context_id, "lost = 1")
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"
    stuck = await agent.execute(context_id, code, timeout_ms=300)
    assert stuck.reply["status"] == "timeout" and stuck.reply["restarted"] is True
    [error] = stuck.of_kind("error")
    assert error["name"] == "TimeoutError" and "restarted" in error["value"]
    after = await agent.execute(context_id, "'lost' in globals(), 1 + 1")
    assert after.primary == "(False, 2)"


async def test_dead_kernel_is_reported_and_stays_dead(agent: RunningAgent) -> None:
    context_id = await agent.new_context()
    died = await agent.execute(context_id, "import os; os._exit(1)")
    assert died.reply["status"] == "died"
    [error] = died.of_kind("error")
    assert error["name"] == "KernelDiedError" and "exited (1)" in error["value"]
    again = await agent.execute(context_id, "1 + 1")
    assert again.reply["status"] == "died"
    assert [e["name"] for e in again.of_kind("error")] == ["KernelDiedError"]


async def test_large_output_is_truncated_with_a_marker(agent: RunningAgent) -> None:
    context_id = await agent.new_context()
    run = await agent.execute(context_id, "print('x' * 3_000_000)")
    stdout = run.texts("stdout")
    assert len(stdout) <= MAX_STREAM_CHARS + 200
    assert stdout.startswith("x" * 1000)
    assert stdout.endswith("[output truncated: 2000001 characters of stdout omitted]\n")
    assert run.reply["truncated_chars"] == {"stdout": 2_000_001, "stderr": 0}


async def test_executes_in_two_contexts_overlap(agent: RunningAgent) -> None:
    first, second = await agent.new_context(), await agent.new_context()
    # Each cell reports when it started and ended; the two intervals must intersect.
    code = "import time; start = time.time(); time.sleep(1); (start, time.time())"
    runs = await asyncio.gather(agent.execute(first, code), agent.execute(second, code))
    (a_start, a_end), (b_start, b_end) = (eval(run.primary or "None") for run in runs)
    assert a_start < b_end and b_start < a_end


async def _cancel_once_started(agent: RunningAgent, context_id: str, **params: Any) -> None:
    # Cancel once user code runs: a SIGINT that lands while ipykernel is still setting up the
    # cell (just after execute_input) can be swallowed by ipykernel itself.
    started = asyncio.Event()

    async def on_event(event: dict[str, Any]) -> None:
        if event["kind"] == "stdout":
            started.set()

    code = "import time\nprint('sleeping', flush=True)\ntime.sleep(30)"
    call = asyncio.create_task(
        agent.link.call(
            "execute", {"context_id": context_id, "code": code, **params}, on_event=on_event
        )
    )
    await asyncio.wait_for(started.wait(), 10)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_cancelling_a_call_interrupts_the_kernel(agent: RunningAgent) -> None:
    context_id = await agent.new_context()
    await agent.execute(context_id, "kept = 'yes'")
    await _cancel_once_started(agent, context_id)
    # Had the cancel not interrupted the 30 s sleep, this would time out instead of answering.
    after = await agent.execute(context_id, "kept", timeout_ms=5000)
    assert after.reply["status"] == "ok"
    assert after.primary == "'yes'"


async def test_env_vars_do_not_outlive_a_cancelled_execution(agent: RunningAgent) -> None:
    context_id = await agent.new_context()
    await _cancel_once_started(agent, context_id, env_vars={"ONLY_ONCE": "1"})
    after = await agent.execute(context_id, "import os; os.environ.get('ONLY_ONCE')")
    assert after.reply["status"] == "ok" and after.primary is None


async def test_agent_redials_and_context_state_is_intact() -> None:
    async with start_agent("sb_redial") as agent:
        context_id = await agent.new_context()
        await agent.execute(context_id, "x = 'kept'")
        old_link = agent.link
        await agent.relink()
        assert agent.link is not old_link and agent.link.connected
        assert agent.link.hello is not None
        assert agent.link.hello["sandbox_id"] == "sb_redial"
        assert agent.link.hello["contexts"] == [context_id]
        after = await agent.execute(context_id, "x")
        assert after.primary == "'kept'"
        assert after.reply["execution_count"] == 2
        assert os.path.exists(agent.socket_path)
