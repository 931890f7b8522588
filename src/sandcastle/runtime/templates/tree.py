"""A templates directory's trees: the lock a build holds, swapping a build in, retiring the
build it replaces, pinning, and removing trees (also ones a killed build left mounted).

``<templates_dir>/<name>/`` is the current build; ``.build-<name>-<hex>/`` a build in progress;
``.old-<name>-<hex>/`` a replaced one on its way to ``.retired/<name>/<build_id>/``
(``catalogue.py``); ``.<name>.lock`` the lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from sandcastle.errors import TemplateError
from sandcastle.runtime.templates.catalogue import TemplateInfo, load_template, retired_dir


class TemplateBuildError(TemplateError):
    """A template build failed; the message ends with the last lines of the build log."""


def pin_template(name: str, templates_dir: Path, runtime: str | None) -> TemplateInfo:
    """Pin the built template ``name`` to a backend (None: unpin; the server's default runs
    it). Raises :class:`TemplateBuildError` if it is not built or being built."""
    with build_lock(templates_dir, name):
        info = load_template(name, templates_dir)
        if info is None:
            raise TemplateBuildError(f"template {name!r} is not built")
        path = templates_dir / name / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest.pop("runtime", None)
        if runtime is not None:
            manifest["runtime"] = runtime
        staging = path.with_name(f".manifest-{secrets.token_hex(4)}.json")
        staging.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(staging, path)
    return dataclasses.replace(info, runtime=runtime)


@contextlib.contextmanager
def build_lock(templates_dir: Path, name: str) -> Iterator[None]:
    # flock conflicts between any two open file descriptions, so this also serializes two builds
    # in one process, and the kernel drops it if the process dies, unlike a pid file.
    with open(templates_dir / f".{name}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TemplateBuildError(f"a build of template {name!r} is already running") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_leftovers(templates_dir: Path, name: str) -> None:
    """Remove build and swap directories a killed process left behind (we hold the lock)."""
    pattern = re.compile(rf"\.(build|old)-{re.escape(name)}-[0-9a-f]{{8}}")
    for entry in templates_dir.iterdir():
        if pattern.fullmatch(entry.name):
            remove_tree(entry)


def swap_in(build_dir: Path, target: Path) -> None:
    old: Path | None = None
    if target.exists():
        old = target.with_name(f".old-{target.name}-{secrets.token_hex(4)}")
        os.rename(target, old)
    try:
        os.rename(build_dir, target)
    except OSError:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        _retire(old, target.parent, target.name)


def _retire(old: Path, templates_dir: Path, name: str) -> None:
    """Keep a replaced build for what still runs on it (renamed: a mount of it stays valid)."""
    try:
        build_id = str(json.loads((old / "manifest.json").read_text())["build_id"])
    except (OSError, ValueError, KeyError, TypeError):
        remove_tree(old)  # not a usable build: nothing can be running on it
        return
    place = retired_dir(templates_dir, name, build_id)
    place.parent.mkdir(parents=True, exist_ok=True)
    if place.exists():
        remove_tree(old)
        return
    os.rename(old, place)


def remove_tree(path: Path) -> None:
    # A killed debootstrap can leave /proc or /sys mounted inside its target and rmtree would
    # descend into them, so detach every mount below the tree first.
    for mount_point in sorted(_mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", mount_point], check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            escaped = line.split()[4]
            mount_point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), escaped)
            if mount_point == prefix or mount_point.startswith(prefix + "/"):
                found.append(mount_point)
    return found
