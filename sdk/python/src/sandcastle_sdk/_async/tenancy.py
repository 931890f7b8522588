"""``client.orgs``: orgs, and under ``client.orgs.use(slug)`` an org's projects, workspaces,
members, keys, limits and credits (docs/TENANCY.md says who may do what)."""

from __future__ import annotations

from typing import Any

from sandcastle_sdk._http import drop_none
from sandcastle_sdk.models import (
    Credits,
    Key,
    Member,
    NewKey,
    Org,
    OrgCreated,
    Project,
    Workspace,
)

from ._transport import AsyncTransport


class AsyncOrgs:
    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def list(self) -> list[Org]:
        """The orgs the key acts in."""
        return await self._t.items(Org, "GET", "/v1/orgs")

    async def create(self, slug: str, *, name: str | None = None) -> OrgCreated:
        """A new org you own; the answer carries its owner key (shown this once)."""
        body = drop_none(slug=slug, name=name)
        return await self._t.model(OrgCreated, "POST", "/v1/orgs", json=body)

    def use(self, slug: str = "default") -> AsyncOrg:
        """The org ``slug``, to manage (no request is made until a method is called)."""
        return AsyncOrg(self._t, slug)


class AsyncOrg:
    def __init__(self, transport: AsyncTransport, slug: str) -> None:
        self._t = transport
        self.slug = slug
        self._base = f"/v1/orgs/{slug}"

    async def get(self) -> Org:
        return await self._t.model(Org, "GET", self._base)

    async def set_limits(self, **limits: Any) -> Org:
        """Override limits (operators only): ``max_concurrent_sandboxes``, ``max_members``,
        ``max_vcpus``, ``max_memory_mb``, ``rate_limit_per_s``, ``rate_limit_burst``."""
        return await self._t.model(Org, "PATCH", f"{self._base}/limits", json=drop_none(**limits))

    async def credits(self, *, limit: int | None = None) -> Credits:
        """The balance and the latest transactions."""
        params = drop_none(limit=limit)
        return await self._t.model(Credits, "GET", f"{self._base}/credits", params=params)

    async def top_up(self, amount: int) -> Credits:
        body = {"amount": amount}
        return await self._t.model(Credits, "POST", f"{self._base}/credits", json=body)

    # --- projects and workspaces --------------------------------------------------------------

    async def projects(self) -> list[Project]:
        return await self._t.items(Project, "GET", f"{self._base}/projects")

    async def create_project(self, key: str, *, name: str | None = None) -> Project:
        body = drop_none(key=key, name=name)
        return await self._t.model(Project, "POST", f"{self._base}/projects", json=body)

    async def workspaces(self, *, project_id: str | None = None) -> list[Workspace]:
        params = drop_none(project_id=project_id)
        return await self._t.items(Workspace, "GET", f"{self._base}/workspaces", params=params)

    async def create_workspace(
        self, key: str, *, name: str | None = None, project_id: str | None = None
    ) -> Workspace:
        body = drop_none(key=key, name=name, project_id=project_id)
        return await self._t.model(Workspace, "POST", f"{self._base}/workspaces", json=body)

    # --- members and keys ---------------------------------------------------------------------

    async def members(self) -> list[Member]:
        return await self._t.items(Member, "GET", f"{self._base}/members")

    async def add_member(
        self, email: str, *, role: str = "member", name: str | None = None
    ) -> Member:
        body = drop_none(email=email, role=role, name=name)
        return await self._t.model(Member, "POST", f"{self._base}/members", json=body)

    async def set_role(self, member_id: str, role: str) -> Member:
        path = f"{self._base}/members/{member_id}"
        return await self._t.model(Member, "PATCH", path, json={"role": role})

    async def remove_member(self, member_id: str) -> None:
        """Remove a member and revoke their keys."""
        await self._t.send("DELETE", f"{self._base}/members/{member_id}")

    async def keys(self) -> list[Key]:
        return await self._t.items(Key, "GET", f"{self._base}/keys")

    async def create_key(
        self,
        name: str = "key",
        *,
        member_id: str | None = None,
        project_id: str | None = None,
    ) -> NewKey:
        """A new key; its secret (``.key``) is shown this once."""
        body = drop_none(name=name, member_id=member_id, project_id=project_id)
        return await self._t.model(NewKey, "POST", f"{self._base}/keys", json=body)

    async def revoke_key(self, key_id: str) -> None:
        await self._t.send("DELETE", f"{self._base}/keys/{key_id}")
