"""E2B's unmodified JavaScript SDK (``@e2b/code-interpreter`` from npm, on the machine's Node)
against a real server, on each backend: ``tests/e2b_js/scenario.mjs``, which asserts as it goes
and prints each step it passed. ``make test`` installs the SDK (``npm ci`` there)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.e2b_env import e2b_environment
from tests.serverproc import ServerProcess

SCENARIO = Path(__file__).resolve().parents[1] / "e2b_js"
STEPS = ["code", "files", "commands", "control"]


def test_the_javascript_sdk_scenario_passes(server: ServerProcess, backend: str) -> None:
    node = shutil.which("node")
    if node is None or not (SCENARIO / "node_modules" / "@e2b" / "code-interpreter").is_dir():
        pytest.fail("Node and the E2B JavaScript SDK are needed: run `make test` (make e2b-js)")
    pause = backend == "gvisor"
    env = {**os.environ, **e2b_environment(server), "SCENARIO_PAUSE": "1" if pause else "0"}
    done = subprocess.run(
        [node, "scenario.mjs"], cwd=SCENARIO, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    passed = [json.loads(line)["step"] for line in done.stdout.splitlines() if line.startswith("{")]
    assert passed == [*STEPS, *(["pause"] if pause else []), "kill"]
