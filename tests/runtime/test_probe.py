"""``probe.runsc_problem``: a real gVisor sandbox on this host, and the ways a probe fails.

The real probe needs root and ``runsc`` (``scripts/ensure-runsc`` installs it); the failures use
fake ``runsc`` scripts and run anywhere.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from sandcastle.config import Settings
from sandcastle.runtime.probe import runsc_problem, runsc_version
from sandcastle.runtime.registry import select_runtime

needs_runsc = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runsc") is None, reason="needs root and runsc"
)


def fake_runsc(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-runsc"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


@needs_runsc
async def test_a_real_sandbox_starts_and_leaves_nothing_behind(tmp_path: Path) -> None:
    assert await runsc_problem("runsc", tmp_path / "work") is None
    assert list((tmp_path / "work").iterdir()) == []


@needs_runsc
async def test_the_version_is_what_runsc_reports() -> None:
    version = await runsc_version("runsc")
    assert version is not None and version[0].isdigit()


@needs_runsc
async def test_auto_chooses_gvisor_when_it_works(tmp_path: Path) -> None:
    choice = await select_runtime(Settings(data_dir=tmp_path, runtime="auto"))
    assert choice.runtime.name == "gvisor"
    assert choice.reason.startswith("runsc ") and choice.reason.endswith(" works")


async def test_a_missing_runsc_is_a_reason(tmp_path: Path) -> None:
    problem = await runsc_problem("/nonexistent/runsc", tmp_path)
    assert problem == "runsc not found (/nonexistent/runsc)"
    assert await runsc_version("/nonexistent/runsc") is None


async def test_a_failing_run_reports_its_last_line_and_deletes_the_container(
    tmp_path: Path,
) -> None:
    calls = tmp_path / "calls"
    runsc = fake_runsc(
        tmp_path,
        f'echo "$@" >> {calls}\n'
        'case "$*" in *" run "*) echo "W1122 util.go:64] noise" >&2;'
        ' echo "unknown platform: systrap" >&2; exit 128;; esac',
    )
    problem = await runsc_problem(runsc, tmp_path / "work")
    assert problem == "runsc run exited with 128: unknown platform: systrap"
    run, delete = calls.read_text().splitlines()
    assert "--platform=systrap --network=none --ignore-cgroups run --bundle" in run
    assert " delete --force probe-" in delete
    assert run.split()[-1] == delete.split()[-1]  # the same container id
    assert list((tmp_path / "work").iterdir()) == []


async def test_a_hanging_run_times_out(tmp_path: Path) -> None:
    runsc = fake_runsc(tmp_path, 'case "$*" in *" run "*) exec sleep 60;; esac')
    started = time.monotonic()
    problem = await runsc_problem(runsc, tmp_path / "work", timeout_s=0.5)
    assert time.monotonic() - started < 10
    assert problem == "runsc did not start and finish a sandbox within 0.5 s"
    assert list((tmp_path / "work").iterdir()) == []
