"""Template builds through the API: an org's Dockerfile and build context become its own template.

A build is asked for (:meth:`TemplateBuildService.start`), checked there and then (the name, the
Dockerfile to its last line, the context archive), recorded (``records.py``) and run in the
background by the builder, whose untrusted steps run in gVisor (``isolated.py``). Its record
and log are what ``GET /v1/templates/{name}/builds/{id}`` shows; its log can be followed as it
is written (:meth:`follow`).

Limits: builds wait their turn for one of ``template_builds_max_concurrent`` slots (a build
takes the CPU it can), an org may have ``template_builds_per_org`` builds under way and
``templates_per_org`` templates, a build may take ``template_build_timeout_s``, and each step
the CPU, memory and disk ``template_build_*`` say.

An org's template is its own (``catalogue.org_key``): another org neither sees nor uses it, nor
its builds. Public templates (every org's) are built by the server's operators.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from sandcastle.config import Settings
from sandcastle.domain.clock import Clock, utcnow
from sandcastle.errors import FieldError, ForbiddenError, NotFoundError, QuotaExceededError
from sandcastle.runtime.templates import records
from sandcastle.runtime.templates.builder import BuildLimits, TemplateBuildError, build_template
from sandcastle.runtime.templates.catalogue import (
    TEMPLATE_NAME,
    built_templates,
    load_template,
    org_key,
    split_key,
)
from sandcastle.runtime.templates.context_archive import unpack
from sandcastle.runtime.templates.from_dockerfile import recipe_from_dockerfile
from sandcastle.runtime.templates.recipes import Recipe
from sandcastle.runtime.templates.records import BuildRecord, BuildStatus
from sandcastle.services.auth import Principal
from sandcastle.services.diskspace import ensure_free

log = logging.getLogger(__name__)

#: How often a followed log is read again while its build runs.
FOLLOW_INTERVAL_S = 0.5
#: After this long without a log line, a follower is handed an empty chunk (a keepalive): a
#: step may work in silence for minutes, and clients and proxies drop a silent stream.
KEEPALIVE_S = 15.0


@dataclass(frozen=True)
class BuildRequest:
    name: str
    dockerfile: str
    #: The build context as an archive the route saved (None: a Dockerfile without COPY).
    context_archive: Path | None = None
    build_args: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Build the server's public template ``name`` (operators only), not the org's own.
    public: bool = False
    #: The resources its sandboxes get when they ask for none (``catalogue.DEFAULT_KEYS``).
    defaults: Mapping[str, int] = dataclasses.field(default_factory=dict)


class TemplateBuildService:
    def __init__(self, settings: Settings, clock: Clock = utcnow) -> None:
        self._settings = settings
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: Builds under way, by id: an org's count is taken from here.
        self._running: dict[str, BuildRecord] = {}
        self._slots: asyncio.Semaphore | None = None

    @property
    def _root(self) -> Path:
        return self._settings.resolved_templates_dir

    async def recover(self) -> None:
        """At start: builds a previous process left under way failed with it."""
        for record in await asyncio.to_thread(records.fail_interrupted, self._root, self._clock()):
            log.warning("template build %s of %s was cut short", record.build_id, record.template)

    async def start(self, principal: Principal, request: BuildRequest) -> BuildRecord:
        """Check and record the build, start it in the background, and return its record."""
        key = self._key(principal, request)
        settings = self._settings
        await asyncio.to_thread(self._root.mkdir, parents=True, exist_ok=True)
        ensure_free(settings, f"build template {request.name}", self._root)
        await self._check_count(principal, key)
        under_way = [r for r in self._running.values() if r.org_id == principal.org_id]
        if len(under_way) >= settings.template_builds_per_org:
            raise QuotaExceededError(
                f"the org has {len(under_way)} template build(s) under way, as many as it may; "
                "wait for one to end"
            )
        record = BuildRecord(
            str(uuid.uuid4()), key, principal.org_id, BuildStatus.BUILDING, self._clock()
        )
        # Counted from here, before the first await below: two requests of one org at once
        # cannot both pass the check above.
        self._running[record.build_id] = record
        directory = records.build_dir(self._root, record.build_id)
        try:
            recipe = await asyncio.to_thread(self._recipe, principal, request, key, directory)
            await asyncio.to_thread(records.save, self._root, record)
        except BaseException:
            self._running.pop(record.build_id, None)
            await asyncio.to_thread(shutil.rmtree, directory, True)
            raise
        self._tasks[record.build_id] = asyncio.create_task(
            self._build(record, recipe, request.defaults)
        )
        return record

    async def get(self, principal: Principal, name: str, build_id: str) -> BuildRecord:
        record = await asyncio.to_thread(records.load, self._root, build_id)
        # Another org's build is not there for this caller, whatever its id.
        if record is None or record.org_id != principal.org_id or not _names(record, name):
            raise NotFoundError(f"template {name!r} has no build {build_id!r}")
        return record

    async def log_tail(self, build_id: str, size: int) -> str | None:
        """The last ``size`` bytes of a build's log (of a record :meth:`get` gave)."""
        return await asyncio.to_thread(_read_tail, records.log_path(self._root, build_id), size)

    async def follow(self, build_id: str) -> AsyncIterator[bytes]:
        """The log of a build (of a record :meth:`get` gave) from its start, as it is written,
        until the build ends; an empty chunk after each :data:`KEEPALIVE_S` of silence."""
        path = records.log_path(self._root, build_id)
        offset = 0
        quiet = 0.0
        while True:
            running = build_id in self._running  # before reading: the end is then all read
            while chunk := await asyncio.to_thread(_read_from, path, offset):
                offset += len(chunk)
                quiet = 0.0
                yield chunk
            if not running:
                return
            if quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield b""
            await asyncio.sleep(FOLLOW_INTERVAL_S)
            quiet += FOLLOW_INTERVAL_S

    async def aclose(self) -> None:
        """Stop the builds under way (each is recorded as cut short; nothing is swapped in)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _key(self, principal: Principal, request: BuildRequest) -> str:
        check_defaults(self._settings, request.defaults)
        if not TEMPLATE_NAME.match(request.name):
            raise FieldError(
                "name", "a template name is 1 to 64 letters, digits, '_', '.' or '-', first a "
                "letter or digit"
            )  # fmt: skip
        if request.public:
            if not principal.operator:
                raise ForbiddenError("only the server's operators build public templates")
            return request.name
        if not principal.is_admin:
            raise ForbiddenError("only the org's owners and admins build its templates")
        return org_key(request.name, principal.org_id)

    async def _check_count(self, principal: Principal, key: str) -> None:
        if load_template(key, self._root) is not None or split_key(key)[1] is None:
            return  # a rebuild, or a public template
        built = await asyncio.to_thread(built_templates, self._root)
        own = [t for t in built if split_key(t.name)[1] == principal.org_id]
        if len(own) >= self._settings.templates_per_org:
            raise QuotaExceededError(
                f"the org has {len(own)} templates, as many as it may; delete one first"
            )

    def _recipe(
        self, principal: Principal, request: BuildRequest, key: str, directory: Path
    ) -> Recipe:
        context: Path | None = None
        if request.context_archive is not None:
            context = directory / "context"
            context.mkdir(parents=True)
            unpack(request.context_archive, context)
        return recipe_from_dockerfile(
            key,
            request.dockerfile,
            context,
            self._root,
            request.build_args,
            org_id=None if request.public else principal.org_id,
        )

    async def _build(
        self, record: BuildRecord, recipe: Recipe, defaults: Mapping[str, int]
    ) -> None:
        settings = self._settings
        limits = BuildLimits(
            vcpus=settings.template_build_vcpus,
            memory_mb=settings.template_build_memory_mb,
            disk_mb=settings.template_build_disk_mb,
        )
        outcome = dataclasses.replace(record, status=BuildStatus.FAILED)
        path = records.log_path(self._root, record.build_id)
        try:
            with path.open("ab") as log_file:

                def on_output(data: bytes) -> None:
                    log_file.write(data)
                    log_file.flush()

                async with self._slot():
                    async with asyncio.timeout(settings.template_build_timeout_s):
                        info = await build_template(
                            record.template,
                            self._root,
                            recipe=recipe,
                            force=True,
                            limits=limits,
                            build_id=record.build_id,
                            on_output=on_output,
                            defaults=defaults,
                        )
            outcome = dataclasses.replace(
                outcome, status=BuildStatus.READY, size_bytes=info.size_bytes
            )
        except TimeoutError:
            limit = settings.template_build_timeout_s
            outcome = dataclasses.replace(outcome, error=f"the build took over {limit:.0f} s")
        except TemplateBuildError as exc:
            outcome = dataclasses.replace(outcome, error=str(exc))
        except asyncio.CancelledError:
            outcome = dataclasses.replace(outcome, error="the server stopped during the build")
            raise
        except Exception:
            log.exception("template build %s failed", record.build_id)
            outcome = dataclasses.replace(outcome, error="the build failed on the server's side")
        finally:
            outcome = dataclasses.replace(outcome, finished_at=self._clock())
            await asyncio.shield(self._finish(outcome))

    async def _finish(self, outcome: BuildRecord) -> None:
        await asyncio.to_thread(records.save, self._root, outcome)
        directory = records.build_dir(self._root, outcome.build_id)
        await asyncio.to_thread(shutil.rmtree, directory / "context", True)
        self._running.pop(outcome.build_id, None)
        self._tasks.pop(outcome.build_id, None)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        # Made here, not in __init__: a semaphore belongs to the loop it is first used on.
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._settings.template_builds_max_concurrent)
        async with self._slots:
            yield


def check_defaults(settings: Settings, defaults: Mapping[str, int]) -> None:
    """A template's default resources must be ones a sandbox of this server may have."""
    s = settings
    bounds = {
        "vcpus": (1, s.max_vcpus),
        "memory_mb": (s.min_memory_mb, s.max_memory_mb),
        "disk_mb": (s.min_disk_mb, s.max_disk_mb),
    }
    for key, value in defaults.items():
        low, high = bounds[key]
        if not low <= value <= high:
            raise FieldError(key, f"{key} must be between {low} and {high}")


def _names(record: BuildRecord, name: str) -> bool:
    return name in (record.template, split_key(record.template)[0])


def _read_tail(path: Path, size: int) -> str | None:
    try:
        with path.open("rb") as file:
            end = file.seek(0, 2)
            file.seek(max(0, end - size))
            return file.read().decode(errors="replace")
    except FileNotFoundError:
        return None


def _read_from(path: Path, offset: int, limit: int = 1 << 20) -> bytes:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read(limit)
    except FileNotFoundError:
        return b""
