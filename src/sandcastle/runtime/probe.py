"""Does gVisor work on this host? Found out by starting one tiny sandbox, not by guessing.

A ``runsc`` binary can be present and still fail (no systrap platform, a kernel or seccomp
setting it dislikes, missing privileges), so the only trustworthy test is a real ``runsc run``:
the host's ``/`` read-only as the root, every namespace new, no network, an unprivileged user
without capabilities, running ``true``. It takes a fraction of a second when gVisor works.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sandcastle.runtime.procs import which

#: How long the probe sandbox may take to start and exit before gVisor counts as broken.
PROBE_TIMEOUT_S = 20.0
#: How long ``runsc --version`` or a forced delete may take.
_COMMAND_TIMEOUT_S = 10.0
_REASON_MAX_CHARS = 300


async def runsc_problem(
    runsc: str, work_dir: Path, *, timeout_s: float = PROBE_TIMEOUT_S
) -> str | None:
    """Start one tiny gVisor sandbox; ``None`` if it ran and exited cleanly, else why not.

    The reason is one line meant for a log or an error message. Everything the probe creates
    (a temporary directory under ``work_dir``, runsc's state, the container) is gone afterwards.
    """
    executable = shutil.which(which(runsc))
    if executable is None:
        return f"runsc not found ({runsc})"
    await asyncio.to_thread(work_dir.mkdir, parents=True, exist_ok=True)
    # Short names: runsc keeps sockets under its --root, and Unix socket paths are limited.
    tmp = Path(tempfile.mkdtemp(prefix=".runsc-probe-", dir=work_dir))
    container_id = f"probe-{secrets.token_hex(4)}"
    state, bundle, output = tmp / "state", tmp / "bundle", tmp / "output"
    started = clean = False
    try:
        state.mkdir()
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps(_probe_spec()))
        started = True
        returncode = await _run(
            [
                executable,
                "--root",
                str(state),
                "--platform=systrap",
                "--network=none",
                "--ignore-cgroups",
                "run",
                "--bundle",
                str(bundle),
                container_id,
            ],
            output,
            timeout_s,
        )
        if returncode == 0:
            clean = True
            return None
        if returncode is None:
            return f"runsc did not start and finish a sandbox within {timeout_s:g} s"
        detail = _last_line(output)
        return f"runsc run exited with {returncode}" + (f": {detail}" if detail else "")
    except OSError as exc:
        return f"cannot run {executable}: {exc}"
    finally:
        if started and not clean:
            # A failed, timed-out or cancelled run may leave the sandbox and gofer behind.
            with contextlib.suppress(OSError):
                await _run([executable, "--root", str(state), "delete", "--force", container_id])
        await asyncio.to_thread(shutil.rmtree, tmp, True)


async def runsc_version(runsc: str) -> str | None:
    """The version ``runsc --version`` reports (``0.0~20240729.0``), or ``None``."""
    executable = shutil.which(which(runsc))
    if executable is None:
        return None
    with tempfile.TemporaryDirectory(prefix="runsc-version-") as tmp:
        output = Path(tmp) / "output"
        try:
            returncode = await _run([executable, "--version"], output)
        except OSError:
            return None
        if returncode != 0:
            return None
        for line in output.read_text(errors="replace").splitlines():
            if line.startswith("runsc version "):
                return line.removeprefix("runsc version ").strip()
    return None


def _probe_spec() -> dict[str, Any]:
    """An OCI 1.0.2 bundle config: host ``/`` read-only, ``true`` as nobody, nothing granted."""
    true = "/usr/bin/true" if os.path.exists("/usr/bin/true") else "/bin/true"
    no_caps: list[str] = []
    return {
        "ociVersion": "1.0.2",
        "root": {"path": "/", "readonly": True},
        "hostname": "probe",
        "process": {
            "terminal": False,
            "user": {"uid": 65534, "gid": 65534},
            "args": [true],
            "env": ["PATH=/usr/bin:/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": no_caps,
                "effective": no_caps,
                "inheritable": no_caps,
                "permitted": no_caps,
                "ambient": no_caps,
            },
            "noNewPrivileges": True,
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
        ],
        "linux": {
            "namespaces": [{"type": kind} for kind in ("pid", "network", "ipc", "uts", "mount")],
        },
    }


async def _run(
    argv: list[str], output: Path | None = None, timeout_s: float = _COMMAND_TIMEOUT_S
) -> int | None:
    """Run ``argv`` with its output in a file; its exit status, or ``None`` if it timed out.

    Output goes to a file, not a pipe: runsc's sandbox and gofer may inherit the descriptors
    and keep a pipe open after ``runsc`` itself has exited.
    """
    sink = await asyncio.to_thread(open, output if output is not None else os.devnull, "wb")
    with sink:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink
        )
    try:
        async with asyncio.timeout(timeout_s):
            return await process.wait()
    except TimeoutError:
        return None
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def _last_line(output: Path) -> str:
    try:
        lines = [line.strip() for line in output.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    return lines[-1][:_REASON_MAX_CHARS] if lines else ""
