"""What running a Dockerfile's ``RUN`` step in its own gVisor sandbox costs, beside the same step
under bubblewrap as the host's root (how our own platform steps run, and how every step ran
before): an empty step, one importing numpy, one ``pip install``ing a wheel.

Run by hand, as root, with the python template built (``make template-test``):

    .venv/bin/python -m bench.bench_template_builds [--iterations 10]

It copies the template's rootfs once into a temporary directory and runs the steps over it.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from bench.common import p95
from sandcastle.runtime.templates.buildenv import BuildSandbox, Command
from sandcastle.runtime.templates.hostpip import inspect_host_pip
from sandcastle.runtime.templates.isolated import BuildLimits, IsolatedSteps
from sandcastle.runtime.templates.recipes import Run
from tests.helpers import write_wheel
from tests.serverproc import templates_dir

STEPS = {
    "empty step (`true`)": ("true",),
    "python -c 'import numpy'": ("python", "-c", "import numpy"),
    "pip install a wheel": (
        "pip", "install", "--no-index", "--no-cache-dir", "--force-reinstall", "--quiet",
        "/opt/greeter-1.0-py3-none-any.whl",
    ),
}  # fmt: skip

Runner = Callable[[Run], AbstractAsyncContextManager[Command]]


async def run_once(runner: Runner, step: Run) -> float:
    started = time.perf_counter()
    async with runner(step) as command:
        process = await asyncio.create_subprocess_exec(
            *command.argv,
            env=command.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_joiner(command.procs_files),
        )
        _, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{step.argv} failed: {err.decode()[-500:]}")
    return (time.perf_counter() - started) * 1000


def _joiner(procs_files: tuple[str, ...]) -> Callable[[], None] | None:
    from sandcastle.runtime import cgroups

    return (lambda: cgroups.join_groups(list(procs_files))) if procs_files else None


async def main(iterations: int) -> None:
    source = templates_dir() / "python" / "rootfs"
    with tempfile.TemporaryDirectory(dir=templates_dir().parent) as scratch:
        root = Path(scratch)
        rootfs = root / "rootfs"
        copy = await asyncio.create_subprocess_exec("cp", "-a", str(source), str(rootfs))
        await copy.wait()
        write_wheel(rootfs / "opt" / "greeter-1.0-py3-none-any.whl")
        host = BuildSandbox.prepare(rootfs, root, await inspect_host_pip())
        isolated = IsolatedSteps(host, BuildLimits())
        env = {"PATH": "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/root"}
        print(f"{'step':<28} {'bwrap (host root)':>22} {'gVisor sandbox':>22}   (median / p95 ms)")
        try:
            for label, argv in STEPS.items():
                step = Run(label, argv, env)
                bwrap: list[float] = []
                gvisor: list[float] = []
                await run_once(host.command, step)  # warm the page cache for both
                for _ in range(iterations):
                    bwrap.append(await run_once(host.command, step))
                    gvisor.append(await run_once(isolated.command, step))
                print(
                    f"{label:<28} {_cell(bwrap):>22} {_cell(gvisor):>22}",
                    flush=True,
                )
        finally:
            await isolated.aclose()
            host.tidy()
            shutil.rmtree(rootfs, ignore_errors=True)


def _cell(samples: list[float]) -> str:
    return f"{statistics.median(samples):.0f} / {p95(samples):.0f}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    asyncio.run(main(parser.parse_args().iterations))
