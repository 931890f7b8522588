# Generated from ../_async/tenancy.py by sdk/python/tools/generate_sync.py: do not edit.
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

from ._transport import SyncTransport


class SyncOrgs:
    def __init__(self, transport: SyncTransport) -> None:
        self._t = transport

    def list(self) -> list[Org]:
        """The orgs the key acts in."""
        return self._t.items(Org, "GET", "/v1/orgs")

    def create(self, slug: str, *, name: str | None = None) -> OrgCreated:
        """A new org you own; the answer carries its owner key (shown this once)."""
        body = drop_none(slug=slug, name=name)
        return self._t.model(OrgCreated, "POST", "/v1/orgs", json=body)

    def use(self, slug: str = "default") -> SyncOrg:
        """The org ``slug``, to manage (no request is made until a method is called)."""
        return SyncOrg(self._t, slug)


class SyncOrg:
    def __init__(self, transport: SyncTransport, slug: str) -> None:
        self._t = transport
        self.slug = slug
        self._base = f"/v1/orgs/{slug}"

    def get(self) -> Org:
        return self._t.model(Org, "GET", self._base)

    def set_limits(self, **limits: Any) -> Org:
        """Override limits (operators only): ``max_concurrent_sandboxes``, ``max_members``,
        ``max_vcpus``, ``max_memory_mb``, ``rate_limit_per_s``, ``rate_limit_burst``."""
        return self._t.model(Org, "PATCH", f"{self._base}/limits", json=drop_none(**limits))

    def credits(self, *, limit: int | None = None) -> Credits:
        """The balance and the latest transactions."""
        params = drop_none(limit=limit)
        return self._t.model(Credits, "GET", f"{self._base}/credits", params=params)

    def top_up(self, amount: int) -> Credits:
        body = {"amount": amount}
        return self._t.model(Credits, "POST", f"{self._base}/credits", json=body)

    # --- projects and workspaces --------------------------------------------------------------

    def projects(self) -> list[Project]:
        return self._t.items(Project, "GET", f"{self._base}/projects")

    def create_project(self, key: str, *, name: str | None = None) -> Project:
        body = drop_none(key=key, name=name)
        return self._t.model(Project, "POST", f"{self._base}/projects", json=body)

    def workspaces(self, *, project_id: str | None = None) -> list[Workspace]:
        params = drop_none(project_id=project_id)
        return self._t.items(Workspace, "GET", f"{self._base}/workspaces", params=params)

    def create_workspace(
        self, key: str, *, name: str | None = None, project_id: str | None = None
    ) -> Workspace:
        body = drop_none(key=key, name=name, project_id=project_id)
        return self._t.model(Workspace, "POST", f"{self._base}/workspaces", json=body)

    # --- members and keys ---------------------------------------------------------------------

    def members(self) -> list[Member]:
        return self._t.items(Member, "GET", f"{self._base}/members")

    def add_member(self, email: str, *, role: str = "member", name: str | None = None) -> Member:
        body = drop_none(email=email, role=role, name=name)
        return self._t.model(Member, "POST", f"{self._base}/members", json=body)

    def set_role(self, member_id: str, role: str) -> Member:
        path = f"{self._base}/members/{member_id}"
        return self._t.model(Member, "PATCH", path, json={"role": role})

    def remove_member(self, member_id: str) -> None:
        """Remove a member and revoke their keys."""
        self._t.send("DELETE", f"{self._base}/members/{member_id}")

    def keys(self) -> list[Key]:
        return self._t.items(Key, "GET", f"{self._base}/keys")

    def create_key(
        self,
        name: str = "key",
        *,
        member_id: str | None = None,
        project_id: str | None = None,
    ) -> NewKey:
        """A new key; its secret (``.key``) is shown this once."""
        body = drop_none(name=name, member_id=member_id, project_id=project_id)
        return self._t.model(NewKey, "POST", f"{self._base}/keys", json=body)

    def revoke_key(self, key_id: str) -> None:
        self._t.send("DELETE", f"{self._base}/keys/{key_id}")
