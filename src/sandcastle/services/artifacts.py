"""Artifacts: the files a code run created or changed, copied out of the sandbox.

Which files: the agent's ``files.snapshot`` of the context's working directory is taken before
and after the run; every regular file that is new or whose size or mtime changed is the run's.
(Hidden entries and symlinks are not in snapshots. Two runs that execute at the same time in
contexts sharing a directory cannot tell whose file is whose: both claim it.)

Where they go: their bytes are pulled through the agent's ``file.read.*`` methods, hashed while
they stream, and written to ``<data_dir>/artifacts/<run id>/<artifact id>`` on the host, so
they outlive the sandbox until they expire. Nothing from inside the sandbox ever names a host
path: files are stored under ids this server made up.

Bounds: at most ``run_artifacts_max_files`` entries per run, ``run_artifact_max_bytes`` per
file and ``run_artifacts_max_total_bytes`` for all of a run's files; none is copied while the
host's disk is at its free-space floor (``diskspace.py``). A file over a size bound (or one
that changed while it was read) is listed with no content (``sha256`` null) and the reason in
its ``metadata``; files past the count bound are not listed, and every entry of the run says
how many were left out. Runs of zeros are stored as holes, so a sparse file costs the host
what it really holds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mimetypes
import os
import posixpath
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from sandcastle.config import Settings
from sandcastle.domain.runs import Artifact, new_artifact_id
from sandcastle.errors import (
    AgentError,
    InsufficientStorageError,
    NotFoundError,
    SandcastleError,
)
from sandcastle.runtime.channel import AgentLink
from sandcastle.services.auth import Principal
from sandcastle.services.diskspace import ensure_free
from sandcastle.services.files import (
    FileDownload,
    FileInfo,
    FilesSnapshot,
    call,
    take_snapshot,
)
from sandcastle.services.sandboxes import SandboxService
from sandcastle.store.runs import RunRepository

log = logging.getLogger("sandcastle.artifacts")

#: Bytes read from the host's disk per chunk when an artifact is served.
READ_CHUNK = 1024 * 1024
#: What a preview renders: images, text (CSV as a table), JSON; others have no preview.
PREVIEWABLE_PREFIXES = ("image/", "text/")
PREVIEWABLE_TYPES = frozenset({"application/json"})


def previewable(mime_type: str) -> bool:
    return mime_type.startswith(PREVIEWABLE_PREFIXES) or mime_type in PREVIEWABLE_TYPES


def mime_type_of(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


@dataclass(frozen=True)
class RunFiles:
    """What :meth:`ArtifactService.collect` needs to know about the run."""

    run_id: str
    sandbox_id: str
    org_id: str
    context_id: str
    cwd: str
    execution_count: int | None
    created_at: datetime
    expires_at: datetime


class ArtifactService:
    def __init__(self, settings: Settings, runs: RunRepository, sandboxes: SandboxService) -> None:
        self._settings = settings
        self._runs = runs
        self._sandboxes = sandboxes

    # --- collecting ----------------------------------------------------------------------------

    async def snapshot(self, link: AgentLink, root: str) -> FilesSnapshot | None:
        """The regular files under ``root``, or ``None`` if the agent could not list them."""
        return await take_snapshot(link, root)

    def run_dir(self, run_id: str) -> Path:
        return self._settings.artifacts_dir / run_id

    def path_of(self, artifact: Artifact) -> Path:
        return self.run_dir(artifact.run_id) / artifact.id

    async def collect(
        self,
        link: AgentLink,
        run: RunFiles,
        before: FilesSnapshot,
        after: FilesSnapshot,
        into: list[Artifact],
    ) -> None:
        """Copy the files the run created or changed onto the host, appending their artifacts
        to ``into`` as each is complete — so a caller that gives up on a slow collection (or
        is cancelled) keeps what was copied. Stops at the first agent failure."""
        limit = self._settings.run_artifacts_max_files
        changed = after.changed_since(before)
        kept, left_out = changed[:limit], changed[limit:]
        note: dict[str, Any] = {}
        if left_out:
            note["omitted_files"] = len(left_out)
            note["omitted_reason"] = f"the run changed more than {limit} files; only the first "
            note["omitted_reason"] += f"{limit} by path are kept"
        if before.truncated or after.truncated:
            note["snapshot_truncated"] = True
        budget = await self._budget(run.org_id)
        for name in kept:
            try:
                artifact = await self._copy(link, run, name, after.files[name][0], note, budget)
            except NotFoundError:
                continue  # deleted (or replaced by a non-file) since the snapshot: nothing to keep
            except AgentError as exc:
                log.info("run %s: stopped collecting artifacts: %s", run.run_id, exc)
                break
            into.append(artifact)

    async def _budget(self, org_id: str) -> _Budget:
        """What the run's artifacts may still store: the run's total, or the org's quota less
        what its stored artifacts hold if that is less. Read once per run: concurrent runs of
        one org may each pass the org's quota by what they store."""
        run_total = self._settings.run_artifacts_max_total_bytes
        quota = self._settings.org_max_artifact_mb * 1024 * 1024
        org_left = max(0, quota - await self._runs.stored_bytes(org_id))
        if org_left < run_total:
            return _Budget(
                org_left,
                f"the org's stored artifacts would exceed its {quota}-byte quota; "
                "delete some (DELETE /v1/sandboxes/{id}/artifacts/{artifact_id})",
            )
        return _Budget(run_total, f"the run's artifacts would exceed their {run_total}-byte total")

    async def _copy(
        self,
        link: AgentLink,
        run: RunFiles,
        name: str,
        size: int,
        note: dict[str, Any],
        budget: _Budget,
    ) -> Artifact:
        per_file = self._settings.run_artifact_max_bytes
        artifact_id = new_artifact_id()
        metadata: dict[str, Any] = {
            "run_id": run.run_id,
            "path": posixpath.join(run.cwd, name),
            **note,
        }

        def entry(size_bytes: int, sha256: str | None = None, stored_bytes: int = 0) -> Artifact:
            return Artifact(
                id=artifact_id,
                run_id=run.run_id,
                sandbox_id=run.sandbox_id,
                context_id=run.context_id,
                name=name,
                mime_type=mime_type_of(name),
                size_bytes=size_bytes,
                sha256=sha256,
                created_at=run.created_at,
                execution_count=run.execution_count,
                expires_at=run.expires_at,
                metadata=metadata,
                org_id=run.org_id,
                stored_bytes=stored_bytes,
            )

        if size > per_file or budget.left <= 0:
            metadata["skipped"] = budget.why_not(size, per_file)
            return entry(size)
        try:
            ensure_free(self._settings, "keep artifacts")
        except InsufficientStorageError as exc:
            metadata["skipped"] = exc.message
            return entry(size)
        opened = await call(link, "file.read.open", {"path": metadata["path"]})
        download = FileDownload(link, str(opened["handle"]), FileInfo.from_agent(opened["info"]))
        if download.size > per_file:
            await download.aclose()
            metadata["skipped"] = budget.why_not(download.size, per_file)
            return entry(download.size)
        target = self.run_dir(run.run_id) / artifact_id
        try:
            digest, stored = await _store(download.chunks(), target, max_stored=budget.left)
        except AgentError:
            raise
        except _OverBudget:
            metadata["skipped"] = budget.why_not(download.size, per_file)
            return entry(download.size)
        except SandcastleError as exc:
            # Typically the file shrank while it was read: the run is still writing it.
            metadata["skipped"] = f"the file could not be copied: {exc.message}"
            return entry(download.size)
        finally:
            await download.aclose()
        budget.left -= stored
        return entry(download.size, digest, stored)

    # --- serving -------------------------------------------------------------------------------

    async def get(self, principal: Principal, sandbox_id: str, artifact_id: str) -> Artifact:
        """A stored, unexpired artifact of the caller's sandbox (destroyed sandboxes included)."""
        await self._sandboxes.get(principal, sandbox_id)
        artifact = await self._runs.artifact(artifact_id)
        missing = NotFoundError(f"artifact {artifact_id} not found in sandbox {sandbox_id}")
        if artifact is None or artifact.sandbox_id != sandbox_id:
            raise missing
        if not artifact.stored or not self.path_of(artifact).is_file():
            raise missing
        return artifact

    async def delete(self, principal: Principal, sandbox_id: str, artifact_id: str) -> None:
        """Forget an artifact of the caller's sandbox and free its bytes: the run lists it no
        more. The row goes first: a crash between leaves a file no row names, which goes with
        its run's directory when the run is purged."""
        await self._sandboxes.get(principal, sandbox_id)
        artifact = await self._runs.delete_artifact(artifact_id, sandbox_id)
        if artifact is None:
            raise NotFoundError(f"artifact {artifact_id} not found in sandbox {sandbox_id}")
        await asyncio.to_thread(self.path_of(artifact).unlink, True)

    async def of_runs(self, run_ids: list[str]) -> dict[str, list[Artifact]]:
        """The artifacts of each run, in the order they were collected (by path)."""
        return await self._runs.artifacts_of(run_ids)

    async def read(self, artifact: Artifact, limit: int | None = None) -> AsyncIterator[bytes]:
        """The stored bytes, in chunks (at most ``limit`` bytes if given)."""
        path = self.path_of(artifact)
        handle: BinaryIO = await asyncio.to_thread(path.open, "rb")
        remaining = artifact.size_bytes if limit is None else min(limit, artifact.size_bytes)
        try:
            while remaining > 0:
                chunk = await asyncio.to_thread(handle.read, min(READ_CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(handle.close)

    async def remove_runs(self, run_ids: list[str]) -> None:
        """Delete the stored files of these runs (their rows are the caller's business)."""
        for run_id in run_ids:
            await asyncio.to_thread(shutil.rmtree, self.run_dir(run_id), True)


#: Zero runs at least this long (and so aligned) become holes in a stored artifact.
_HOLE_BYTES = 64 * 1024


def _write_sparse(out: BinaryIO, chunk: bytes) -> int:
    """Write ``chunk``, leaving its aligned zero runs as holes; the bytes really written."""
    view = memoryview(chunk)
    written = 0
    for start in range(0, len(view), _HOLE_BYTES):
        block = view[start : start + _HOLE_BYTES]
        if block.tobytes().count(0) == len(block):
            out.seek(len(block), os.SEEK_CUR)
        else:
            written += out.write(block)
    return written


@dataclass
class _Budget:
    """The bytes a run's artifacts may still store, and what bounds them."""

    left: int
    bound: str

    def why_not(self, size: int, per_file: int) -> str:
        if size > per_file:
            return f"larger than the {per_file}-byte limit per artifact"
        return f"{self.bound} ({max(self.left, 0)} bytes were left)"


class _OverBudget(Exception):
    """The file would store more than the run may still store."""


async def _store(chunks: AsyncIterator[bytes], target: Path, *, max_stored: int) -> tuple[str, int]:
    """Write ``chunks`` to ``target`` (via a ``.part`` file), hashing them: the hex SHA-256
    and the bytes the file really takes on disk.

    Runs of zero bytes are left as holes: a sandbox's sparse file costs the host what it really
    holds, not its apparent size, and only that counts against ``max_stored`` (past it:
    :class:`_OverBudget`, and nothing is kept).
    """
    await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    out: BinaryIO = await asyncio.to_thread(partial.open, "wb")
    written = 0
    try:
        async for chunk in chunks:
            digest.update(chunk)
            written += await asyncio.to_thread(_write_sparse, out, chunk)
            if written > max_stored:
                raise _OverBudget
        # A file ending in a hole needs its length set; truncate at the position does it.
        await asyncio.to_thread(out.truncate)
        await asyncio.to_thread(out.flush)
        # The run's outcome (naming this file) is committed durably; so must the bytes be.
        await asyncio.to_thread(os.fsync, out.fileno())
        stored = (await asyncio.to_thread(os.fstat, out.fileno())).st_blocks * 512
    except BaseException:
        await asyncio.to_thread(out.close)
        await asyncio.to_thread(partial.unlink, True)
        raise
    await asyncio.to_thread(out.close)
    await asyncio.to_thread(partial.rename, target)
    return digest.hexdigest(), stored
