"""``sandcastle purge`` also destroys what a template preparation left behind (a server that died
while booting a template to save its memory image)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from sandcastle.config import Settings
from sandcastle.runtime.registry import create_runtime
from tests.serverproc import REPO, templates_dir

#: Boots a template sandbox as ``prepare_template`` does, then dies like a crashed server.
LEAVE_A_BOOT = """
import asyncio, os, sys
from pathlib import Path
from sandcastle.config import Settings
from sandcastle.runtime.base import LaunchSpec
from sandcastle.runtime.registry import create_runtime

async def main():
    runtime = create_runtime(Settings(data_dir=Path(sys.argv[1])), "bwrap")
    spec = LaunchSpec(sandbox_id=sys.argv[2], rootfs=Path(sys.argv[3]), vcpus=1,
                      memory_mb=256, disk_mb=128, pids_max=64, cwd="/home/user")
    link = await runtime.launch(spec)
    await link.wait_connected(30.0)
    print("up", flush=True)
    os._exit(0)

asyncio.run(main())
"""


async def state(settings: Settings, boot_id: str) -> tuple[bool, list[str], list[str]]:
    runtime = create_runtime(settings, "bwrap")
    try:
        alive = (await runtime.poll(boot_id)).alive
        return alive, await runtime.list_template_boots(), await runtime.list_sandboxes()
    finally:
        await runtime.aclose()


def sandcastle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def test_purge_destroys_template_boots_left_behind(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    boot_id = "tpl_leftover0001"
    rootfs = str(templates_dir() / "python" / "rootfs")
    booted = sandcastle("-c", LEAVE_A_BOOT, str(settings.data_dir), boot_id, rootfs)
    assert booted.stdout == "up\n", booted.stdout + booted.stderr
    # Outlived its server; a running server's sandbox list leaves it alone (it may be busy).
    assert asyncio.run(state(settings, boot_id)) == (True, [boot_id], [])
    purged = sandcastle("-m", "sandcastle", "purge", "--yes", "--data-dir", str(settings.data_dir))
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert asyncio.run(state(settings, boot_id)) == (False, [], [])
    assert not (settings.sandboxes_dir / boot_id).exists()
