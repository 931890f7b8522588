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
from sandcastle.runtime.templates.catalogue import TemplateInfo, load_template
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
        """The template an image was made on: restoring over another build is unsafe."""
        template = load_template(name, self._settings.resolved_templates_dir)
        if template is None:
            raise ConflictError(f"template {name!r} is gone; the image cannot be restored")
        if build_id is not None and template.build_id != build_id:
            raise ConflictError(
                f"template {name!r} was rebuilt since the image was saved; it cannot be restored"
            )
        return template

    async def on_sandbox_ended(self, sandbox: Sandbox) -> None:
        """A hibernated sandbox was destroyed or failed: its image goes too."""
        if sandbox.snapshot_id is None:
            return
        await self.discard(self.path(sandbox.snapshot_id))
        await self._sandboxes.clear_image(sandbox.id, sandbox.snapshot_id)
