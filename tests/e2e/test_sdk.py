"""Our Python SDK against a real server from a fresh venv in which only ``sdk/python`` is
installed: ``tests/sdk/scenario.py`` walks every capability, synchronously on each backend (a
100 MB file with progress, a run's artifact, hibernate and a fork on gVisor) and asynchronously
on bubblewrap."""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pytest

from tests.serverproc import REPO, ServerProcess

SCENARIO = REPO / "tests" / "sdk" / "scenario.py"

SYNC_STEPS = [
    "health", "create", "run_code", "contexts", "files", "large-file", "processes", "runs",
    "pause-resume", "{lifecycle}", "killed-on-exit", "list", "tenancy",
]  # fmt: skip
ASYNC_STEPS = [
    "health", "create", "run_code", "files", "processes", "runs", "lifecycle", "killed-on-exit",
    "list-and-orgs",
]  # fmt: skip


@pytest.fixture(scope="session")
def sdk_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a new venv holding the SDK and what it depends on, nothing else."""
    home = tmp_path_factory.mktemp("sdk-venv")
    venv.create(home, with_pip=True)
    python = home / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         str(REPO / "sdk" / "python")],
        check=True, timeout=300,
    )  # fmt: skip
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
    ).stdout
    installed = {line.split("==")[0].lower() for line in listed.split()}
    assert "sandcastle-sdk" in installed and "sandcastle" not in installed, installed
    assert not {"fastapi", "sqlalchemy", "typer", "jupyter-client"} & installed, installed
    return python


def run_scenario(python: Path, server: ServerProcess, mode: str, backend: str) -> list[str]:
    env = {
        "PATH": os.environ["PATH"],
        "SANDCASTLE_URL": server.url,
        "SANDCASTLE_API_KEY": server.admin_key,
        "SCENARIO_BIG_MB": "100" if mode == "sync" else "8",
    }
    done = subprocess.run(
        [python, "-I", str(SCENARIO), mode, backend],
        capture_output=True, text=True, env=env, cwd="/", timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return [
        line.removeprefix("step ") for line in done.stdout.splitlines() if line.startswith("step ")
    ]


def test_the_synchronous_sdk_reaches_every_capability(
    sdk_python: Path, server: ServerProcess, backend: str, deployment: str
) -> None:
    if "+" in deployment:
        pytest.skip(
            "the SDK meets the same API whatever the store: each backend on SQLite shows it"
        )
    lifecycle = "snapshot-fork" if backend == "gvisor" else "hibernate-refused"
    expected = [s.format(lifecycle=lifecycle) for s in SYNC_STEPS]
    if backend == "gvisor":
        expected.insert(expected.index(lifecycle), "hibernate-resume")
    assert run_scenario(sdk_python, server, "sync", backend) == expected


def test_the_asynchronous_sdk_reaches_every_capability(
    sdk_python: Path, server: ServerProcess, backend: str, deployment: str
) -> None:
    if deployment != "bwrap":
        # Generated from the same code as the synchronous face (tools/generate_sync.py), which
        # runs on every backend: one backend shows what is the asynchronous face's own.
        pytest.skip("the asynchronous face runs on bubblewrap only")
    assert run_scenario(sdk_python, server, "async", backend) == ASYNC_STEPS
