"""A build context directory as the server takes it: a gzip-compressed tar archive."""

from __future__ import annotations

import os
import tarfile
import tempfile
from typing import IO


def tar_directory(directory: str | os.PathLike[str]) -> IO[bytes]:
    """``directory``'s tree as a ``.tar.gz`` in a temporary file, rewound (deleted on close).
    Links are archived as links: the server refuses one that leads out of the context."""
    if not os.path.isdir(directory):
        raise NotADirectoryError(f"the build context {os.fspath(directory)!r} is not a directory")
    archive = tempfile.TemporaryFile()
    try:
        with tarfile.open(fileobj=archive, mode="w:gz") as tar:
            for entry in sorted(os.listdir(directory)):
                tar.add(os.path.join(directory, entry), arcname=entry)
        archive.seek(0)
    except BaseException:
        archive.close()
        raise
    return archive
