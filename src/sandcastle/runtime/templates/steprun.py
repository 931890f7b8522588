"""Running one build step's program: its output into the build's log and tail, its end awaited,
and the whole process group stopped when the build is cancelled or outgrows its disk."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections import deque
from collections.abc import Awaitable, Callable

from sandcastle.runtime import cgroups
from sandcastle.runtime.templates.buildenv import Command
from sandcastle.runtime.templates.buildlog import BuildLog

LineCallback = Callable[[str], None]


async def run_logged(
    command: Command, log: BuildLog, tail: deque[str], on_line: LineCallback | None = None
) -> int:
    """Run ``command``, its output (stdout and stderr) written to ``log`` and its non-empty
    lines kept in ``tail`` (and handed to ``on_line``); its exit status. ``OSError`` when it
    cannot start; a cancellation stops its process group."""
    procs_files = list(command.procs_files)
    process = await asyncio.create_subprocess_exec(
        *command.argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(command.env),
        # Its own process group, so a cancelled build can stop debootstrap's children too.
        start_new_session=True,
        preexec_fn=(lambda: cgroups.join_groups(procs_files)) if procs_files else None,
    )
    try:
        assert process.stdout is not None
        pending = b""
        while chunk := await process.stdout.read(65536):
            log.write(chunk)
            # Progress redraws end in \r; split on it too so the tail stays readable.
            *lines, pending = re.split(rb"\r\n|\r|\n", pending + chunk)
            for raw in lines:
                _line(raw, tail, on_line)
        _line(pending, tail, on_line)
        return await process.wait()
    except BaseException:
        await _terminate(process)
        raise


def _line(raw: bytes, tail: deque[str], on_line: LineCallback | None) -> None:
    line = raw.decode(errors="replace").rstrip()
    if line:
        tail.append(line)
        if on_line is not None:
            on_line(line)


async def first_of(main: Awaitable[None], watch: Awaitable[None]) -> None:
    """Await ``main`` while ``watch`` runs; whichever ends first (or raises) ends both."""
    tasks = [asyncio.ensure_future(main), asyncio.ensure_future(watch)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()


async def _terminate(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    # SIGTERM first: debootstrap's exit trap unmounts what it mounted inside the target.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(10):
            await asyncio.shield(process.wait())
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
