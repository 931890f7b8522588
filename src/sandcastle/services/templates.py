"""Built templates as the API shows them: list, and delete one nothing uses any more.

A template is the server's, public to every org, or an org's own (built through the API,
``template_builds.py``; kept under the key ``<name>+<org id>``, ``catalogue.py``). Listing shows
the public ones and the caller's org's, how many of the org's snapshots need each, and the
backend a template is pinned to. Deleting a public template is for the server's operators
(owners of its first org), an org's own for its owners and admins; either is refused (409)
while any snapshot or live sandbox needs the template, since restoring or running it without
its root filesystem fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sandcastle.config import Settings
from sandcastle.errors import ConflictError, ForbiddenError, NotFoundError
from sandcastle.runtime.templates.catalogue import (
    built_templates,
    resolve,
    retired_builds,
    split_key,
)
from sandcastle.services.auth import Principal
from sandcastle.store.sandboxes import SandboxRepository
from sandcastle.store.snapshots import SnapshotRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TemplateSummary:
    #: As its users name it (an org's own without the org).
    name: str
    #: What sandboxes record as their template: the name, or ``name+org`` for an org's own.
    key: str
    #: Every org's, or the caller's org's own.
    public: bool
    build_id: str
    built_at: datetime
    size_bytes: int
    #: Snapshots of the caller's org made on this template.
    snapshots: int
    #: The backend its sandboxes run on, if the template pins one.
    runtime: str | None = None
    #: What its sandboxes get when they ask for none.
    defaults: Mapping[str, int] = field(default_factory=dict)


class TemplateService:
    def __init__(
        self, settings: Settings, snapshots: SnapshotRepository, sandboxes: SandboxRepository
    ) -> None:
        self._settings = settings
        self._snapshots = snapshots
        self._sandboxes = sandboxes

    @property
    def _root(self) -> Path:
        return self._settings.resolved_templates_dir

    async def list(self, principal: Principal) -> list[TemplateSummary]:
        built = await asyncio.to_thread(built_templates, self._root)
        # The caller's snapshots: a member counts those of its own sandboxes.
        counts = await self._snapshots.per_template(
            principal.org_id, member_id=principal.sandbox_member
        )
        summaries = []
        for t in built:
            short, owner = split_key(t.name)
            if owner not in (None, principal.org_id):
                continue  # another org's own
            summaries.append(
                TemplateSummary(
                    short,
                    t.name,
                    owner is None,
                    t.build_id,
                    t.built_at,
                    t.size_bytes,
                    counts.get(t.name, 0),
                    t.runtime,
                    t.defaults,
                )
            )
        return summaries

    async def delete(self, principal: Principal, name: str) -> None:
        info = resolve(name, principal.org_id, self._root)
        if info is None:
            raise NotFoundError(f"template {name!r} not found")
        name = info.name
        if split_key(name)[1] is None and not principal.operator:
            # Public templates are shared by every org: one org may not take them away.
            raise ForbiddenError("only the server's operators may delete public templates")
        if not principal.is_admin:
            raise ForbiddenError("only the org's owners and admins may delete its templates")
        snapshots = await self._snapshots.of_template(name)
        live = await self._sandboxes.live_of_template(name)
        if snapshots:
            raise ConflictError(f"template {name!r} has snapshots; delete them first")
        if live:
            raise ConflictError(
                f"template {name!r} is used by live sandboxes (hibernated ones and warm-pool "
                "entries included); destroy them first"
            )
        await asyncio.to_thread(_discard, self._root / name)

    async def collect_retired(self) -> tuple[str, ...]:
        """Delete the retired builds (``catalogue.py``) no live sandbox or snapshot was made
        on; the ``template/build`` ids deleted."""
        retired = await asyncio.to_thread(retired_builds, self._root)
        if not retired:
            return ()
        # Sandboxes before snapshots: a snapshot's fork is recorded before the snapshot can
        # be deleted, so a build is never seen unused between the two.
        needed = await self._sandboxes.live_builds() | await self._snapshots.builds()
        deleted: tuple[str, ...] = ()
        for build in retired:
            if (build.name, build.build_id) not in needed:
                await asyncio.to_thread(_discard, build.rootfs.parent)
                deleted += (f"{build.name}/{build.build_id}",)
        return deleted

    async def collect_forever(self, interval_s: float) -> None:
        while True:
            try:
                for build in await self.collect_retired():
                    log.info("deleted retired template build %s", build)
            except Exception:  # one bad pass must not stop collection
                log.exception("collecting retired template builds failed")
            await asyncio.sleep(interval_s)


def _discard(directory: Path) -> None:
    """Delete a template tree, renamed away first so nothing that looks for it (a create, a
    restore) finds it half deleted."""
    doomed = directory.with_name(f".deleted-{directory.name}-{secrets.token_hex(4)}")
    os.rename(directory, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
