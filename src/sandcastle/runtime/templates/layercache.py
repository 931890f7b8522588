"""The builder's cache of a recipe's leading steps: the root filesystem as it stood after them,
kept under the digest of everything that made it, so the next build that begins the same way
copies it instead of running them. For a Dockerfile ``FROM debian:bookworm`` those steps are
debootstrap and our platform layer (minutes); changing a later ``RUN`` then costs a copy.

Entries live in ``<templates_dir>/.cache/<key>/rootfs``; an entry is complete once its
``complete`` marker exists (written after the copy, so a killed build leaves no half entry that
counts). The :data:`KEEP` entries used last are kept, the others deleted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from sandcastle.runtime.templates.recipes import Recipe, digest

CACHE = ".cache"
KEEP = 3


def prefix_key(recipe: Recipe, steps: int) -> str:
    """The digest of what the rootfs after the first ``steps`` steps of ``recipe`` depends on:
    the recipe's own digest with only those steps, and neither its name nor its ``ENV``
    (which no step sees: each ``Run`` carries its environment)."""
    return digest(dataclasses.replace(recipe, name="", steps=recipe.steps[:steps], env=()))


class LayerCache:
    def __init__(self, templates_dir: Path) -> None:
        self.root = templates_dir / CACHE

    def lookup(self, key: str) -> Path | None:
        """The cached rootfs for ``key``, or None; a hit counts as a use (for :meth:`prune`)."""
        entry = self.root / key
        marker = entry / "complete"
        if not marker.is_file() or not (entry / "rootfs").is_dir():
            return None
        marker.touch()
        return entry / "rootfs"

    async def store(self, key: str, rootfs: Path, tidy: Callable[[Path], None]) -> None:
        """Keep a copy of ``rootfs`` under ``key``; ``tidy(copy)`` removes from the copy what
        the build has in place only while it runs (bubblewrap's mount points)."""
        entry = self.root / key
        if (entry / "complete").is_file():
            return
        self.root.mkdir(mode=0o700, exist_ok=True)
        staging = self.root / f".staging-{secrets.token_hex(4)}"
        try:
            await asyncio.to_thread(staging.mkdir)
            await copy_tree(rootfs, staging / "rootfs")
            await asyncio.to_thread(tidy, staging / "rootfs")
            await asyncio.to_thread((staging / "complete").touch)
            await asyncio.to_thread(_replace, staging, entry)
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)
        await asyncio.to_thread(self.prune)

    def prune(self) -> None:
        """Delete all but the :data:`KEEP` entries used last, and leftovers of killed builds."""
        if not self.root.is_dir():
            return
        entries = []
        for entry in self.root.iterdir():
            marker = entry / "complete"
            if entry.name.startswith(".staging-") or not marker.is_file():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entries.append((marker.stat().st_mtime, entry))
        for _, entry in sorted(entries, reverse=True)[KEEP:]:
            shutil.rmtree(entry, ignore_errors=True)


async def copy_tree(source: Path, target: Path) -> None:
    """``cp -a`` ``source``'s contents into ``target`` (made if missing): owners, modes, links
    and hard links as they are; reflinks where the filesystem has them."""
    await asyncio.to_thread(target.mkdir, mode=0o755, exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        "cp", "-a", "--reflink=auto", f"{source}/.", str(target),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await process.communicate()
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    if process.returncode != 0:
        raise OSError(f"cp -a {source} {target}: {err.decode(errors='replace').strip()}")


def _replace(staging: Path, entry: Path) -> None:
    if entry.exists():  # an incomplete entry of a killed build
        shutil.rmtree(entry, ignore_errors=True)
    os.rename(staging, entry)
