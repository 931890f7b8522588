"""The ``sandcastle`` command line against a real server."""

from __future__ import annotations

import os
import subprocess
import sys

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
