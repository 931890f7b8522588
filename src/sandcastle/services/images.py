"""Memory images on disk: where hibernation and snapshots keep them, and whether one can be
restored here.

Images live in ``<data_dir>/snapshots/<id>/``. An image is restored only by a backend this
server runs that restores memory, over the template build it was saved on: restoring over
another build would mix two root filesystems.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from sandcastle.config import Settings
from sandcastle.domain.sandbox import Sandbox
from sandcastle.errors import ConflictError
from sandcastle.runtime.base import Runtime
from sandcastle.runtime.templates.catalogue import TemplateInfo, load_build
from sandcastle.store.sandboxes import SandboxRepository


class MemoryImages:
    def __init__(self, settings: Settings, sandboxes: SandboxRepository, runtime: Runtime) -> None:
        self._settings = settings
        self._sandboxes = sandboxes
        self._runtime = runtime

    def path(self, image_id: str) -> Path:
        return self._settings.data_dir / "snapshots" / image_id

    async def make(self, image_id: str) -> Path:
        image = self.path(image_id)
        await asyncio.to_thread(image.mkdir, parents=True)
        return image

    async def discard(self, image: Path) -> None:
        await asyncio.to_thread(shutil.rmtree, image, True)

    def can_restore(self, backend: str) -> bool:
        """Whether this server runs ``backend``, and it restores memory images."""
        return (
            backend in self._runtime.available
            and self._runtime.backend(backend).supports_memory_snapshots
        )

    def template(self, name: str, build_id: str | None) -> TemplateInfo:
        """The template build an image was made on (restoring over another build would mix two
        root filesystems): the current one, or the retired one a rebuild kept for it."""
        template = load_build(name, build_id, self._settings.resolved_templates_dir)
        if template is None:
            raise ConflictError(
                f"template {name!r} (build {build_id}) is gone; the image cannot be restored"
            )
        return template

    async def on_sandbox_ended(self, sandbox: Sandbox) -> None:
        """A hibernated sandbox was destroyed or failed: its image goes too."""
        if sandbox.snapshot_id is None:
            return
        await self.discard(self.path(sandbox.snapshot_id))
        await self._sandboxes.clear_image(sandbox.id, sandbox.snapshot_id)
