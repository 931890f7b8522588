"""Running host commands for the runtime: argv lists only, failures translated once."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

from sandcastle.errors import RuntimeBackendError


def which(tool: str) -> str:
    """The tool's absolute path, looked up in PATH and the sbin directories.

    Administrative tools (mkfs.ext4, losetup) live in sbin, which a service's PATH may lack.
    """
    search = ":".join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
    return shutil.which(tool, path=search) or tool


async def run(*argv: str, pass_fds: tuple[int, ...] = ()) -> str:
    """Run a command to completion; its combined output, or ``RuntimeBackendError``."""
    try:
        proc = await asyncio.create_subprocess_exec(
            which(argv[0]),
            *argv[1:],
            pass_fds=pass_fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except OSError as exc:
        raise RuntimeBackendError(f"cannot run {argv[0]}: {exc}") from exc
    out, _ = await proc.communicate()
    text = out.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise RuntimeBackendError(f"{argv[0]} failed ({proc.returncode}): {text}")
    return text
