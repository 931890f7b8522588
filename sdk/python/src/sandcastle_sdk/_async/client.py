"""The connection to a server, and what is not a sandbox's: snapshots, templates, health, orgs.

Sandboxes are reached through ``client.sandboxes`` or, more often, ``Sandbox.create(...)`` and
friends, which make a client of their own when none is given.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from sandcastle_sdk._http import Settings
from sandcastle_sdk.models import Health, Snapshot, Template

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


class AsyncTemplates:
    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def list(self) -> list[Template]:
        return await self._t.items(Template, "GET", "/v1/templates")

    async def delete(self, name: str) -> None:
        """Delete a template's build (operators only)."""
        await self._t.send("DELETE", f"/v1/templates/{name}")
