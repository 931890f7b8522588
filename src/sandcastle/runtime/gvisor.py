"""The ``gvisor`` backend: each sandbox is a gVisor sandbox (``runsc``), whose memory can be saved.

Layer, cgroups, run directories and channel are ``local.py``'s; the difference is what runs in
them. ``runsc`` (root, inside the sandbox's cgroups, ``--ignore-cgroups`` so it leaves them to us)
starts a user-space kernel, the Sentry, on the systrap platform; the sandbox's system calls are
served by it and never reach the host kernel directly. Its root filesystem is the sandbox's
overlay (``--overlay2=none``: writes go to our size-limited layer, not to memory), the agent
package and the channel directory are read-only binds, the network is the Sentry's own loopback
(``--network=none``), and the agent dials the host's socket (``--host-uds=open``: connecting out
only; a listening host socket inside would break checkpoints). The seccomp deny-list of the
``bwrap`` backend applies inside as well (``--oci-seccomp``), the user is ``HOST_UID``.

Memory snapshots: ``checkpoint`` has the agent hang up (``AgentLink.detach``), then
``runsc checkpoint`` writes ``checkpoint.img`` into the image directory; for a snapshot the
sandbox is paused meanwhile and its layer's files are copied beside it (``layer/``), then it
goes on. ``restore`` starts a sandbox from such an image. The runtime state of ``runsc`` lives
in ``<run_dir>/<instance>/runsc``; each sandbox's bundle in ``<run_dir>/<instance>/<id>/bundle``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from sandcastle import waiting
from sandcastle.agent import layout, memguard
from sandcastle.errors import RuntimeBackendError, SandboxBusyError
from sandcastle.runtime import cgroups, layers, network, seccomp, sentry
from sandcastle.runtime.base import LaunchSpec, ProcessState
from sandcastle.runtime.channel import AgentLink, AgentRequestError
from sandcastle.runtime.local import (
    DEFAULT_RUN_DIR,
    TEMPLATE_BOOT_PREFIX,
    LocalRuntime,
    sandbox_env,
)
from sandcastle.runtime.procs import run, which

log = logging.getLogger("sandcastle.gvisor")

#: Languages whose kernels are started in a template's memory image. Not TypeScript: every
#: sandbox restored from the image would carry an idle Deno kernel (~140 MB under gVisor), which
#: the spare policy (``services/contexts.py``, ``SPARE_MIN_MEMORY_MB``) denies sandboxes under
#: 1 GB; their first TypeScript context starts Deno cold instead, as under bwrap.
TEMPLATE_LANGUAGES = ("python",)
_SECRET = "agent.secret"
#: Bumped when what a template image holds changes (its OCI spec: mounts, limits), so that
#: images made by an older server are made again rather than refused by ``runsc restore``.
IMAGE_FORMAT = 4
#: Images restored often or soon are written with their pages uncompressed: runsc's default
#: (flate) spent most of a checkpoint compressing and most of a restore inflating
#: (``docs/PERFORMANCE.md``). The template image, which every cold create and pool entry
#: restores: cold create -> first result 1432 -> 711 ms (median of 8), 22 -> 83 MB once per
#: template. A hibernation, with 10 MiB of state: hibernate 1.2-1.7 -> 0.4-0.6 s, resume
#: 1.4-1.7 -> 0.7-1.1 s, 33 -> 94 MB until the resume. Snapshots, kept for long
#: (``org_max_snapshots`` of them per org), stay compressed.
UNCOMPRESSED = "--compression=none"


class GvisorRuntime(LocalRuntime):
    name = "gvisor"
    supports_memory_snapshots = True
    supports_internet = True
    # Every process of a sandbox reaches the host through the Sentry: a pid proves nothing.
    trust_peer_pid = False

    def __init__(
        self,
        sandboxes_dir: Path,
        *,
        instance: str,
        run_dir: Path = DEFAULT_RUN_DIR,
        runsc_path: str | None = None,
        pids_max: int = 512,
    ) -> None:
        super().__init__(sandboxes_dir, instance=instance, run_dir=run_dir)
        self._runsc = runsc_path or which("runsc")
        #: The process limit sandboxes get (template images hold it: see ``_oci_spec``).
        self._pids_max = pids_max
        self._state = self._run_dir / "runsc"
        #: Template root → its memory image, once ``prepare_template`` made or found it.
        self._template_images: dict[Path, Path] = {}

    # --- template images -------------------------------------------------------------------

    def _template_image(self, rootfs: Path) -> Path:
        """Where the memory image of a booted sandbox of this template build lives.

        Keyed by the build and by the agent's code: the image holds a running agent, which
        must be the code this server speaks to (and mounts into the sandbox).
        """
        try:
            build = json.loads((rootfs.parent / "manifest.json").read_text())["build_id"]
        except (OSError, ValueError, KeyError):
            build = "unknown"
        parts = (rootfs.resolve(), build, self._agent_package().name, self._pids_max, IMAGE_FORMAT)
        key = hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:20]
        return self._dir.parent / "template-images" / key

    async def prepare_template(self, rootfs: Path) -> None:
        """Boot the template once with a started kernel of each language and save it, so
        creates restore that instead of starting Python, numpy and pandas cold (seconds under
        gVisor). Done once per template build and agent version; kept across restarts."""
        await asyncio.to_thread(self._agent_package)  # copied once, off the event loop
        image = self._template_image(rootfs)
        if (image / "checkpoint.img").exists():
            self._template_images[rootfs] = image
            return
        staging = image.with_name(image.name + ".partial")
        await asyncio.to_thread(shutil.rmtree, staging, True)
        boot_id = f"{TEMPLATE_BOOT_PREFIX}{image.name[:12]}"
        spec = LaunchSpec(
            sandbox_id=boot_id,
            rootfs=rootfs,
            vcpus=1,
            memory_mb=2048,
            disk_mb=1024,
            pids_max=self._pids_max,
            cwd=layout.USER_HOME,
        )
        started = asyncio.get_running_loop().time()
        try:
            link = await self.launch(spec)
            await link.wait_connected(60.0)
            await link.call("warm", {"languages": list(TEMPLATE_LANGUAGES)})
            await self._checkpoint(boot_id, staging, keep_running=True, compress=False)
        finally:
            await self.destroy(boot_id)
        staging.rename(image)
        self._template_images[rootfs] = image
        log.info(
            "template image for %s ready in %.1f s (%d MB)",
            rootfs,
            asyncio.get_running_loop().time() - started,
            _size_of(image) // 2**20,
        )

    async def prune_template_images(self) -> None:
        root = self._dir.parent / "template-images"
        if not root.is_dir():
            return
        keep = set(self._template_images.values())
        for image in root.iterdir():
            if image not in keep:
                log.info("deleting the template image %s (its template changed or is gone)", image)
                await asyncio.to_thread(shutil.rmtree, image, True)

    async def launch(self, spec: LaunchSpec) -> AgentLink:
        image = self._template_images.get(spec.rootfs)
        usable = spec.pids_max == self._pids_max and not spec.internet
        if image is None or not usable or not (image / "checkpoint.img").exists():
            return await self._start(spec, image=None)
        return await self._start(spec, image=image)

    def _bundle(self, sandbox_id: str) -> Path:
        return self._run_dir / sandbox_id / "bundle"

    def _runsc_argv(self, *args: str, network: str = "none") -> list[str]:
        return [*sentry.runsc_argv(self._runsc, self._state, network, "--host-uds=open"), *args]

    async def _runsc_call(self, *args: str) -> str:
        return await run(*self._runsc_argv(*args))

    def _host_limits(self, spec: LaunchSpec) -> cgroups.Limits:
        return sentry.host_limits(spec)

    # --- start -----------------------------------------------------------------------------

    async def _spawn(
        self,
        spec: LaunchSpec,
        layer: layers.LayerPaths,
        chan: Path,
        group: cgroups.SandboxCgroup,
        image: Path | None,
    ) -> None:
        netns = await self._prepare_network(spec, group) if spec.internet else None
        bundle = self._bundle(spec.sandbox_id)
        bundle.mkdir(parents=True, exist_ok=True)
        (bundle / "config.json").write_text(json.dumps(self._oci_spec(spec, layer, chan, netns)))
        # gVisor has no OOM killer: the agent's guard holds the sandbox's code to its memory.
        sentry.write_guard_budget(spec, chan)
        self._state.mkdir(parents=True, exist_ok=True)
        # A container left from a hibernation under this id would block the new one.
        await self._delete_container(spec.sandbox_id)
        if image is None:
            command = ["run", "--detach", f"--bundle={bundle}", spec.sandbox_id]
        else:
            command = [
                "restore", "--detach", f"--bundle={bundle}", f"--image-path={image}",
                spec.sandbox_id,
            ]  # fmt: skip
        # runsc returns once the sandbox runs (the Sentry keeps the log open).
        argv = self._runsc_argv(*command)
        if netns:
            # runsc's own netstack (--network=sandbox) cannot be used: this runsc takes every
            # namespace for the host's on this kernel (it tests /proc/sys/net/core/rmem_default,
            # which all namespaces have now). So runsc starts inside the sandbox's namespace and
            # the Sentry uses it as its host network: slirp4netns's tap, its own loopback.
            argv = ["nsenter", f"--net={netns}", "--", *self._runsc_argv(*command, network="host")]
        proc = await self._exec_in_group(
            argv,
            spec.sandbox_id,
            group,
            as_uid=None,
        )
        code = await proc.wait()
        if code != 0:
            log_tail = _tail(self._log_path(spec.sandbox_id))
            raise RuntimeBackendError(f"runsc {command[0]} failed ({code}): {log_tail}")

    async def _prepare_network(self, spec: LaunchSpec, group: cgroups.SandboxCgroup) -> str:
        """A network namespace of the sandbox's own, with slirp4netns's tap device (outbound
        NAT, the host's loopback out of reach) and its own loopback; its path."""
        await self._teardown_network(spec.sandbox_id)  # a leftover would hold a stale tap
        path = await network.create_netns(self._netns_path(spec.sandbox_id))
        await network.attach(path, group.procs_files(), self._log_path(spec.sandbox_id))
        return path

    async def _teardown_network(self, sandbox_id: str) -> None:
        """Stop the sandbox's slirp4netns (all that is left in its cgroups once runsc is gone)
        and delete its network namespace."""
        path = self._netns_path(sandbox_id)
        if path.exists():
            group = self._group(sandbox_id)
            if group.exists():
                await asyncio.to_thread(group.kill_all)
            await network.delete_netns(path)

    def _netns_path(self, sandbox_id: str) -> Path:
        return self._run_dir / sandbox_id / "netns"

    def _oci_spec(
        self, spec: LaunchSpec, layer: layers.LayerPaths, chan: Path, netns: str | None
    ) -> dict[str, Any]:
        no_caps: list[str] = []
        return {
            "ociVersion": "1.0.2",
            "process": {
                "user": {"uid": layout.USER_UID, "gid": layout.USER_GID},
                "args": [f"{layout.AGENT_VENV}/bin/python", "-m", "sandcastle.agent"],
                "env": [f"{k}={v}" for k, v in sandbox_env(spec).items()],
                "cwd": layout.USER_HOME,
                "noNewPrivileges": True,
                "capabilities": {
                    "bounding": no_caps,
                    "effective": no_caps,
                    "permitted": no_caps,
                    "inheritable": no_caps,
                    "ambient": no_caps,
                },
                "rlimits": [
                    {"type": "RLIMIT_NOFILE", "hard": 65536, "soft": 65536},
                    # The Sentry counts the sandbox user's tasks against it (threads too, as
                    # Linux does): a fork bomb is refused inside, before the host's pids limit
                    # (which must leave the Sentry its own threads) would take the sandbox down.
                    {"type": "RLIMIT_NPROC", "hard": spec.pids_max, "soft": spec.pids_max},
                ],
            },
            "root": {"path": str(layer.root), "readonly": False},
            "hostname": "sandbox",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro"]},
                sentry.oci_bind(chan, layout.CHANNEL_DIR),
                sentry.oci_bind(self._agent_package(), layout.AGENT_PACKAGE_DIR),
            ],
            "linux": {
                # With the internet, runsc stays in the namespace it was started in (above).
                "namespaces": [
                    {"type": kind}
                    for kind in ("pid", "ipc", "uts", "mount", *(() if netns else ("network",)))
                ],
                "seccomp": seccomp.oci_profile(),
            },
        }

    async def _delete_container(self, sandbox_id: str) -> None:
        """Remove runsc's record of the container (its state files are named after the id).

        Once the sandbox's cgroups are empty the files are all there is; ``runsc delete`` would
        spend over a second finding its processes gone, so it runs only while something lives.
        """
        leftovers = list(self._state.glob(f"*{sandbox_id}*"))
        if not leftovers:
            return
        if self._group(sandbox_id).pids():
            with contextlib.suppress(RuntimeBackendError):
                await self._runsc_call("delete", "--force", sandbox_id)  # may be gone already
        for leftover in leftovers:
            if leftover.is_dir():
                await asyncio.to_thread(shutil.rmtree, leftover, True)
            else:
                leftover.unlink(missing_ok=True)

    async def _stop_processes(self, sandbox_id: str) -> None:
        await super()._stop_processes(sandbox_id)  # every process killed, waited for
        await self._delete_container(sandbox_id)
        await self._teardown_network(sandbox_id)

    # --- memory snapshots ------------------------------------------------------------------

    async def checkpoint(self, sandbox_id: str, image_dir: Path, *, keep_running: bool) -> int:
        # A snapshot (the sandbox runs on) is kept for long: compressed. A hibernated sandbox
        # waits for its resume: not (``UNCOMPRESSED``).
        return await self._checkpoint(
            sandbox_id, image_dir, keep_running=keep_running, compress=keep_running
        )

    async def _checkpoint(
        self, sandbox_id: str, image_dir: Path, *, keep_running: bool, compress: bool
    ) -> int:
        flags = () if compress else (UNCOMPRESSED,)
        link = self._links.get(sandbox_id) or await self.adopt(sandbox_id)
        if link is None:
            raise RuntimeBackendError(f"sandbox {sandbox_id} has no processes to save")
        if not link.connected:
            await link.wait_connected(10.0)
        await asyncio.to_thread(image_dir.mkdir, parents=True, exist_ok=True)
        try:
            await link.detach()
        except AgentRequestError as exc:
            if exc.code == "busy":
                raise SandboxBusyError(
                    f"sandbox {sandbox_id} is running code ({exc}); try again when it is done"
                ) from exc
            raise
        try:
            if keep_running:
                await self._runsc_call("pause", sandbox_id)
                try:
                    await layers.save(self._layer(sandbox_id), image_dir / "layer")
                    await self._runsc_call(
                        "checkpoint",
                        *flags,
                        "--leave-running",
                        f"--image-path={image_dir}",
                        sandbox_id,
                    )
                finally:
                    await self._runsc_call("resume", sandbox_id)
            else:
                clock = asyncio.get_running_loop().time
                t0 = clock()
                await self._runsc_call(
                    "checkpoint", *flags, f"--image-path={image_dir}", sandbox_id
                )
                t1 = clock()
                # The image is written. slirp4netns would keep the cgroups busy: it goes now,
                # with the network namespace (the restore makes new ones).
                await self._teardown_network(sandbox_id)
                await self._wait_exited(sandbox_id)
                t2 = clock()
                await self._delete_container(sandbox_id)
                log.info(
                    "hibernated %s: checkpoint %.0f ms, exit %.0f ms, delete %.0f ms",
                    sandbox_id, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (clock() - t2) * 1e3,
                )  # fmt: skip
        finally:
            if keep_running or self._group(sandbox_id).pids():
                await link.listen()  # the agent redials (a failed hibernation goes on running)
        secret = self._dir / sandbox_id / _SECRET
        if secret.exists():
            shutil.copy2(secret, image_dir / _SECRET)
        return await asyncio.to_thread(_size_of, image_dir)

    async def _wait_exited(self, sandbox_id: str, timeout_s: float = 10.0) -> None:
        group = self._group(sandbox_id)
        if not await waiting.until(lambda: not group.pids(), timeout_s=timeout_s, interval_s=0.02):
            await asyncio.to_thread(group.kill_all)

    async def restore(self, spec: LaunchSpec, image_dir: Path) -> AgentLink:
        if not (image_dir / "checkpoint.img").exists():
            raise RuntimeBackendError(f"no memory image in {image_dir}")
        return await self._start(spec, image=image_dir)

    def _image_layer(self, image: Path | None) -> Path | None:
        if image is None or not (image / "layer").is_dir():
            return None
        return image / "layer"

    def _user_seed(self, spec: LaunchSpec) -> dict[str, str]:
        # runsc mounts a tmpfs on /tmp when the root's /tmp is empty: memory, outside disk_mb
        # and the files a snapshot saves. The guard's kill count there keeps /tmp the layer's.
        return {**super()._user_seed(spec), memguard.KILLS_FILE: "0"}

    async def poll(self, sandbox_id: str) -> ProcessState:
        state = await super().poll(sandbox_id)
        guard_kills = sentry.guard_kills(self._layer(sandbox_id).upper)
        return dataclasses.replace(state, oom_kills=state.oom_kills + guard_kills)

    def _adopt_secret(self, sandbox_id: str, image: Path) -> None:
        target = self._dir / sandbox_id / _SECRET
        if (image / _SECRET).exists() and not target.exists():
            shutil.copy2(image / _SECRET, target)
            # The image's secret is every fork's: this agent gets its own at its first hello.
            self._links[sandbox_id].rekey()


def _tail(path: Path, size: int = 600) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - size))
            data = log.read(size)
    except OSError:
        return "(no log)"
    return data.decode(errors="replace").strip() or "(empty log)"


def _size_of(directory: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                total += os.lstat(path).st_blocks * 512
    return total
