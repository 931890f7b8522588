"""Untrusted build steps: a Dockerfile's ``RUN`` lines, each in a gVisor sandbox of its own.

A tenant's Dockerfile is untrusted code, and a ``RUN`` step runs as root inside the image (apt
and pip need it). Under bubblewrap that root would be the host's, with the host's network.
Here the step runs as the root of a gVisor sandbox instead: the Sentry serves its system calls
(root inside holds no power outside), its root filesystem is the build's rootfs and nothing
else of the host (written through the gofer, ``--overlay2=none``), the seccomp deny-list of our
sandboxes applies, and its network is a namespace of its own with slirp4netns's outbound NAT,
the host's loopback (so the server's ports) out of reach, as for a sandbox with the internet.
Its processes live in cgroups of their own under the build's limits (CPU, memory, tasks); the
build's disk is watched by the builder.

Once one untrusted step has run, the rootfs is the tenant's: every later ``RUN`` runs here, ours
too, since a program of the image may have been replaced. Steps that edit the rootfs from the
host side (``COPY``, ``WORKDIR``, the closing hand-over to the sandbox user) resolve paths as a
chroot would (``rootfs.py``) and run nothing of the image.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandcastle.errors import RuntimeBackendError
from sandcastle.runtime import cgroups, network, seccomp, sentry
from sandcastle.runtime.local import DEFAULT_RUN_DIR, TOOL_ENV
from sandcastle.runtime.procs import run, which
from sandcastle.runtime.templates.buildenv import BuildSandbox, Command
from sandcastle.runtime.templates.recipes import Run

#: The cgroup "instance" build steps live under (``sandcastle/builds/<step>``): apart from every
#: server's sandboxes, so no reconciler takes a build step for a sandbox of its own.
CGROUP_INSTANCE = "builds"
#: Docker's default capabilities for a container's root: what apt, dpkg and pip need (chown,
#: setuid to ``_apt``, ...), held in the Sentry's user namespace, not the host's.
ROOT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip


@dataclass(frozen=True)
class BuildLimits:
    """What each untrusted step may use (the Sentry's own share is added on top)."""

    vcpus: int = 2
    memory_mb: int = 2048
    pids_max: int = 1024
    #: The image's whole size, watched while untrusted steps run.
    disk_mb: int = 16384


class IsolatedSteps:
    """Runs :class:`Run` steps in gVisor sandboxes over ``base.rootfs`` (one per step)."""

    def __init__(
        self,
        base: BuildSandbox,
        limits: BuildLimits,
        *,
        run_dir: Path = DEFAULT_RUN_DIR,
        runsc_path: str | None = None,
    ) -> None:
        self._base = base
        self._limits = limits
        self._runsc = runsc_path or which("runsc")
        #: Bundles, network namespaces and runsc's state of this build's steps.
        self._dir = run_dir / "builds" / secrets.token_hex(6)

    @contextlib.asynccontextmanager
    async def command(self, step: Run) -> AsyncIterator[Command]:
        """The command that runs ``step`` in a new sandbox; everything of it is gone after."""
        step_id = f"step-{secrets.token_hex(6)}"
        work = self._dir / step_id
        group = cgroups.SandboxCgroup(step_id, CGROUP_INSTANCE)
        netns = work / "netns"
        try:
            await asyncio.to_thread(work.mkdir, parents=True)
            await asyncio.to_thread(
                group.create,
                cgroups.Limits(
                    vcpus=self._limits.vcpus,
                    memory_mb=self._limits.memory_mb + sentry.SENTRY_MEMORY_MB,
                    pids_max=max(self._limits.pids_max, sentry.SENTRY_PIDS_MAX),
                ),
            )
            await network.create_netns(netns)
            await network.attach(str(netns), group.procs_files(), work / "slirp4netns.log")
            (work / "resolv.conf").write_text(network.RESOLV_CONF)
            bundle = work / "bundle"
            bundle.mkdir()
            spec = self._oci_spec(step, work / "resolv.conf")
            (bundle / "config.json").write_text(json.dumps(spec))
            # runsc's own netstack on the namespace's tap (``gvisor.py`` says why not
            # --network=sandbox); it returns with the step's exit status.
            argv = ["nsenter", f"--net={netns}", "--", *self._runsc_argv()]
            argv += ["run", f"--bundle={bundle}", step_id]
            yield Command(argv, dict(TOOL_ENV), tuple(group.procs_files()), shown=step.argv)
        finally:
            await asyncio.shield(self._remove(step_id, group, netns, work))

    async def aclose(self) -> None:
        await asyncio.to_thread(shutil.rmtree, self._dir, True)

    def _runsc_argv(self) -> list[str]:
        return sentry.runsc_argv(self._runsc, self._dir / "runsc", "host")

    async def _remove(
        self, step_id: str, group: cgroups.SandboxCgroup, netns: Path, work: Path
    ) -> None:
        # Whatever is left of the step (slirp4netns, a Sentry a cancelled build left) dies with
        # its cgroups; runsc's record of the container goes with the build's state directory.
        await asyncio.to_thread(group.kill_all)
        if (self._dir / "runsc").is_dir():
            with contextlib.suppress(RuntimeBackendError):
                await run(*self._runsc_argv(), "delete", "--force", step_id)
        with contextlib.suppress(RuntimeBackendError):
            await network.delete_netns(netns)
        await asyncio.to_thread(group.remove)
        await asyncio.to_thread(shutil.rmtree, work, True)

    def _oci_spec(self, step: Run, resolv_conf: Path) -> dict[str, Any]:
        base = self._base
        caps = ROOT_CAPABILITIES if step.uid == 0 else []
        mounts: list[dict[str, Any]] = [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro"]},
            # Private to the step: nothing written there is left in the template.
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]},
            sentry.oci_bind(resolv_conf, "/etc/resolv.conf"),
        ]
        mounts += [sentry.oci_bind(Path(host), i) for host, i in base.read_only_files()]
        return {
            "ociVersion": "1.0.2",
            "process": {
                "user": {"uid": step.uid, "gid": step.gid},
                "args": list(step.argv),
                "env": [f"{k}={v}" for k, v in base.env(step).items()],
                "cwd": step.cwd,
                # As Docker gives a container's processes: none inheritable or ambient.
                "capabilities": {
                    "bounding": caps,
                    "effective": caps,
                    "permitted": caps,
                    "inheritable": [],
                    "ambient": [],
                },
                "rlimits": [
                    {"type": "RLIMIT_NOFILE", "hard": 65536, "soft": 65536},
                    {
                        "type": "RLIMIT_NPROC",
                        "hard": self._limits.pids_max,
                        "soft": self._limits.pids_max,
                    },
                ],
            },
            "root": {"path": str(base.rootfs), "readonly": False},
            "hostname": "build",
            "mounts": mounts,
            "linux": {
                "namespaces": [{"type": kind} for kind in ("pid", "ipc", "uts", "mount")],
                "seccomp": seccomp.oci_profile(),
            },
        }


def available() -> bool:
    """Whether untrusted steps can run here: gVisor's runsc and slirp4netns are installed."""
    return os.path.isabs(which("runsc")) and network.available()
