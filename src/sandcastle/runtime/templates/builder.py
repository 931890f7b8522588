"""Build template root filesystems on disk, and load the ones already built.

A template lives in ``<templates_dir>/<name>/``: ``rootfs/``, ``build.log`` and ``manifest.json``.
A build happens in ``<templates_dir>/.build-<name>-<hex>/`` and replaces the old template only
once it has fully succeeded, so a failed or cancelled build leaves the previous template intact.
The manifest is written last: a directory without one is never treated as a template.

Order: debootstrap (mirror from the host's apt sources), the recipe's steps, then size, manifest
and swap. :class:`~.recipes.Run` steps execute inside the rootfs under bubblewrap, with the host
network and the host's pip configuration and CA bundle (:class:`_BuildSandbox`); the other steps
edit the rootfs from the host side, resolving paths as a chroot would (:func:`resolve_inside`) so
a symlink in the tree can never redirect a write onto the host.
"""

from __future__ import annotations

import ast
import asyncio
import configparser
import contextlib
import fcntl
import functools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

from sandcastle.runtime.templates.recipes import (
    AddUser,
    Clean,
    Recipe,
    Run,
    Step,
    Write,
    digest,
    get_recipe,
)
from sandcastle.runtime.templates.sources import MirrorNotFoundError, find_mirror

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: Host files are bound inside the build sandbox's private /tmp, so none is left in the template.
_BUILD_SHARE = "/tmp/.sandcastle-build"
_INNER_CA = f"{_BUILD_SHARE}/ca-certificates.crt"
_INNER_PIP_CONF = f"{_BUILD_SHARE}/pip.conf"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
#: Set by the builder itself (pointing inside the sandbox), so the host's values are not forwarded.
_OWN_PIP_VARS = ("PIP_CERT", "PIP_CONFIG_FILE")
_LOG_TAIL = 20


class TemplateBuildError(Exception):
    """A template build failed; the message ends with the last lines of the build log."""


@dataclass(frozen=True)
class BuildProgress:
    step_label: str
    #: 0-based; step 0 is debootstrap and the last step is "Finalize" (size, manifest, swap).
    step_index: int
    step_count: int
    fraction_within_step: float


@dataclass(frozen=True)
class TemplateInfo:
    name: str
    build_id: str
    built_at: datetime
    recipe_digest: str
    size_bytes: int
    rootfs: Path


ProgressCallback = Callable[[BuildProgress], None]


def load_template(name: str, templates_dir: Path) -> TemplateInfo | None:
    """Return the built template ``name``, or None if there is none or its manifest is unusable."""
    directory = templates_dir / name
    try:
        data = json.loads((directory / "manifest.json").read_text())
        info = TemplateInfo(
            name=str(data["name"]),
            build_id=str(data["build_id"]),
            built_at=datetime.fromisoformat(data["built_at"]),
            recipe_digest=str(data["recipe_digest"]),
            size_bytes=int(data["size_bytes"]),
            rootfs=directory / "rootfs",
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if info.name == name and info.rootfs.is_dir() else None


async def build_template(
    name: str,
    templates_dir: Path,
    *,
    on_progress: ProgressCallback | None = None,
    force: bool = False,
) -> TemplateInfo:
    """Build template ``name`` into ``templates_dir`` and return it.

    Without ``force``, an existing template built from the same recipe digest is returned as is.
    Raises ``KeyError`` for an unknown recipe and :class:`TemplateBuildError` when the build fails
    or another build of the same template is running. On failure the log is kept as
    ``<templates_dir>/.<name>.failed-build.log``.
    """
    recipe = get_recipe(name)
    recipe_digest = digest(recipe)
    templates_dir.mkdir(parents=True, exist_ok=True)
    with _build_lock(templates_dir, name):
        existing = load_template(name, templates_dir)
        if existing is not None and not force and existing.recipe_digest == recipe_digest:
            return existing
        await asyncio.to_thread(_remove_leftovers, templates_dir, name)
        build_dir = templates_dir / f".build-{name}-{secrets.token_hex(4)}"
        build_dir.mkdir(mode=0o755)
        failed_log = templates_dir / f".{name}.failed-build.log"
        try:
            build = _Build(recipe, recipe_digest, build_dir, on_progress or _ignore_progress)
            info = await build.run(templates_dir / name)
        except BaseException:
            with contextlib.suppress(OSError):
                shutil.copyfile(build_dir / "build.log", failed_log)
            # Shielded: a second cancellation must not leave a half-built tree behind.
            await asyncio.shield(asyncio.to_thread(_remove_tree, build_dir))
            raise
        failed_log.unlink(missing_ok=True)
        return info


def _ignore_progress(progress: BuildProgress) -> None:
    pass


@contextlib.contextmanager
def _build_lock(templates_dir: Path, name: str) -> Iterator[None]:
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


def _remove_leftovers(templates_dir: Path, name: str) -> None:
    """Remove build and swap directories a killed process left behind (we hold the lock)."""
    pattern = re.compile(rf"\.(build|old)-{re.escape(name)}-[0-9a-f]{{8}}")
    for entry in templates_dir.iterdir():
        if pattern.fullmatch(entry.name):
            _remove_tree(entry)


def _swap_in(build_dir: Path, target: Path) -> None:
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
        _remove_tree(old)


def _remove_tree(path: Path) -> None:
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


class _Build:
    """One build: runs the steps in ``build_dir``, logging to ``build.log``, reporting progress."""

    def __init__(
        self, recipe: Recipe, recipe_digest: str, build_dir: Path, on_progress: ProgressCallback
    ) -> None:
        self.recipe = recipe
        self.recipe_digest = recipe_digest
        self.build_dir = build_dir
        self.rootfs = build_dir / "rootfs"
        self.on_progress = on_progress
        self.labels = [
            f"Bootstrap Debian {recipe.suite}",
            *(step.label for step in recipe.steps),
            "Finalize",
        ]
        self.tail: deque[str] = deque(maxlen=_LOG_TAIL)
        self.log = (build_dir / "build.log").open("ab")
        self.step_index = 0

    async def run(self, target: Path) -> TemplateInfo:
        try:
            await self._step(0, self._debootstrap)
            sandbox = await _BuildSandbox.prepare(self.rootfs, self.build_dir, self.write_log)
            try:
                for index, step in enumerate(self.recipe.steps, start=1):
                    await self._step(index, functools.partial(self._execute, step, sandbox))
            finally:
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
        if not self.log.closed:
            self.log.write(text.encode())
            self.log.flush()

    def fail(self, what: str) -> TemplateBuildError:
        tail = "\n".join(self.tail)
        return TemplateBuildError(f"template {self.recipe.name!r}: {what}; last log lines:\n{tail}")

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
        env = {"PATH": _PATH, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
        env |= _pick(os.environ, _PROXY_VARS)
        tracker = DebootstrapProgress()

        def on_line(line: str) -> None:
            fraction = tracker.feed(line)
            if fraction is not None:
                self.progress(fraction)

        await self._run_process(argv, env, on_line)

    async def _execute(self, step: Step, sandbox: _BuildSandbox) -> None:
        match step:
            case Run():
                await self._run_process(sandbox.argv(step), sandbox.env(step))
            case Write() | AddUser() | Clean():
                try:
                    await asyncio.to_thread(apply_on_host, self.rootfs, step)
                except (OSError, ValueError) as exc:
                    self.tail.append(f"{type(exc).__name__}: {exc}")
                    raise self.fail(f"step {step.label!r} failed") from exc

    async def _finalize(self, target: Path) -> None:
        size = await asyncio.to_thread(tree_size, self.rootfs)
        manifest = {
            "name": self.recipe.name,
            "build_id": str(uuid.uuid4()),
            "built_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "recipe_digest": self.recipe_digest,
            "size_bytes": size,
        }
        self.write_log(f"manifest: {json.dumps(manifest)}\n")
        (self.build_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        await asyncio.to_thread(_swap_in, self.build_dir, target)

    async def _run_process(
        self, argv: list[str], env: Mapping[str, str], on_line: Callable[[str], None] | None = None
    ) -> None:
        self.write_log(f"$ {' '.join(argv)}\n")
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(env),
                # Its own process group, so a cancelled build can stop debootstrap's children too.
                start_new_session=True,
            )
        except OSError as exc:
            self.tail.append(str(exc))
            raise self.fail(f"cannot start {argv[0]}") from exc
        try:
            assert process.stdout is not None
            pending = b""
            while chunk := await process.stdout.read(65536):
                self.log.write(chunk)
                # Progress redraws end in \r; split on it too so the tail stays readable.
                *lines, pending = re.split(rb"\r\n|\r|\n", pending + chunk)
                for raw in lines:
                    self._line(raw, on_line)
            self._line(pending, on_line)
            self.log.flush()
            returncode = await process.wait()
        except BaseException:
            await _terminate(process)
            raise
        if returncode != 0:
            raise self.fail(f"{argv[0]} exited with status {returncode}")

    def _line(self, raw: bytes, on_line: Callable[[str], None] | None) -> None:
        line = raw.decode(errors="replace").rstrip()
        if line:
            self.tail.append(line)
            if on_line is not None:
                on_line(line)


async def _terminate(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    # SIGTERM first: debootstrap's exit trap unmounts what it mounted inside the target.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(process.wait()), 10)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


class DebootstrapProgress:
    """Turn debootstrap's ``I:`` lines into a rough, never decreasing fraction."""

    # (verb, start, end): phases weighted roughly by their measured share of a bookworm build.
    _PHASES = (
        ("Retrieving", 0.02, 0.30),
        ("Extracting", 0.30, 0.45),
        ("Unpacking", 0.45, 0.70),
        ("Configuring", 0.70, 1.00),
    )
    # minbase + python3 + python3-venv + ca-certificates fetched 120 packages; before retrieval
    # ends the real count is unknown, and this only shapes the progress bar.
    _EXPECTED_PACKAGES = 120

    def __init__(self) -> None:
        self.counts = {verb: 0 for verb, _, _ in self._PHASES}
        self.fraction = 0.0

    def feed(self, line: str) -> float | None:
        """Return the new fraction if ``line`` moved it, else None."""
        match = re.match(r"I: (\w+) ", line)
        if match is None or match.group(1) not in self.counts:
            return None
        verb = match.group(1)
        self.counts[verb] += 1
        retrieved = self.counts["Retrieving"]
        total = max(retrieved, self._EXPECTED_PACKAGES) if verb == "Retrieving" else retrieved
        start, end = next((s, e) for v, s, e in self._PHASES if v == verb)
        fraction = start + (end - start) * min(1.0, self.counts[verb] / max(total, 1))
        if fraction <= self.fraction:
            return None
        self.fraction = fraction
        return fraction


@dataclass
class _BuildSandbox:
    """How :class:`Run` steps execute: bubblewrap over the rootfs, with the host's pip setup.

    Host directories that the pip configuration references (``find-links``, ``file://`` indexes)
    are bound read-only at the same path, since the configuration names them by that path. Their
    mount points are created in the rootfs by bwrap; :meth:`tidy` removes them again.
    """

    rootfs: Path
    pip_conf: Path | None
    forwarded_env: dict[str, str]
    binds: list[str] = field(default_factory=list)
    mount_points: list[Path] = field(default_factory=list)

    @classmethod
    async def prepare(
        cls, rootfs: Path, build_dir: Path, log: Callable[[str], None]
    ) -> _BuildSandbox:
        config, problem = await _host_pip_config()
        if problem is not None:
            log(f"warning: host pip configuration not inherited: {problem}\n")
        pip_conf: Path | None = None
        if config:
            pip_conf = build_dir / "pip.conf"
            # The host config may hold index credentials: private, and deleted by tidy().
            with open(os.open(pip_conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                _config_parser(config).write(f)
        forwarded = {
            name: value
            for name, value in os.environ.items()
            if name.startswith("PIP_") and name not in _OWN_PIP_VARS
        }
        sandbox = cls(rootfs, pip_conf, forwarded | _pick(os.environ, _PROXY_VARS))
        for directory in referenced_dirs(config, forwarded):
            inside = resolve_inside(rootfs, directory)
            if os.path.lexists(inside):
                log(f"warning: not binding {directory}: it would hide the template's own\n")
                continue
            sandbox.binds.append(directory)
            sandbox.mount_points.append(_first_missing(rootfs, directory))
        return sandbox

    def env(self, step: Run) -> dict[str, str]:
        env = {"PATH": _PATH, "HOME": "/root", "LANG": "C.UTF-8", **self.forwarded_env}
        if HOST_CA_BUNDLE.is_file():
            env |= {"PIP_CERT": _INNER_CA, "SSL_CERT_FILE": _INNER_CA}
        if self.pip_conf is not None:
            env["PIP_CONFIG_FILE"] = _INNER_PIP_CONF
        return env | dict(step.env)

    def argv(self, step: Run) -> list[str]:
        argv = ["bwrap", "--bind", str(self.rootfs), "/", "--dev", "/dev", "--proc", "/proc"]
        argv += ["--perms", "1777", "--tmpfs", "/tmp"]
        argv += ["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]
        if HOST_CA_BUNDLE.is_file():
            argv += ["--ro-bind", str(HOST_CA_BUNDLE), _INNER_CA]
        if self.pip_conf is not None:
            argv += ["--ro-bind", str(self.pip_conf), _INNER_PIP_CONF]
        for directory in self.binds:
            argv += ["--ro-bind", directory, directory]
        argv += ["--share-net", "--unshare-pid", "--unshare-ipc", "--die-with-parent"]
        argv += ["--new-session", "--chdir", step.cwd, "--"]
        if (step.uid, step.gid) != (0, 0):
            # Not bwrap --unshare-user --uid: run by root, that maps the sandbox uid to real root,
            # so files would be created root-owned and the user's own home would be read-only.
            argv += ["setpriv", f"--reuid={step.uid}", f"--regid={step.gid}", "--clear-groups"]
            argv += ["--"]
        return argv + list(step.argv)

    def tidy(self) -> None:
        if self.pip_conf is not None:
            self.pip_conf.unlink(missing_ok=True)
        for top in self.mount_points:
            # Only empty directories: these were bind mount points, never written through.
            for directory, _, _ in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)


async def _host_pip_config() -> tuple[dict[str, dict[str, str]], str | None]:
    """The host's effective pip configuration by section, and why it is empty if pip failed.

    Asking pip (``pip config list``) rather than reading files gets pip's own rules for which
    files apply (global, user, site, ``PIP_CONFIG_FILE``) and which one wins.
    """
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pip",
            "config",
            "list",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
    except OSError as exc:
        return {}, str(exc)
    if process.returncode != 0:
        return {}, err.decode(errors="replace").strip() or f"pip exited {process.returncode}"
    return parse_pip_config_list(out.decode(errors="replace")), None


def parse_pip_config_list(text: str) -> dict[str, dict[str, str]]:
    """Parse ``pip config list`` lines (``section.key='value'``); ``:env:`` entries are skipped
    because the builder forwards the ``PIP_*`` variables themselves."""
    config: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        key, sep, raw_value = line.partition("=")
        section, dot, option = key.strip().partition(".")
        if not sep or not dot or section == ":env:":
            continue
        try:
            value = ast.literal_eval(raw_value.strip())
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, str):
            config.setdefault(section, {})[option] = value
    return config


def _config_parser(config: Mapping[str, Mapping[str, str]]) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict(config)
    return parser


def referenced_dirs(config: Mapping[str, Mapping[str, str]], env: Mapping[str, str]) -> list[str]:
    """Existing host directories named by absolute paths or ``file://`` URLs in pip settings."""
    settings = [(option, value) for section in config.values() for option, value in section.items()]
    settings += [(name.removeprefix("PIP_"), value) for name, value in env.items()]
    found: list[str] = []
    for option, value in settings:
        is_index = option.lower().replace("_", "-") in ("index-url", "extra-index-url")
        for token in value.split():
            if token.startswith("file://"):
                path = unquote(urlparse(token).path)
            elif token.startswith("/"):
                path = token
            else:
                continue
            path = os.path.normpath(path)
            if is_index:
                # A PEP 503 project page (<index>/<project>/) commonly links its files as
                # ../../files/..., i.e. beside the index: bind the index's parent.
                path = os.path.dirname(path)
            if path != "/" and os.path.isdir(path):
                found.append(path)
    kept: list[str] = []
    for path in sorted(set(found)):
        if not any(path.startswith(parent + "/") for parent in kept):
            kept.append(path)
    return kept


def _first_missing(rootfs: Path, inner: str) -> Path:
    parts = Path(inner).parts[1:]
    for depth in range(1, len(parts) + 1):
        candidate = rootfs.joinpath(*parts[:depth])
        if not os.path.lexists(candidate):
            return candidate
    return rootfs.joinpath(*parts)


def resolve_inside(rootfs: Path, inner: str, *, follow_last: bool = True) -> Path:
    """Map absolute in-rootfs path ``inner`` to a host path, resolving symlinks as a chroot would.

    An absolute symlink target restarts at ``rootfs`` and ``..`` stops there, so a link in the tree
    (which packages and pip install freely) cannot make a host-side write land outside it.
    """
    if not inner.startswith("/"):
        raise ValueError(f"not an absolute path: {inner!r}")
    pending = [part for part in inner.split("/") if part not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = rootfs.joinpath(*resolved, part)
        if (pending or follow_last) and candidate.is_symlink():
            links += 1
            if links > 40:
                raise ValueError(f"too many symlinks resolving {inner!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending = [p for p in target.split("/") if p not in ("", ".")] + pending
            continue
        resolved.append(part)
    return rootfs.joinpath(*resolved)


def apply_on_host(rootfs: Path, step: Write | AddUser | Clean) -> None:
    """Carry out a host-side step on ``rootfs``; raises ``OSError``/``ValueError`` on failure."""
    match step:
        case Write():
            for directory in step.directories:
                _make_dir(rootfs, directory.path, directory.mode, directory.uid, directory.gid)
            for file in step.files:
                parent = os.path.dirname(file.path)
                _make_dir(rootfs, parent, None, 0, 0)
                _write_file(rootfs, file.path, file.content, file.mode, file.uid, file.gid)
        case AddUser():
            _add_user(rootfs, step)
        case Clean():
            for inner in step.directories:
                _empty_dir(resolve_inside(rootfs, inner))


def _make_dir(rootfs: Path, inner: str, mode: int | None, uid: int, gid: int) -> None:
    """Create ``inner`` and missing parents (0755, root); set mode and owner of ``inner`` if
    ``mode`` is given, otherwise leave an existing directory as it is."""
    parts = [part for part in inner.split("/") if part]
    for depth in range(1, len(parts) + 1):
        host = resolve_inside(rootfs, "/" + "/".join(parts[:depth]))
        if not os.path.lexists(host):
            # A dangling link's target can be several levels deep; none of its missing levels can
            # be a link, so creating them in order stays inside the rootfs.
            missing = [host, *(p for p in host.parents if not os.path.lexists(p))]
            for directory in reversed(missing):
                directory.mkdir()
                os.chmod(directory, 0o755)  # explicit: mkdir's mode is subject to the umask
        elif not host.is_dir():
            raise ValueError(f"{'/'.join(parts[:depth])} exists and is not a directory")
    if mode is not None:
        host = resolve_inside(rootfs, inner)
        os.chmod(host, mode)
        os.chown(host, uid, gid)


def _write_file(rootfs: Path, inner: str, content: str, mode: int, uid: int, gid: int) -> None:
    host = resolve_inside(rootfs, inner, follow_last=False)
    if host.is_symlink():
        # Replace the link itself (e.g. a resolv.conf link) rather than write through it.
        host.unlink()
    fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with open(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
        os.fchmod(fd, mode)
        os.fchown(fd, uid, gid)


def _add_user(rootfs: Path, user: AddUser) -> None:
    days = int(time.time() // 86400)
    _add_entry(
        resolve_inside(rootfs, "/etc/passwd"),
        f"{user.name}:x:{user.uid}:{user.gid}::{user.home}:{user.shell}",
        id_field=2,
    )
    _add_entry(resolve_inside(rootfs, "/etc/group"), f"{user.name}:x:{user.gid}:", id_field=2)
    # Locked password ("!"): the account exists for ownership and ``getpwuid``, not for logins.
    _add_entry(resolve_inside(rootfs, "/etc/shadow"), f"{user.name}:!:{days}:0:99999:7:::")
    _add_entry(resolve_inside(rootfs, "/etc/gshadow"), f"{user.name}:!::")


def _add_entry(path: Path, line: str, *, id_field: int | None = None) -> None:
    """Append ``line`` unless present; a different entry with its name or id is an error."""
    if not path.exists() and id_field is None:
        return  # shadow files are optional
    text = path.read_text()
    fields = line.split(":")
    for existing in text.splitlines():
        if existing == line:
            return
        other = existing.split(":")
        same_name = other[0] == fields[0]
        same_id = (
            id_field is not None and len(other) > id_field and other[id_field] == fields[id_field]
        )
        if same_name and id_field is None:
            return  # shadow entries carry dates; the passwd/group checks own the conflicts
        if same_name or same_id:
            raise ValueError(f"{path.name}: {existing!r} conflicts with {line!r}")
    with path.open("a") as handle:
        handle.write(("" if text.endswith("\n") or not text else "\n") + line + "\n")


def _empty_dir(directory: Path) -> None:
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _pick(source: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    return {name: source[name] for name in names if name in source}


def tree_size(root: Path) -> int:
    """Sum of ``lstat`` sizes below ``root``, not following symlinks, hard links counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, dirnames, filenames in os.walk(root):
        for name in (None, *dirnames, *filenames):
            st = os.lstat(directory if name is None else os.path.join(directory, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total
