"""A sandbox's root filesystem: the template read-only, under its own size-limited layer.

The writable layer lives on a sparse ext4 image of ``disk_mb``, loop-mounted, so writing past
the limit fails inside the sandbox with ``ENOSPC`` and the host's disk is untouched beyond it.
The overlay joining template and layer is a host mount, so it outlives a server restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from sandcastle.agent import layout
from sandcastle.errors import RuntimeBackendError
from sandcastle.runtime import beneath
from sandcastle.runtime.procs import run

_UNSAFE = frozenset(",:")  # overlay mount options split on these


@dataclass(frozen=True)
class LayerPaths:
    image: Path  # the sparse ext4 file
    mount: Path  # where the image is mounted; holds upper/ and work/
    root: Path  # the overlay: what the sandbox sees as /

    @property
    def upper(self) -> Path:
        return self.mount / "upper"

    @property
    def work(self) -> Path:
        return self.mount / "work"


async def create(
    paths: LayerPaths,
    template_rootfs: Path,
    disk_mb: int,
    files: dict[str, str] | None = None,
    *,
    copy_from: Path | None = None,
    user_files: dict[str, str] | None = None,
) -> None:
    """Make the image, mount it, seed ``files`` into the layer, mount the overlay at ``root``.

    ``files`` belong to root, ``user_files`` to the sandbox user (path inside → content).

    ``copy_from`` is a layer saved by ``save``: its files (whiteouts and overlay attributes
    included) become this layer's before the overlay is mounted.
    """
    for path in (paths.image, paths.mount, paths.root, template_rootfs):
        if _UNSAFE & set(str(path)):
            raise RuntimeBackendError(f"layer paths may not contain ',' or ':': {path}")
    await asyncio.to_thread(_new_image, paths, disk_mb)
    # No journal and lazy init: the image is scratch space that dies with the sandbox, and
    # creation stays in the tens of milliseconds. No reserved blocks: disk_mb is the user's.
    await run(
        "mkfs.ext4", "-q", "-F", "-O", "^has_journal",
        "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", "-m", "0",
        str(paths.image),
    )  # fmt: skip
    await run("mount", "-o", "loop,nosuid,nodev", str(paths.image), str(paths.mount))
    paths.upper.mkdir(exist_ok=True)
    paths.work.mkdir(exist_ok=True)
    if copy_from is not None:
        await run("cp", "-a", f"{copy_from}/.", str(paths.upper))
    # Seeded before the overlay is mounted: changing an upper directory under a live overlay
    # is undefined behaviour. A copied layer is the sandbox's: seed() never follows its links.
    await asyncio.to_thread(seed, paths.upper, template_rootfs, files or {}, user_files or {})
    await _mount_overlay(template_rootfs, paths)


def _new_image(paths: LayerPaths, disk_mb: int) -> None:
    """The mount points, and a sparse image file of ``disk_mb``."""
    paths.mount.mkdir(parents=True, exist_ok=True)
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.image, "wb") as image:
        image.truncate(disk_mb * 1024 * 1024)


async def _mount_overlay(template_rootfs: Path, paths: LayerPaths) -> None:
    """Mount the overlay at ``paths.root``, its directories named by descriptor.

    ``/proc/self/mountinfo`` inside a sandbox shows the overlay's options as they were given:
    ``/proc/self/fd/N`` names no host path (the template's and the data directory's would).
    """
    flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
    fds: list[int] = []
    try:
        fds.append(os.open(template_rootfs, flags))  # the server's own: its links are ours
        for directory in (paths.upper, paths.work):
            fds.append(os.open(directory, flags | os.O_NOFOLLOW))
        lower, upper, work = (f"/proc/self/fd/{fd}" for fd in fds)
        await run(
            "mount", "-t", "overlay", "overlay",
            "-o", f"lowerdir={lower},upperdir={upper},workdir={work}",
            str(paths.root),
            pass_fds=tuple(fds),
        )  # fmt: skip
    except OSError as exc:
        raise RuntimeBackendError(f"cannot open the overlay's directories: {exc}") from exc
    finally:
        for fd in fds:
            os.close(fd)


async def save(paths: LayerPaths, target: Path) -> None:
    """Copy the layer's files (not its free space) to ``target``.

    The sandbox must be stopped meanwhile, or the copy may catch a file half written.
    """
    await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
    await run("cp", "-a", f"{paths.upper}/.", str(target))


async def remove(paths: LayerPaths) -> None:
    """Unmount overlay and image and delete the image. Idempotent."""
    for mountpoint, detach_loop in ((paths.root, False), (paths.mount, True)):
        if await asyncio.to_thread(os.path.ismount, mountpoint):
            flags = ["-d"] if detach_loop else []
            try:
                await run("umount", *flags, str(mountpoint))
            except RuntimeBackendError:
                if not await asyncio.to_thread(os.path.ismount, mountpoint):
                    continue  # unmounted meanwhile (another process cleaning up)
                # Something still holds it (a process mid-exit): detach lazily; the kernel
                # finishes when the last user goes.
                await run("umount", "-l", *flags, str(mountpoint))
    with contextlib.suppress(FileNotFoundError):
        await asyncio.to_thread(paths.image.unlink)


def seed(
    upper: Path, template_rootfs: Path, files: dict[str, str], user_files: dict[str, str]
) -> None:
    """Write ``files`` (root's) and ``user_files`` (the sandbox user's; one already there is
    kept) into the layer ``upper``, without following any link in it (:mod:`.beneath`)."""

    def template_attrs(inner: str) -> tuple[int, int, int]:
        # A new upper directory's attributes are what the overlay shows: /tmp must stay 1777.
        try:
            st = os.lstat(template_rootfs / inner.lstrip("/"))
        except OSError:
            return 0o755, 0, 0
        if not stat.S_ISDIR(st.st_mode):
            return 0o755, 0, 0
        return st.st_mode & 0o7777, st.st_uid, st.st_gid

    for seeded, uid, gid in ((files, 0, 0), (user_files, layout.USER_UID, layout.USER_GID)):
        for inner, content in seeded.items():
            beneath.write_file(
                upper,
                inner,
                content.encode(),
                mode=0o644,
                uid=uid,
                gid=gid,
                dir_attrs=template_attrs,
                # The user's own, copied from a saved layer: theirs to keep.
                keep_existing=uid != 0,
            )
