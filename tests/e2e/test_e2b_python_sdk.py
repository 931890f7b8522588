"""E2B's unmodified Python SDK (``e2b-code-interpreter``) against a real server, on each
backend: code, files, commands, the control plane, and pause and resume where memory can be
saved. Each test is a step of one user's session with one sandbox."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from e2b import (
    CommandExitException,
    FilesystemEventType,
    FileType,
    NotFoundException,
    PtySize,
)
from e2b_code_interpreter import Sandbox

from tests.e2e.e2b_env import e2b_environment
from tests.helpers import eventually as wait_for
from tests.serverproc import ServerProcess


@pytest.fixture
def e2b_env(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in e2b_environment(server).items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def sbx(e2b_env: None) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(timeout=600, metadata={"suite": "python-sdk"}, envs={"GREETING": "hi"})
    yield sandbox
    sandbox.kill()


def test_code_keeps_state_reports_errors_and_draws_charts(sbx: Sandbox) -> None:
    assert sbx.run_code("x = 41\nx + 1").text == "42"
    run = sbx.run_code("import os\nprint(x, os.environ['GREETING'])")
    assert run.logs.stdout == ["41 hi\n"]
    failed = sbx.run_code("1 / 0")
    assert failed.error is not None and failed.error.name == "ZeroDivisionError"
    chart = sbx.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()")
    assert any(r.png for r in chart.results)
    streamed: list[str] = []
    sbx.run_code("for i in range(3): print(i)", on_stdout=lambda m: streamed.append(m.line))
    assert "".join(streamed) == "0\n1\n2\n"


def test_javascript_and_typescript_contexts_and_restart(sbx: Sandbox) -> None:
    js = sbx.create_code_context(language="js", cwd="/tmp")
    assert sbx.run_code("const a = 6; a * 7", context=js).text == "42"
    assert sbx.run_code("const b: number = 5; b + 1", language="ts").text == "6"
    python = sbx.create_code_context()
    sbx.run_code("z = 1", context=python)
    sbx.restart_code_context(python)
    assert sbx.run_code("z", context=python).error is not None  # the state went with the kernel
    assert {c.id for c in sbx.list_code_contexts()} >= {js.id, python.id}
    sbx.remove_code_context(js)
    assert js.id not in {c.id for c in sbx.list_code_contexts()}


def test_files_round_trip_text_and_binary_and_move_around(sbx: Sandbox) -> None:
    sbx.files.write("/home/user/notes.txt", "some notes")
    assert sbx.files.read("/home/user/notes.txt") == "some notes"
    blob = os.urandom(1 << 20)
    sbx.files.write("blob.bin", blob)
    assert sbx.files.read("/home/user/blob.bin", format="bytes") == blob
    entries = {e.name: e for e in sbx.files.list("/home/user")}
    assert entries["blob.bin"].type is FileType.FILE and entries["blob.bin"].size == 1 << 20
    assert sbx.files.exists("/home/user/notes.txt") and not sbx.files.exists("/home/user/nope")
    moved = sbx.files.rename("/home/user/notes.txt", "/home/user/moved.txt")
    assert moved.path == "/home/user/moved.txt"
    sbx.files.remove("/home/user/moved.txt")
    assert not sbx.files.exists("/home/user/moved.txt")
    assert sbx.files.make_dir("/home/user/made/deep") is True
    assert sbx.files.make_dir("/home/user/made/deep") is False
    with pytest.raises(NotFoundException):
        sbx.files.read("/home/user/missing.txt")


def test_commands_stream_fail_and_run_in_the_background(sbx: Sandbox) -> None:
    result = sbx.commands.run("echo out; echo err >&2; echo $GREETING $EXTRA", envs={"EXTRA": "x"})
    assert (result.stdout, result.stderr, result.exit_code) == ("out\nhi x\n", "err\n", 0)
    lines: list[str] = []
    sbx.commands.run("for i in 1 2 3; do echo $i; done", on_stdout=lines.append)
    assert "".join(lines) == "1\n2\n3\n"
    with pytest.raises(CommandExitException) as failed:
        sbx.commands.run("echo bad >&2; exit 3")
    assert failed.value.exit_code == 3 and failed.value.stderr == "bad\n"
    assert sbx.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n"
    background = sbx.commands.run(
        "read line; echo got $line; sleep 600", background=True, stdin=True
    )
    assert background.pid in {p.pid for p in sbx.commands.list()}
    sbx.commands.send_stdin(background.pid, "ping\n")
    assert background.kill() is True
    # The signal is sent; the process is gone once the sandbox has reaped it.
    wait_for(lambda: background.pid not in {p.pid for p in sbx.commands.list()})


def test_a_watched_directory_a_terminal_and_a_reconnected_command(sbx: Sandbox) -> None:
    assert sbx.files.make_dir("/home/user/watched")
    watcher = sbx.files.watch_dir("/home/user/watched")
    sbx.files.write("/home/user/watched/new.txt", "1")
    seen: list[tuple[str, FilesystemEventType]] = []
    for _ in range(50):
        seen += [(e.name, e.type) for e in watcher.get_new_events()]
        if ("new.txt", FilesystemEventType.CREATE) in seen:
            break
        time.sleep(0.1)
    assert ("new.txt", FilesystemEventType.CREATE) in seen
    watcher.stop()

    terminal = sbx.pty.create(PtySize(rows=24, cols=80))
    output = iter(terminal)
    screen = b""
    sbx.pty.send_stdin(terminal.pid, b"stty size\n")
    for _stdout, _stderr, data in output:
        screen += data or b""
        if b"24 80" in screen:
            break
    sbx.pty.resize(terminal.pid, PtySize(rows=30, cols=100))
    sbx.pty.send_stdin(terminal.pid, b"stty size; exit\n")
    for _stdout, _stderr, data in output:
        screen += data or b""
    assert b"24 80" in screen and b"30 100" in screen.split(b"24 80", 1)[1]

    counting = sbx.commands.run("for i in 1 2 3; do echo $i; sleep 0.3; done", background=True)
    assert sbx.commands.connect(counting.pid).wait().stdout.endswith("3\n")


def test_the_control_plane_knows_the_sandbox(sbx: Sandbox) -> None:
    sbx.set_timeout(900)
    info = sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id and info.metadata == {"suite": "python-sdk"}
    listed = Sandbox.list().next_items()
    assert sbx.sandbox_id in {s.sandbox_id for s in listed}
    again = Sandbox.connect(sbx.sandbox_id)
    assert again.run_code("1 + 1").text == "2"
    [metric] = sbx.get_metrics()
    assert metric.mem_total == 512 * 1024 * 1024 and metric.mem_used > 0
    Sandbox.kill(sbx.sandbox_id)
    assert not sbx.is_running()


def test_pause_keeps_memory_and_connect_resumes(sbx: Sandbox, backend: str) -> None:
    if backend != "gvisor":
        pytest.skip("E2B's pause keeps memory: hibernation needs gVisor's checkpoints")
    sbx.run_code("kept = [1, 2, 3]")
    background = sbx.commands.run("sleep 600", background=True)
    assert sbx.pause() is True
    assert sbx.get_info().state == "paused"
    assert sbx.pause() is False  # already paused
    resumed = Sandbox.connect(sbx.sandbox_id)
    assert resumed.get_info().state == "running"
    assert resumed.run_code("sum(kept)").text == "6"
    assert background.pid in {p.pid for p in resumed.commands.list()}
