"""The ``sandcastle`` command line against a real server."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from typing import Any

from tests.serverproc import ServerProcess


def cli(
    server: ServerProcess, *args: str, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["SANDCASTLE_URL"] = server.url
    env["SANDCASTLE_API_KEY"] = key if key is not None else server.admin_key
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "sandcastle", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_create_exec_list_kill(server: ServerProcess) -> None:
    created = cli(server, "sandbox", "create")
    assert created.returncode == 0, created.stderr
    sandbox_id = created.stdout.strip()
    assert sandbox_id.startswith("sb_")

    ran = cli(server, "exec", sandbox_id, "print('from the cli'); 6 * 7")
    assert ran.returncode == 0, ran.stderr
    assert "from the cli" in ran.stdout and "42" in ran.stdout

    failed = cli(server, "exec", sandbox_id, "1/0")
    assert failed.returncode == 1
    assert "ZeroDivisionError" in failed.stderr

    listed = cli(server, "sandbox", "list")
    assert listed.returncode == 0 and sandbox_id in listed.stdout

    killed = cli(server, "sandbox", "kill", sandbox_id)
    assert killed.returncode == 0 and "destroyed" in killed.stdout


def test_errors_are_one_clear_line_and_non_zero(server: ServerProcess) -> None:
    wrong_key = cli(server, "sandbox", "list", key="sc_nope")
    assert wrong_key.returncode == 1
    assert "401" in wrong_key.stderr and "Traceback" not in wrong_key.stderr
    missing = cli(server, "sandbox", "get", "sb_00000000")
    assert missing.returncode == 1 and "404" in missing.stderr


def test_run_streams_a_command_and_exits_with_its_code(
    server: ServerProcess, sandbox: dict[str, Any]
) -> None:
    ran = cli(server, "run", sandbox["id"], "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (ran.returncode, ran.stdout, ran.stderr) == (7, "out\n", "err\n")
    shell = cli(server, "run", sandbox["id"], "--shell", "--", "echo", "$((6 * 7))")
    assert (shell.returncode, shell.stdout) == (0, "42\n"), shell.stderr
    killed = cli(server, "run", sandbox["id"], "--timeout", "1", "--", "sleep", "60")
    assert killed.returncode == 128 + 9  # SIGKILL, as a shell reports it


def test_sh_is_an_interactive_terminal(server: ServerProcess, sandbox: dict[str, Any]) -> None:
    master, slave = os.openpty()
    env = {**os.environ, "SANDCASTLE_URL": server.url, "SANDCASTLE_API_KEY": server.admin_key}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandcastle", "sh", sandbox["id"]],
        stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    try:
        # Typed at once, before the command even set its terminal up: typed-ahead keys count.
        os.write(master, b"echo $((6 * 7)); tty; exit 3\n")
        seen = b""
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                with contextlib.suppress(OSError):
                    seen += os.read(master, 4096)
        assert proc.poll() == 3, seen
        assert b"42" in seen and b"/dev/pts/" in seen, seen
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
