"""Running host commands for the runtime: argv lists only, failures translated once."""

from __future__ import annotations

import asyncio
import subprocess

from sandcastle.errors import RuntimeBackendError


async def run(*argv: str) -> str:
    """Run a command to completion; its combined output, or ``RuntimeBackendError``."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    except OSError as exc:
        raise RuntimeBackendError(f"cannot run {argv[0]}: {exc}") from exc
    out, _ = await proc.communicate()
    text = out.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise RuntimeBackendError(f"{argv[0]} failed ({proc.returncode}): {text}")
    return text
