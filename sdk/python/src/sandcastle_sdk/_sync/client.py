# Generated from ../_async/client.py by sdk/python/tools/generate_sync.py: do not edit.
"""The connection to a server, and what is not a sandbox's: snapshots, templates, health, orgs.

Sandboxes are reached through ``client.sandboxes`` or, more often, ``Sandbox.create(...)`` and
friends, which make a client of their own when none is given.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from sandcastle_sdk._http import Settings
from sandcastle_sdk.models import Health, Snapshot, Template

from ._transport import SyncTransport
from .tenancy import SyncOrgs

if TYPE_CHECKING:
    from .sandbox import Sandbox


class Sandcastle:
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
        http_client: httpx.Client | None = None,
    ) -> None:
        settings = Settings.resolve(url, api_key, timeout=timeout, max_retries=max_retries)
        self.transport = SyncTransport(settings, http_client)
        self.sandboxes = SyncSandboxes(self)
        self.snapshots = SyncSnapshots(self.transport)
        self.templates = SyncTemplates(self.transport)
        self.orgs = SyncOrgs(self.transport)

    @property
    def url(self) -> str:
        return self.transport.settings.url

    def health(self) -> Health:
        """The server's version, runtime backend and warm pools (needs no key)."""
        return self.transport.model(Health, "GET", "/v1/health")

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Sandcastle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SyncSandboxes:
    """``client.sandboxes``: the sandbox constructors bound to this client."""

    def __init__(self, client: Sandcastle) -> None:
        self._client = client

    def create(self, **options: Any) -> Sandbox:
        """A new sandbox; the options are those of ``Sandbox.create``."""
        from .sandbox import Sandbox

        return Sandbox.create(client=self._client, **options)

    def connect(self, sandbox_id: str) -> Sandbox:
        from .sandbox import Sandbox

        return Sandbox.connect(sandbox_id, client=self._client)

    def list(
        self,
        *,
        status: str | None = None,
        template: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Sandbox]:
        """Every sandbox the key can see, newest first, page by page as iterated."""
        from .sandbox import Sandbox

        return Sandbox.list(
            client=self._client, status=status, template=template, page_size=page_size
        )


class SyncSnapshots:
    def __init__(self, transport: SyncTransport) -> None:
        self._t = transport

    def list(self, *, page_size: int = 100) -> Iterator[Snapshot]:
        return self._t.pages(Snapshot, "/v1/snapshots", {"limit": page_size})

    def get(self, snapshot_id: str) -> Snapshot:
        return self._t.model(Snapshot, "GET", f"/v1/snapshots/{snapshot_id}")

    def delete(self, snapshot_id: str) -> None:
        self._t.send("DELETE", f"/v1/snapshots/{snapshot_id}")


class SyncTemplates:
    def __init__(self, transport: SyncTransport) -> None:
        self._t = transport

    def list(self) -> list[Template]:
        return self._t.items(Template, "GET", "/v1/templates")

    def delete(self, name: str) -> None:
        """Delete a template's build (operators only)."""
        self._t.send("DELETE", f"/v1/templates/{name}")
