# Generated from ../_async/runs.py by sdk/python/tools/generate_sync.py: do not edit.
"""``sandbox.runs``: asynchronous runs — submit, then wait, cancel, and download artifacts."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from sandcastle_sdk import errors
from sandcastle_sdk._http import drop_none
from sandcastle_sdk.models import Artifact, Run

from . import _io
from ._transport import SyncTransport
from .files import Progress, stream_to_file


class SyncRuns:
    def __init__(self, transport: SyncTransport, base: str) -> None:
        self._t = transport
        self._sandbox = base
        self._base = f"{base}/code/runs"

    def submit(
        self,
        code: str,
        *,
        language: str | None = None,
        context: str | None = None,
        env_vars: dict[str, str] | None = None,
        timeout: int | None = None,
    ) -> RunHandle:
        """Queue ``code``; the run goes on without the caller. ``timeout`` in seconds."""
        body = drop_none(
            code=code,
            language=language,
            context_id=context,
            env_vars=env_vars,
            timeout_secs=timeout,
        )
        run = self._t.model(Run, "POST", self._base, json=body)
        return RunHandle(self._t, self._sandbox, run)

    def get(self, run_id: str) -> RunHandle:
        run = self._t.model(Run, "GET", f"{self._base}/{run_id}")
        return RunHandle(self._t, self._sandbox, run)

    def list(
        self, *, status: str | None = None, context: str | None = None, page_size: int = 100
    ) -> Iterator[RunHandle]:
        """The sandbox's runs, newest first, page by page as iterated."""
        query = drop_none(status=status, context_id=context, limit=page_size)
        for run in self._t.pages(Run, self._base, query):
            yield RunHandle(self._t, self._sandbox, run)


class RunHandle:
    """A submitted run; ``run`` is what was last heard of it."""

    def __init__(self, transport: SyncTransport, sandbox_base: str, run: Run) -> None:
        self._t = transport
        self._sandbox = sandbox_base
        self.run = run

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def status(self) -> str:
        return self.run.status

    @property
    def artifacts(self) -> list[Artifact]:
        """The files the run left in the sandbox's artifacts directory (once it ended)."""
        return [] if self.run.execution is None else self.run.execution.artifacts

    def __repr__(self) -> str:
        return f"<Run {self.run.id} {self.run.status}>"

    def refresh(self) -> Run:
        path = f"{self._sandbox}/code/runs/{self.run.id}"
        self.run = self._t.model(Run, "GET", path)
        return self.run

    def wait(self, timeout: float | None = None, *, interval: float = 0.25) -> Run:
        """Poll until the run ends (``succeeded``, ``failed`` or ``cancelled``). Raises
        :class:`~sandcastle_sdk.errors.WaitTimeoutError` after ``timeout`` seconds; the run
        itself goes on."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = interval
        while not self.run.done:
            if deadline is not None and time.monotonic() >= deadline:
                raise errors.WaitTimeoutError(f"run {self.run.id} is still {self.run.status}")
            _io.sleep(delay)
            delay = min(delay * 1.5, 2.0)
            self.refresh()
        return self.run

    def cancel(self) -> Run:
        """Ask the run to stop; it ends ``cancelled`` (``wait()`` for it)."""
        path = f"{self._sandbox}/code/runs/{self.run.id}/cancel"
        self.run = self._t.model(Run, "POST", path)
        return self.run

    def read_artifact(self, artifact: Artifact | str) -> bytes:
        response = self._t.send("GET", self._artifact_path(artifact))
        return response.content

    def download_artifact(
        self,
        artifact: Artifact | str,
        local_path: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
    ) -> int:
        """Stream an artifact (or an artifact id) to a local file; its size."""
        return stream_to_file(
            self._t, self._artifact_path(artifact), None, Path(local_path), progress
        )

    def _artifact_path(self, artifact: Artifact | str) -> str:
        artifact_id = artifact.id if isinstance(artifact, Artifact) else artifact
        return f"{self._sandbox}/artifacts/{artifact_id}"
