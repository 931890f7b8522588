"""The connection to a server, and what is not a sandbox's: snapshots, templates, health, orgs.

Sandboxes are reached through ``client.sandboxes`` or, more often, ``Sandbox.create(...)`` and
friends, which make a client of their own when none is given.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from sandcastle_sdk import errors
from sandcastle_sdk._http import Settings, drop_none
from sandcastle_sdk.models import Health, Snapshot, Template, TemplateBuild

from . import _io
from ._transport import AsyncTransport
from .tenancy import AsyncOrgs

if TYPE_CHECKING:
    from .sandbox import AsyncSandbox


class AsyncSandcastle:
    """A client of one server. ``url`` and ``api_key`` default to ``SANDCASTLE_URL`` and
    ``SANDCASTLE_API_KEY``; ``max_retries`` bounds the repeats of a 429 or a dropped
    connection. Close it (or use it as a context manager) to release its connections."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        settings = Settings.resolve(url, api_key, timeout=timeout, max_retries=max_retries)
        self.transport = AsyncTransport(settings, http_client)
        self.sandboxes = AsyncSandboxes(self)
        self.snapshots = AsyncSnapshots(self.transport)
        self.templates = AsyncTemplates(self.transport)
        self.orgs = AsyncOrgs(self.transport)

    @property
    def url(self) -> str:
        return self.transport.settings.url

    async def health(self) -> Health:
        """The server's version, runtime backend and warm pools (needs no key)."""
        return await self.transport.model(Health, "GET", "/v1/health")

    async def close(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> AsyncSandcastle:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class AsyncSandboxes:
    """``client.sandboxes``: the sandbox constructors bound to this client."""

    def __init__(self, client: AsyncSandcastle) -> None:
        self._client = client

    async def create(self, **options: Any) -> AsyncSandbox:
        """A new sandbox; the options are those of ``Sandbox.create``."""
        from .sandbox import AsyncSandbox

        return await AsyncSandbox.create(client=self._client, **options)

    async def connect(self, sandbox_id: str) -> AsyncSandbox:
        from .sandbox import AsyncSandbox

        return await AsyncSandbox.connect(sandbox_id, client=self._client)

    def list(
        self,
        *,
        status: str | None = None,
        template: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[AsyncSandbox]:
        """Every sandbox the key can see, newest first, page by page as iterated."""
        from .sandbox import AsyncSandbox

        return AsyncSandbox.list(
            client=self._client, status=status, template=template, page_size=page_size
        )


class AsyncSnapshots:
    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    def list(self, *, page_size: int = 100) -> AsyncIterator[Snapshot]:
        return self._t.pages(Snapshot, "/v1/snapshots", {"limit": page_size})

    async def get(self, snapshot_id: str) -> Snapshot:
        return await self._t.model(Snapshot, "GET", f"/v1/snapshots/{snapshot_id}")

    async def delete(self, snapshot_id: str) -> None:
        await self._t.send("DELETE", f"/v1/snapshots/{snapshot_id}")


#: The server takes a Dockerfile of up to 256 KiB (a longer one is refused, not cut).
_MAX_DOCKERFILE_BYTES = 256 * 1024


class AsyncTemplates:
    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def list(self) -> list[Template]:
        return await self._t.items(Template, "GET", "/v1/templates")

    async def delete(self, name: str) -> None:
        """Delete a template: the org's own (owners and admins), or a public one (operators)."""
        await self._t.send("DELETE", f"/v1/templates/{name}")

    async def build(
        self,
        name: str,
        dockerfile: str | os.PathLike[str],
        context: str | os.PathLike[str] | None = None,
        *,
        build_args: Mapping[str, str] | None = None,
        public: bool = False,
        vcpus: int | None = None,
        memory_mb: int | None = None,
        disk_mb: int | None = None,
        on_log: Callable[[str], Any] | None = None,
    ) -> TemplateBuild:
        """Build template ``name`` as the org's own (``public``: the server's, operators only)
        and wait for it to end.

        ``dockerfile`` is the Dockerfile's text, or a path to it; ``context`` the build
        context's directory (sent as a tar archive). ``vcpus``, ``memory_mb`` and ``disk_mb``
        are what its sandboxes get when they ask for none. ``on_log`` is handed each line of the
        build's log as it is written. Raises :class:`~sandcastle_sdk.errors.TemplateBuildFailedError`
        when the build fails (its ``build.error`` names the failing line), an API error when
        the server refuses the Dockerfile or the context outright.
        """
        if isinstance(dockerfile, os.PathLike):
            with open(dockerfile, "rb") as file:  # noqa: ASYNC230 - reads go through _io
                dockerfile = (await _io.read_chunk(file, _MAX_DOCKERFILE_BYTES + 1)).decode()
        files: dict[str, Any] = {"dockerfile": ("Dockerfile", dockerfile.encode())}
        archive = await _io.tar_directory(context) if context is not None else None
        try:
            if archive is not None:
                files["context"] = ("context.tar.gz", archive, "application/gzip")
            given = drop_none(vcpus=vcpus, memory_mb=memory_mb, disk_mb=disk_mb)
            data = {
                "name": name,
                "build_args": json.dumps(dict(build_args or {})),
                "public": "true" if public else "false",
            } | {key: str(value) for key, value in given.items()}
            started = await self._t.model(
                TemplateBuild, "POST", "/v1/templates", data=data, files=files
            )
        finally:
            if archive is not None:
                archive.close()
        return await self.wait_build(started.name, started.build_id, on_log=on_log)

    async def get_build(self, name: str, build_id: str) -> TemplateBuild:
        """A build's status, with the end of its log."""
        return await self._t.model(TemplateBuild, "GET", f"/v1/templates/{name}/builds/{build_id}")

    async def wait_build(
        self, name: str, build_id: str, *, on_log: Callable[[str], Any] | None = None
    ) -> TemplateBuild:
        """Follow a build's log to its end; the build as it ended (raises
        :class:`~sandcastle_sdk.errors.TemplateBuildFailedError` when it failed)."""
        path = f"/v1/templates/{name}/builds/{build_id}/logs"
        ended: TemplateBuild | None = None
        async with self._t.events("GET", path) as events:
            async for event in events:
                if event.get("type") == "log":
                    await _io.call(on_log, event.get("text", ""))
                elif event.get("type") == "end":
                    ended = TemplateBuild.model_validate(event["build"])
        if ended is None:
            raise errors.StreamEndedError(f"the log of build {build_id} ended before the build")
        if ended.status == "failed":
            raise errors.TemplateBuildFailedError(ended)
        return ended
