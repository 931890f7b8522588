# Generated from ../_async/sandbox.py by sdk/python/tools/generate_sync.py: do not edit.
"""A sandbox: create, connect, list, its lifecycle, and the doors to its code, files,
processes and runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from sandcastle_sdk._http import drop_none
from sandcastle_sdk.models import Execution, SandboxInfo, Snapshot, StreamEvent

from .client import Sandcastle
from .code import SyncContexts, run_code
from .files import SyncFiles
from .processes import SyncProcesses
from .runs import SyncRuns


class Sandbox:
    """One sandbox. Make it with ``create``, ``connect`` or ``list``; as a context manager it
    is killed on leaving the block. A sandbox that made its own client closes it on
    ``kill()`` or ``close()``."""

    def __init__(self, info: SandboxInfo, client: Sandcastle, *, owns_client: bool) -> None:
        self.info = info
        self.client = client
        self._owns_client = owns_client
        base = f"/v1/sandboxes/{info.id}"
        self._base = base
        self.files = SyncFiles(client.transport, base)
        self.processes = SyncProcesses(client.transport, base)
        self.commands = self.processes  # E2B's name for the same thing
        self.contexts = SyncContexts(client.transport, base)
        self.runs = SyncRuns(client.transport, base)

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def status(self) -> str:
        return self.info.status

    def __repr__(self) -> str:
        return f"<Sandbox {self.info.id} {self.info.status} template={self.info.template}>"

    # --- making one ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        template: str | None = None,
        *,
        timeout: float | None = None,
        timeout_action: str | None = None,
        memory_mb: int | None = None,
        vcpus: int | None = None,
        disk_mb: int | None = None,
        metadata: dict[str, Any] | None = None,
        internet: bool | None = None,
        snapshot: str | Snapshot | None = None,
        cwd: str | None = None,
        auto_resume: bool | None = None,
        project_id: str | None = None,
        workspace_id: str | None = None,
        client: Sandcastle | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> Sandbox:
        """A new sandbox from ``template`` (the server's default when None) or from a
        ``snapshot``. ``timeout`` is its lifetime in seconds (the server's default when None;
        0: none); ``timeout_action`` is ``destroy`` or ``hibernate``."""
        body = drop_none(
            template=template,
            timeout_ms=None if timeout is None else int(timeout * 1000),
            timeout_action=timeout_action,
            memory_mb=memory_mb,
            vcpus=vcpus,
            disk_mb=disk_mb,
            metadata=metadata,
            network=None if internet is None else {"internet": internet},
            snapshot_id=snapshot.id if isinstance(snapshot, Snapshot) else snapshot,
            cwd=cwd,
            auto_resume=auto_resume,
            project_id=project_id,
            workspace_id=workspace_id,
        )
        return cls._open(client, url, api_key, "POST", "/v1/sandboxes", json=body)

    @classmethod
    def connect(
        cls,
        sandbox_id: str,
        *,
        client: Sandcastle | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> Sandbox:
        """The existing sandbox ``sandbox_id``."""
        return cls._open(client, url, api_key, "GET", f"/v1/sandboxes/{sandbox_id}")

    @classmethod
    def _open(
        cls,
        client: Sandcastle | None,
        url: str | None,
        api_key: str | None,
        method: str,
        path: str,
        **kwargs: Any,
    ) -> Sandbox:
        """The sandbox a call answers with, on ``client`` or on a client of its own (closed
        again if the call fails)."""
        owns = client is None
        client = client or Sandcastle(url, api_key)
        try:
            info = client.transport.model(SandboxInfo, method, path, **kwargs)
        except BaseException:
            if owns:
                client.close()
            raise
        return cls(info, client, owns_client=owns)

    @classmethod
    def list(
        cls,
        *,
        status: str | None = None,
        template: str | None = None,
        page_size: int = 100,
        client: Sandcastle | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> Iterator[Sandbox]:
        """Every sandbox the key can see, newest first, fetched page by page as iterated.
        The sandboxes share ``client`` (one is made when None and closed at the end)."""
        owns = client is None
        client = client or Sandcastle(url, api_key)
        query = drop_none(status=status, template=template, limit=page_size)
        try:
            for info in client.transport.pages(SandboxInfo, "/v1/sandboxes", query):
                yield cls(info, client, owns_client=False)
        finally:
            if owns:
                client.close()

    # --- its lifecycle ------------------------------------------------------------------------

    def refresh(self) -> SandboxInfo:
        self.info = self._call("GET", "")
        return self.info

    def kill(self) -> SandboxInfo:
        """Destroy the sandbox (its files and contexts go with it)."""
        try:
            self.info = self._call("DELETE", "")
        finally:
            self.close()
        return self.info

    def pause(self) -> SandboxInfo:
        """Freeze everything in place; ``resume()`` carries on where it stopped."""
        self.info = self._call("POST", "/pause")
        return self.info

    def hibernate(self) -> SandboxInfo:
        """Save the sandbox's memory and files to disk and free its resources."""
        self.info = self._call("POST", "/hibernate")
        return self.info

    def resume(self) -> SandboxInfo:
        self.info = self._call("POST", "/resume")
        return self.info

    def set_timeout(self, timeout: float, *, action: str | None = None) -> SandboxInfo:
        """Live ``timeout`` more seconds from now (0: no timeout)."""
        body = drop_none(timeout_ms=int(timeout * 1000), timeout_action=action)
        self.info = self._call("POST", "/timeout", json=body)
        return self.info

    def snapshot(self) -> Snapshot:
        """Save files, configuration and contexts; ``Sandbox.create(snapshot=…)`` starts
        new sandboxes from it."""
        return self.client.transport.model(Snapshot, "POST", f"{self._base}/snapshots")

    def fork(self, **options: Any) -> Sandbox:
        """A new sandbox from a snapshot of this one taken now (options as ``create``)."""
        snapshot = self.snapshot()
        return Sandbox.create(snapshot=snapshot, client=self.client, **options)

    def close(self) -> None:
        """Release the client's connections if this sandbox made it (the sandbox lives on)."""
        if self._owns_client:
            self._owns_client = False
            self.client.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()

    # --- code ---------------------------------------------------------------------------------

    def run_code(
        self,
        code: str,
        *,
        language: str | None = None,
        context: str | None = None,
        env_vars: dict[str, str] | None = None,
        timeout: float | None = None,
        on_stdout: Callable[[str], Any] | None = None,
        on_stderr: Callable[[str], Any] | None = None,
        on_result: Callable[[StreamEvent], Any] | None = None,
        on_error: Callable[[StreamEvent], Any] | None = None,
    ) -> Execution:
        """Run ``code`` in ``context`` (a context id; a new context of ``language`` when None)
        and return its outcome. With a callback, output is streamed to it as it comes."""
        return run_code(
            self.client.transport,
            self._base,
            code,
            language=language,
            context=context,
            env_vars=env_vars,
            timeout=timeout,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            on_result=on_result,
            on_error=on_error,
        )

    def _call(self, method: str, suffix: str, **kwargs: Any) -> SandboxInfo:
        return self.client.transport.model(SandboxInfo, method, self._base + suffix, **kwargs)
