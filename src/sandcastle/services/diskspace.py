"""The host's free-space floor: what stores more on the host is refused below it.

Sandboxes' layers are sparse images that fill as their code writes, snapshots and artifacts
outlive their sandboxes: each is bounded on its own, but together they could still fill the
disk the server's database lives on, and a full disk loses records. So every operation that
commits to storing more first checks that the data directory's filesystem keeps
``min_free_disk_mb`` free, and answers :class:`InsufficientStorageError` if not (a 500 whose
detail names the floor: the envelope's documented codes have no 507).
"""

from __future__ import annotations

import os
from pathlib import Path

from sandcastle.config import Settings
from sandcastle.errors import InsufficientStorageError


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer could still store on ``path``'s filesystem."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def ensure_free(settings: Settings, what: str, where: Path | None = None) -> None:
    """Raise :class:`InsufficientStorageError` naming ``what`` if the floor is reached on the
    filesystem of ``where`` (the data directory unless given)."""
    floor = settings.min_free_disk_mb * 1024 * 1024
    if floor == 0:
        return
    directory = where or settings.data_dir
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    free = free_bytes(directory)
    if free < floor:
        raise InsufficientStorageError(
            f"cannot {what}: the server's disk has {free // 2**20} MiB free, below its floor of "
            f"{settings.min_free_disk_mb} MiB (min_free_disk_mb)"
        )
