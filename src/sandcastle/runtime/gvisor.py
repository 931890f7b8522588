"""The ``gvisor`` backend (work in progress: constructor signature is final)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from sandcastle.runtime.bwrap import DEFAULT_RUN_DIR, BwrapRuntime


class GvisorRuntime(BwrapRuntime):
    name: ClassVar[str] = "gvisor"
    supports_memory_snapshots: ClassVar[bool] = True

    def __init__(
        self,
        sandboxes_dir: Path,
        *,
        instance: str,
        run_dir: Path = DEFAULT_RUN_DIR,
        runsc_path: str | None = None,
    ) -> None:
        super().__init__(sandboxes_dir, instance=instance, run_dir=run_dir)
        self._runsc = runsc_path or "runsc"
