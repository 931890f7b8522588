"""A build context sent through the API: a tar archive (plain, gzip, bzip2 or xz), unpacked.

The archive is the client's, so untrusted: its headers are read first and it is refused whole
when it declares more than the build context limits allow (a small compressed archive can
declare terabytes), and then unpacked with the standard library's ``data`` filter (PEP 706),
which refuses absolute paths and ``..``, links leading out or to an absolute path, and device
files and FIFOs, and drops set-uid bits and owners. ``from_dockerfile.check_context`` checks
the unpacked tree once more, as it checks any context.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from sandcastle.runtime.templates.from_dockerfile import (
    MAX_CONTEXT_BYTES,
    MAX_CONTEXT_ENTRIES,
    BuildContextError,
)

#: What a client may upload as the archive itself.
MAX_ARCHIVE_BYTES = 512 * 2**20


def unpack(archive: Path, target: Path) -> None:
    """Unpack the context archive at ``archive`` into the empty directory ``target``; a
    :class:`BuildContextError` says what it holds that a build context may not."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _checked_members(tar)
            tar.extractall(target, members=members, filter="data")
    except tarfile.FilterError as exc:
        raise BuildContextError(f"the build context archive is refused: {exc}") from exc
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BuildContextError(f"the build context is not a readable tar archive: {exc}") from exc


def _checked_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    declared = 0
    for member in tar:
        members.append(member)
        declared += max(member.size, 0)
        if len(members) > MAX_CONTEXT_ENTRIES or declared > MAX_CONTEXT_BYTES:
            raise BuildContextError(
                f"the build context archive holds more than {MAX_CONTEXT_ENTRIES} entries or "
                f"{MAX_CONTEXT_BYTES // 2**20} MiB"
            )
        if member.isdev() or member.isfifo():
            raise BuildContextError(f"the build context's {member.name} is a device or FIFO")
    return members
