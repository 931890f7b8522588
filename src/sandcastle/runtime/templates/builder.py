"""Build template root filesystems on disk, and load the ones already built.

A template lives in ``<templates_dir>/<name>/``: ``rootfs/``, ``build.log`` and ``manifest.json``.
A build happens in ``<templates_dir>/.build-<name>-<hex>/`` and replaces the old template only
once it has fully succeeded, so a failed or cancelled build leaves the previous template intact.
The manifest is written last: a directory without one is never treated as a template.

Order: debootstrap (mirror from the host's apt sources), the recipe's steps, then size, manifest
and swap. :class:`~.recipes.Run` steps of our own recipes execute inside the rootfs under
bubblewrap, with the host network and the host's pip configuration and CA bundle
(:class:`BuildSandbox`); those of a Dockerfile (untrusted) each in a gVisor sandbox of their own,
given the same pip set-up read-only (:class:`IsolatedSteps`), while the builder watches the
rootfs's size. The other steps edit the rootfs from the host side, resolving paths as a chroot
would (:func:`resolve_inside`) so a symlink in the tree can never redirect a write onto the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import secrets
import shutil
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sandcastle.runtime.templates import isolated
from sandcastle.runtime.templates.buildenv import (
    BUILD_PATH,
    PROXY_VARS,
    BuildSandbox,
    Command,
    DebootstrapProgress,
    pick,
)
from sandcastle.runtime.templates.buildlog import BuildLog, OutputCallback
from sandcastle.runtime.templates.builtin import builtin_recipe
from sandcastle.runtime.templates.catalogue import TemplateInfo, load_template
from sandcastle.runtime.templates.hostpip import inspect_host_pip
from sandcastle.runtime.templates.isolated import BuildLimits, IsolatedSteps
from sandcastle.runtime.templates.layercache import LayerCache, copy_tree, prefix_key
from sandcastle.runtime.templates.recipes import (
    AddUser,
    Chown,
    Clean,
    CopyIn,
    Recipe,
    Run,
    Step,
    Write,
    digest,
)
from sandcastle.runtime.templates.rootfs import apply_on_host, tree_size
from sandcastle.runtime.templates.sources import MirrorNotFoundError, find_mirror
from sandcastle.runtime.templates.steprun import first_of, run_logged
from sandcastle.runtime.templates.tree import (
    TemplateBuildError,
    build_lock,
    pin_template,
    remove_leftovers,
    remove_tree,
    swap_in,
)

__all__ = ["BuildLimits", "BuildProgress", "TemplateBuildError", "build_template", "pin_template"]

_LOG_TAIL = 20
#: How often the rootfs is measured while an untrusted step runs (a walk of the tree: ~0.3 s
#: for the python template's 30,000 files).
_SIZE_CHECK_S = 3.0


@dataclass(frozen=True)
class BuildProgress:
    step_label: str
    #: 0-based; step 0 is debootstrap and the last step is "Finalize" (size, manifest, swap).
    step_index: int
    step_count: int
    fraction_within_step: float


ProgressCallback = Callable[[BuildProgress], None]
#: Told each problem with what the build inherits from the host, before the build starts.
WarningCallback = Callable[[str], None]


async def build_template(
    name: str,
    templates_dir: Path,
    *,
    on_progress: ProgressCallback | None = None,
    on_warning: WarningCallback | None = None,
    force: bool = False,
    recipe: Recipe | None = None,
    limits: BuildLimits | None = None,
    build_id: str | None = None,
    on_output: OutputCallback | None = None,
    defaults: Mapping[str, int] | None = None,
) -> TemplateInfo:
    """Build template ``name`` into ``templates_dir`` and return it.

    The recipe is the built-in one called ``name`` unless ``recipe`` is given. ``on_warning`` is
    told, before the build starts, each part of the host's pip set-up the build goes without.
    ``limits`` bound each untrusted step (default :class:`BuildLimits`). The build gets
    ``build_id`` (default: a new UUID); ``on_output`` is handed the log as it is written;
    ``defaults`` are the resources its sandboxes get when they ask for none
    (``catalogue.DEFAULT_KEYS``).

    Without ``force``, an existing template built from the same recipe digest is returned as is.
    Raises ``KeyError`` for an unknown recipe and :class:`TemplateBuildError` when the build fails
    or another build of the same template is running. On failure the log is kept as
    ``<templates_dir>/.<name>.failed-build.log``.
    """
    recipe = recipe or builtin_recipe(name)
    recipe_digest = digest(recipe)
    await asyncio.to_thread(templates_dir.mkdir, parents=True, exist_ok=True)
    with build_lock(templates_dir, name):
        existing = load_template(name, templates_dir)
        if existing is not None and not force and existing.recipe_digest == recipe_digest:
            return existing
        await asyncio.to_thread(remove_leftovers, templates_dir, name)
        build_dir = templates_dir / f".build-{name}-{secrets.token_hex(4)}"
        build_dir.mkdir(mode=0o755)
        failed_log = templates_dir / f".{name}.failed-build.log"
        try:
            build = _Build(
                recipe,
                recipe_digest,
                build_dir,
                on_progress or _ignore_progress,
                on_warning or _ignore_warning,
                runtime=existing.runtime if existing is not None else None,  # a pin stays
                limits=limits or BuildLimits(),
                build_id=build_id or str(uuid.uuid4()),
                on_output=on_output,
                defaults=dict(defaults or {}),
            )
            info = await build.run(templates_dir / name)
        except BaseException:
            with contextlib.suppress(OSError):
                shutil.copyfile(build_dir / "build.log", failed_log)
            # Shielded: a second cancellation must not leave a half-built tree behind.
            await asyncio.shield(asyncio.to_thread(remove_tree, build_dir))
            raise
        failed_log.unlink(missing_ok=True)
        return info


def _ignore_progress(progress: BuildProgress) -> None:
    pass


def _ignore_warning(warning: str) -> None:
    pass


class _Build:
    """One build: runs the steps in ``build_dir``, logging to ``build.log``, reporting progress."""

    def __init__(
        self,
        recipe: Recipe,
        recipe_digest: str,
        build_dir: Path,
        on_progress: ProgressCallback,
        on_warning: WarningCallback,
        *,
        runtime: str | None,
        limits: BuildLimits,
        build_id: str,
        on_output: OutputCallback | None,
        defaults: dict[str, int],
    ) -> None:
        self.recipe = recipe
        self.limits = limits
        self.build_id = build_id
        self.defaults = defaults
        self.recipe_digest = recipe_digest
        self.build_dir = build_dir
        self.rootfs = build_dir / "rootfs"
        self.on_progress = on_progress
        self.on_warning = on_warning
        self.cache = LayerCache(build_dir.parent)
        self.cache_key = prefix_key(recipe, recipe.cache_steps) if recipe.cache_steps else ""
        #: The cached rootfs after the first ``cache_steps`` steps, if there is one.
        self.cached = self.cache.lookup(self.cache_key) if self.cache_key else None
        first = f"Bootstrap Debian {recipe.suite}"
        if self.cached is not None:
            first = f"Copy cached layer (steps 2–{recipe.cache_steps + 1})"
        elif recipe.base is not None:
            first = f"Copy template {recipe.base.name}"
        self.labels = [
            first,
            *(step.label for step in recipe.steps),
            "Finalize",
        ]
        self.tail: deque[str] = deque(maxlen=_LOG_TAIL)
        self.log = BuildLog(build_dir / "build.log", on_output)
        self.step_index = 0
        #: The backend the template is pinned to (a rebuild keeps the pin).
        self.runtime = runtime

    async def run(self, target: Path) -> TemplateInfo:
        try:
            if self.recipe.own_steps is not None and not isolated.available():
                self.tail.append("install gVisor (runsc) and slirp4netns, as `make system` does")
                raise self.fail("a Dockerfile's steps run in gVisor, which is not installed")
            # Before anything slow: a host path pip cannot have in the build is said now, not
            # as pip's traceback minutes later.
            host_pip = await inspect_host_pip()
            for warning in host_pip.warnings:
                self.write_log(f"warning: {warning}\n")
                self.on_warning(warning)
            await self._step(0, self._first_step())
            sandbox = await asyncio.to_thread(
                BuildSandbox.prepare, self.rootfs, self.build_dir, host_pip
            )
            untrusted = IsolatedSteps(sandbox, self.limits)
            try:
                for index, step in enumerate(self.recipe.steps, start=1):
                    if self.cached is not None and index <= self.recipe.cache_steps:
                        self.write_log(f"=== [{index + 1}/{len(self.labels)}] cached\n")
                        continue
                    own = self.recipe.own_steps is None or index <= self.recipe.own_steps
                    runner = sandbox if own else untrusted
                    await self._step(index, functools.partial(self._execute, step, runner))
                    if index == self.recipe.cache_steps and self.cached is None:
                        await self._keep_layer(sandbox)
            finally:
                await untrusted.aclose()
                await asyncio.to_thread(sandbox.tidy)
            await self._step(len(self.labels) - 1, functools.partial(self._finalize, target))
        finally:
            self.log.close()
        info = load_template(target.name, target.parent)
        if info is None:
            raise TemplateBuildError(f"template {target.name!r} is unreadable after its build")
        return info

    async def _step(self, index: int, work: Callable[[], Awaitable[None]]) -> None:
        self.step_index = index
        label = self.labels[index]
        self.write_log(f"=== [{index + 1}/{len(self.labels)}] {label}\n")
        self.progress(0.0)
        started = time.monotonic()
        await work()
        self.write_log(f"=== {label}: done in {time.monotonic() - started:.1f}s\n")
        self.progress(1.0)

    def progress(self, fraction: float) -> None:
        index = self.step_index
        self.on_progress(BuildProgress(self.labels[index], index, len(self.labels), fraction))

    def write_log(self, text: str) -> None:
        self.log.write(text.encode())

    def fail(self, what: str) -> TemplateBuildError:
        """The error of the current step: which it is (for a Dockerfile, its line), what went
        wrong, and the last lines of its output."""
        tail = "\n".join(self.tail)
        step = f"step {self.step_index + 1}/{len(self.labels)} ({self.labels[self.step_index]})"
        return TemplateBuildError(
            f"template {self.recipe.name!r}, {step}: {what}; last log lines:\n{tail}"
        )

    async def _debootstrap(self) -> None:
        try:
            mirror = find_mirror(self.recipe.suite)
        except MirrorNotFoundError as exc:
            self.tail.append(str(exc))
            raise self.fail("no Debian mirror configured on the host") from exc
        argv = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(self.recipe.packages)}",
            self.recipe.suite,
            str(self.rootfs),
            mirror,
        ]
        env = {"PATH": BUILD_PATH, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
        env |= pick(os.environ, PROXY_VARS)
        tracker = DebootstrapProgress()

        def on_line(line: str) -> None:
            fraction = tracker.feed(line)
            if fraction is not None:
                self.progress(fraction)

        await self._run_process(Command(argv, env, shown=tuple(argv[:4])), on_line)

    def _first_step(self) -> Callable[[], Awaitable[None]]:
        if self.cached is not None:
            return functools.partial(copy_tree, self.cached, self.rootfs)
        return self._copy_base if self.recipe.base else self._debootstrap

    async def _keep_layer(self, sandbox: BuildSandbox) -> None:
        """Cache the rootfs as the leading steps left it; a failure only costs the cache."""
        try:
            await self.cache.store(self.cache_key, self.rootfs, sandbox.tidy_copy)
        except OSError as exc:
            self.write_log(f"warning: the layer was not cached: {exc}\n")

    async def _copy_base(self) -> None:
        assert self.recipe.base is not None
        base = self.recipe.base
        templates_dir = self.build_dir.parent
        # Under the base's build lock: a rebuild of it must not swap trees mid-copy.
        with build_lock(templates_dir, base.name):
            info = load_template(base.name, templates_dir)
            if info is None or info.build_id != base.build_id:
                self.tail.append(f"template {base.name!r} is not built, or was rebuilt since")
                raise self.fail(f"cannot start from template {base.name!r}")
            try:
                await copy_tree(info.rootfs, self.rootfs)
            except OSError as exc:
                self.tail.append(str(exc))
                raise self.fail(f"cannot copy template {base.name!r}") from exc

    async def _execute(self, step: Step, runner: BuildSandbox | IsolatedSteps) -> None:
        match step:
            case Run() if isinstance(runner, IsolatedSteps):
                async with runner.command(step) as command:
                    await first_of(self._run_process(command), self._watch_size())
            case Run():
                async with runner.command(step) as command:
                    await self._run_process(command)
            case Write() | AddUser() | Clean() | CopyIn() | Chown():
                try:
                    await asyncio.to_thread(apply_on_host, self.rootfs, step)
                except (OSError, ValueError) as exc:
                    self.tail.append(f"{type(exc).__name__}: {exc}")
                    raise self.fail(f"step {step.label!r} failed") from exc

    async def _finalize(self, target: Path) -> None:
        size = await asyncio.to_thread(tree_size, self.rootfs)
        manifest = {
            "name": self.recipe.name,
            "build_id": self.build_id,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "recipe_digest": self.recipe_digest,
            "size_bytes": size,
            **({"runtime": self.runtime} if self.runtime else {}),
            **({"env": dict(self.recipe.env)} if self.recipe.env else {}),
            **({"defaults": self.defaults} if self.defaults else {}),
        }
        self.write_log(f"manifest: {json.dumps(manifest)}\n")
        (self.build_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        await asyncio.to_thread(swap_in, self.build_dir, target)

    async def _watch_size(self) -> None:
        """Fail the build once its rootfs outgrows ``limits.disk_mb`` (checked every few
        seconds: a step writing fast may pass the limit by what it writes meanwhile)."""
        limit = self.limits.disk_mb * 2**20
        while True:
            await asyncio.sleep(_SIZE_CHECK_S)
            size = await asyncio.to_thread(tree_size, self.rootfs)
            if size > limit:
                self.tail.append(f"the image holds {size // 2**20} MB")
                raise self.fail(f"the build exceeded its disk limit of {self.limits.disk_mb} MB")

    async def _run_process(
        self, command: Command, on_line: Callable[[str], None] | None = None
    ) -> None:
        argv = command.argv
        shown = command.shown or tuple(argv)
        self.write_log(f"$ {' '.join(shown)}\n")
        try:
            returncode = await run_logged(command, self.log, self.tail, on_line)
        except OSError as exc:
            self.tail.append(str(exc))
            raise self.fail(f"cannot start {shown[0]}") from exc
        if returncode != 0:
            raise self.fail(f"{shown[0]} exited with status {returncode}")
