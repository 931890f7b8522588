"""Warm pools: started sandboxes per template, waiting to be checked out by a create.

A pool entry is an ordinary sandbox row with ``pool`` set to its template and no org: invisible
to every tenant (each query filters by org) until a create takes it. Taking one is a
compare-and-set on ``pool IS NOT NULL``, so two creates never get the same entry. Entries have
never run user code, so a checked-out sandbox carries no other tenant's state. The pool refills
in the background after each checkout; an entry that dies is deleted and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from sandcastle.config import Settings
from sandcastle.domain.sandbox import Sandbox, SandboxStatus
from sandcastle.errors import SandcastleError
from sandcastle.runtime.templates.builder import load_template
from sandcastle.services.limits import Resources, resolve_resources
from sandcastle.services.sandboxes import SandboxService
from sandcastle.store import repositories as repo
from sandcastle.store.db import Database
from sandcastle.store.models import SandboxRow

log = logging.getLogger("sandcastle.pool")

#: Pause between refill attempts after a failure, so a broken template does not spin.
_RETRY_S = 5.0


def pool_id(template: str) -> str:
    return f"wp_{template}"


class WarmPoolService:
    def __init__(self, settings: Settings, db: Database, sandboxes: SandboxService) -> None:
        self._settings = settings
        self._db = db
        self._sandboxes = sandboxes
        self._wake = asyncio.Event()
        self._checkout_lock = asyncio.Lock()

    @property
    def targets(self) -> dict[str, int]:
        return {t: n for t, n in self._settings.warm_pool.items() if n > 0}

    def _fits(self, resources: Resources, internet: bool) -> bool:
        """Pool entries have the default resources and no network."""
        defaults = resolve_resources(self._settings, None, None, None)
        return resources == defaults and not internet

    async def checkout(
        self,
        template: str,
        resources: Resources,
        internet: bool,
        tenancy: dict[str, Any],
        now: datetime,
        runtime: str,
    ) -> tuple[str | None, Sandbox | None]:
        if template not in self.targets:
            return None, None  # no pool for this template: not considered
        pid = pool_id(template)
        if not self._fits(resources, internet):
            return pid, None
        timeout_ms = int(tenancy["timeout_ms"])
        async with self._checkout_lock:
            async with self._db.session() as session:
                candidate = await session.scalar(
                    select(SandboxRow.id)
                    .where(
                        SandboxRow.pool == template,
                        SandboxRow.status == SandboxStatus.RUNNING.value,
                        # Booted before the template's pin changed: not what was asked for.
                        SandboxRow.runtime == runtime,
                    )
                    .order_by(SandboxRow.created_at)
                    .limit(1)
                )
                if candidate is None:
                    self._wake.set()
                    return pid, None
                taken = await session.execute(
                    update(SandboxRow)
                    .where(SandboxRow.id == candidate, SandboxRow.pool.is_not(None))
                    .values(
                        pool=None,
                        created_at=now,
                        started_at=now,
                        timeout_at=now + timedelta(milliseconds=timeout_ms),
                        warm_pool_hit=True,
                        warm_pool_id=pid,
                        **tenancy,
                    )
                )
                if taken.rowcount != 1:  # type: ignore[attr-defined]
                    return pid, None
                row = await session.get(SandboxRow, candidate, populate_existing=True)
                assert row is not None
                sandbox = repo.to_sandbox(row)
        self._wake.set()
        log.info("checked out %s from pool %s", sandbox.id, pid)
        return pid, sandbox

    async def status(self) -> dict[str, dict[str, int]]:
        """Per template: target size and entries ready now."""
        out: dict[str, dict[str, int]] = {}
        async with self._db.session() as session:
            for template, target in self.targets.items():
                ready = await session.scalar(
                    select(func.count())
                    .select_from(SandboxRow)
                    .where(
                        SandboxRow.pool == template,
                        SandboxRow.status == SandboxStatus.RUNNING.value,
                    )
                )
                out[template] = {"target": target, "ready": int(ready or 0)}
        return out

    async def run_forever(self) -> None:
        """Keep every pool at its target; woken by checkouts, and every few seconds."""
        while True:
            try:
                await self._fill_once()
            except Exception:  # the pool must outlive a bad boot
                log.exception("warm pool refill failed")
                await asyncio.sleep(_RETRY_S)
            self._wake.clear()
            # Not ``wait_for``: on Python 3.11 it loses a cancellation that arrives as the
            # event is set, and the server's shutdown would wait on this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_RETRY_S):
                    await self._wake.wait()

    async def _fill_once(self) -> None:
        for template, target in self.targets.items():
            info = load_template(template, self._settings.resolved_templates_dir)
            if info is None:
                continue
            try:
                runtime = self._sandboxes.template_runtime(template, info.runtime)
            except SandcastleError as exc:
                log.warning("warm pool %s: %s", template, exc)
                continue
            await self._retire_stale(template, runtime.name)
            while await self._count(template) < target:
                resources = resolve_resources(self._settings, None, None, None)
                row = self._sandboxes.new_row(
                    template, resources, internet=False, runtime=runtime, pool=template
                )
                try:
                    await self._sandboxes.boot(row, info.rootfs)
                except SandcastleError as exc:
                    log.warning("warm pool %s: boot failed: %s", template, exc)
                    await self._forget(row.id)
                    await asyncio.sleep(_RETRY_S)

    async def _count(self, template: str) -> int:
        async with self._db.session() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(SandboxRow)
                .where(
                    SandboxRow.pool == template,
                    SandboxRow.status.in_(
                        [SandboxStatus.CREATING.value, SandboxStatus.RUNNING.value]
                    ),
                )
            )
        return int(count or 0)

    async def _retire_stale(self, template: str, runtime: str) -> None:
        """Entries booted on another backend than the template's (its pin changed) are never
        checked out: they make room for new ones."""
        async with self._db.session() as session:
            stale = (
                await session.scalars(
                    select(SandboxRow.id).where(
                        SandboxRow.pool == template,
                        SandboxRow.status == SandboxStatus.RUNNING.value,
                        SandboxRow.runtime != runtime,
                    )
                )
            ).all()
        for sandbox_id in stale:
            log.info(
                "warm pool %s: retiring %s (the template now runs on %s)",
                template,
                sandbox_id,
                runtime,
            )
            await self._sandboxes.retire(sandbox_id, f"template {template} now runs on {runtime}")
            await self._forget(sandbox_id)

    async def _forget(self, sandbox_id: str) -> None:
        async with self._db.session() as session:
            row = await session.get(SandboxRow, sandbox_id)
            if row is not None and row.pool is not None:
                await session.delete(row)
