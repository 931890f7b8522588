"""Warm pools: started sandboxes per template, waiting to be checked out by a create.

A pool entry is an ordinary sandbox row with ``pool`` set to its template and no org: invisible
to every tenant (each query filters by org) until a create takes it. Taking one is a
compare-and-set on ``pool IS NOT NULL``, so two creates never get the same entry. Entries have
never run user code, so a checked-out sandbox carries no other tenant's state. An entry is
``running``, and can be taken, only once its agent has a spare Python kernel up. The pool
refills in the background after each checkout; an entry that dies is deleted and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

from sandcastle.config import Settings
from sandcastle.domain.sandbox import Sandbox, SandboxStatus
from sandcastle.errors import SandcastleError
from sandcastle.runtime.base import Runtime
from sandcastle.runtime.channel import AgentLink
from sandcastle.runtime.templates.catalogue import load_template
from sandcastle.services.limits import Resources, resolve_resources
from sandcastle.services.provisioning import Provisioning
from sandcastle.services.states import SandboxStates
from sandcastle.store.sandboxes import SandboxRepository

log = logging.getLogger("sandcastle.pool")

#: Pause between refill attempts after a failure, so a broken template does not spin.
_RETRY_S = 5.0
#: After a checkout, how long the refill waits: its new sandbox's caller usually runs code at
#: once (``docs/PERFORMANCE.md``: a pool hit's first result).
REFILL_DELAY_S = 1.0
#: The languages whose spare kernel a pool entry has ready before it is taken.
POOL_LANGUAGES = ("python",)


def pool_id(template: str) -> str:
    return f"wp_{template}"


async def _spare_ready(link: AgentLink) -> None:
    """An entry is taken only once its agent's spare kernel is up, so the first execution of a
    checked-out sandbox never waits for a kernel to boot (a restored gVisor entry has one)."""
    await link.call("warm", {"languages": list(POOL_LANGUAGES)})


class WarmPoolService:
    def __init__(
        self,
        settings: Settings,
        sandboxes: SandboxRepository,
        runtime: Runtime,
        provisioning: Provisioning,
        states: SandboxStates,
    ) -> None:
        self._settings = settings
        self._sandboxes = sandboxes
        self._runtime = runtime
        self._provisioning = provisioning
        self._states = states
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
            sandbox = await self._sandboxes.checkout_pool_entry(
                # An entry booted before the template's pin changed is not what was asked for.
                template,
                runtime,
                {
                    "created_at": now,
                    "started_at": now,
                    "timeout_at": now + timedelta(milliseconds=timeout_ms),
                    "warm_pool_hit": True,
                    "warm_pool_id": pid,
                    **tenancy,
                },
            )
        if sandbox is None:
            self._wake.set()  # the pool ran dry: refill now
            return pid, None
        # Refill behind a checkout, but not at once: a boot is a second or more of CPU on the
        # host, taken from the first execution of the sandbox just handed out.
        asyncio.get_running_loop().call_later(REFILL_DELAY_S, self._wake.set)
        log.info("checked out %s from pool %s", sandbox.id, pid)
        return pid, sandbox

    async def status(self) -> dict[str, dict[str, int]]:
        """Per template: target size and entries ready now."""
        out: dict[str, dict[str, int]] = {}
        for template, target in self.targets.items():
            ready = await self._sandboxes.count_pool(template, [SandboxStatus.RUNNING])
            out[template] = {"target": target, "ready": ready}
        return out

    async def run_forever(self) -> None:
        """Let the backend prepare the templates in use (gVisor: a memory image of a booted
        sandbox), then keep every pool at its target, so entries start from it too; woken by
        checkouts, and every few seconds."""
        await self._prepare_templates()
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

    async def _prepare_templates(self) -> None:
        names = {self._settings.default_template, *self._settings.warm_pool}
        for name in sorted(names):
            template = load_template(name, self._settings.resolved_templates_dir)
            if template is None:
                continue
            try:
                backend = self._runtime.backend(template.runtime)
            except SandcastleError as exc:
                log.warning("template %s: %s", name, exc)
                continue
            try:
                await backend.prepare_template(template.rootfs)
            except Exception:  # launches still work without it, only slower
                log.exception("could not prepare template %s for fast starts", name)
        try:
            await self._runtime.prune_template_images()
        except OSError:
            log.exception("could not delete old template images")

    async def _fill_once(self) -> None:
        for template, target in self.targets.items():
            info = load_template(template, self._settings.resolved_templates_dir)
            if info is None:
                continue
            try:
                runtime = self._provisioning.template_runtime(template, info.runtime)
            except SandcastleError as exc:
                log.warning("warm pool %s: %s", template, exc)
                continue
            await self._retire_stale(template, runtime.name)
            while await self._count(template) < target:
                resources = resolve_resources(self._settings, None, None, None)
                row = self._provisioning.new_row(
                    template, resources, internet=False, runtime=runtime, pool=template
                )
                try:
                    await self._provisioning.boot(row, info.rootfs, connected=_spare_ready)
                except SandcastleError as exc:
                    log.warning("warm pool %s: boot failed: %s", template, exc)
                    await self._sandboxes.forget_pool_entry(row.id)
                    await asyncio.sleep(_RETRY_S)

    async def _count(self, template: str) -> int:
        return await self._sandboxes.count_pool(
            template, [SandboxStatus.CREATING, SandboxStatus.RUNNING]
        )

    async def _retire_stale(self, template: str, runtime: str) -> None:
        """Entries booted on another backend than the template's (its pin changed) are never
        checked out: they make room for new ones."""
        stale = await self._sandboxes.pool_entries_not_on(template, runtime)
        for sandbox_id in stale:
            log.info(
                "warm pool %s: retiring %s (the template now runs on %s)",
                template,
                sandbox_id,
                runtime,
            )
            await self._states.end(sandbox_id, f"template {template} now runs on {runtime}")
            await self._sandboxes.forget_pool_entry(sandbox_id)
