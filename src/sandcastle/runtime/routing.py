"""The server's runtime when a template may pin a backend: every sandbox on the backend it
started on, new ones on the server's default unless their template says otherwise.

A :class:`RoutedRuntime` is itself a :class:`Runtime`: the control plane keeps calling one
object. ``launch`` and ``restore`` go to ``LaunchSpec.backend`` (the default when unset); every
call naming a sandbox goes to the backend that started it, which each backend records in the
sandbox's durable directory (``local.BACKEND_FILE``), so a restarted server routes its
sandboxes as before. A backend this host cannot run is *unavailable*, with the reason (gVisor
failed its probe, or the operator chose bubblewrap): asking for it is an error, never a silent
fallback.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from sandcastle.errors import LimitExceededError
from sandcastle.runtime.base import LaunchSpec, ProcessState, Runtime
from sandcastle.runtime.channel import AgentLink

#: Reads which backend started a sandbox (None when nothing records it).
Locate = Callable[[str], "str | None"]


class RoutedRuntime(Runtime):
    def __init__(
        self,
        default: Runtime,
        others: Mapping[str, Runtime],
        *,
        locate: Locate,
        unavailable: Mapping[str, str] | None = None,
    ) -> None:
        self._default = default
        self._backends = {default.name: default, **others}
        self._locate = locate
        self._unavailable = dict(unavailable or {})
        #: Sandbox id → its backend, as far as this process has seen it.
        self._where: dict[str, Runtime] = {}
        # What the server runs by default is what it reports (``/v1/health``, row defaults).
        self.name = default.name
        self.supports_memory_snapshots = default.supports_memory_snapshots
        self.supports_internet = default.supports_internet
        self.supports_memory_snapshots_with_internet = (
            default.supports_memory_snapshots_with_internet
        )

    @property
    def available(self) -> list[str]:
        """The backends this server can start sandboxes on, its default first."""
        return list(self._backends)

    def backend(self, name: str | None) -> Runtime:
        if name is None or name == self.name:
            return self._default
        runtime = self._backends.get(name)
        if runtime is not None:
            return runtime
        why = self._unavailable.get(name, "this server does not know it")
        raise LimitExceededError(f"the {name} backend is not available on this server: {why}")

    def _of(self, sandbox_id: str) -> Runtime:
        runtime = self._where.get(sandbox_id)
        if runtime is None:
            recorded = self._locate(sandbox_id)
            runtime = self._backends.get(recorded or self.name, self._default)
            self._where[sandbox_id] = runtime
        return runtime

    def _start_on(self, spec: LaunchSpec) -> Runtime:
        runtime = self.backend(spec.backend)
        self._where[spec.sandbox_id] = runtime
        return runtime

    # --- starting: where the spec says ------------------------------------------------------

    async def launch(self, spec: LaunchSpec) -> AgentLink:
        return await self._start_on(spec).launch(spec)

    async def restore(self, spec: LaunchSpec, image_dir: Path) -> AgentLink:
        return await self._start_on(spec).restore(spec, image_dir)

    async def prepare_template(self, rootfs: Path) -> None:
        await self._default.prepare_template(rootfs)

    async def prune_template_images(self) -> None:
        for runtime in self._backends.values():
            await runtime.prune_template_images()

    # --- everything else: where the sandbox runs ---------------------------------------------

    async def adopt(self, sandbox_id: str) -> AgentLink | None:
        return await self._of(sandbox_id).adopt(sandbox_id)

    async def poll(self, sandbox_id: str) -> ProcessState:
        return await self._of(sandbox_id).poll(sandbox_id)

    async def pause(self, sandbox_id: str) -> None:
        await self._of(sandbox_id).pause(sandbox_id)

    async def resume(self, sandbox_id: str) -> None:
        await self._of(sandbox_id).resume(sandbox_id)

    async def checkpoint(self, sandbox_id: str, image_dir: Path, *, keep_running: bool) -> int:
        return await self._of(sandbox_id).checkpoint(
            sandbox_id, image_dir, keep_running=keep_running
        )

    async def destroy(self, sandbox_id: str) -> None:
        await self._of(sandbox_id).destroy(sandbox_id)
        self._where.pop(sandbox_id, None)

    async def list_sandboxes(self) -> list[str]:
        return await self._union(lambda runtime: runtime.list_sandboxes())

    async def list_template_boots(self) -> list[str]:
        return await self._union(lambda runtime: runtime.list_template_boots())

    async def _union(self, listing: Callable[[Runtime], Awaitable[list[str]]]) -> list[str]:
        ids: set[str] = set()
        for runtime in self._backends.values():
            ids.update(await listing(runtime))
        return sorted(ids)

    def link(self, sandbox_id: str) -> AgentLink | None:
        return self._of(sandbox_id).link(sandbox_id)

    async def aclose(self) -> None:
        for runtime in self._backends.values():
            await runtime.aclose()
