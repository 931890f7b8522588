"""The build sandbox: run a recipe step inside a rootfs with the host's network and pip setup,
and read debootstrap's progress."""

from __future__ import annotations

import configparser
import contextlib
import os
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sandcastle.runtime.templates.hostpip import HostPipSetup
from sandcastle.runtime.templates.recipes import Run
from sandcastle.runtime.templates.rootfs import first_missing, resolve_inside

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: Host files are bound inside the build sandbox's private /tmp, so none is left in the template.
_BUILD_SHARE = "/tmp/.sandcastle-build"
_INNER_CA = f"{_BUILD_SHARE}/ca-certificates.crt"
_INNER_PIP_CONF = f"{_BUILD_SHARE}/pip.conf"
BUILD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


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


@dataclass(frozen=True)
class Command:
    """How a step's program is started: ``argv`` with exactly ``env``, after joining the
    cgroups whose ``cgroup.procs`` files are ``procs_files`` (none: the builder's own).
    ``shown`` is what the build's log says was run: the step's own command, never the host's
    (a tenant reads the log, and ``argv`` names host paths)."""

    argv: list[str]
    env: dict[str, str]
    procs_files: tuple[str, ...] = ()
    shown: tuple[str, ...] = ()


@dataclass
class BuildSandbox:
    """How :class:`Run` steps execute: bubblewrap over the rootfs, with the host's pip setup.

    Host paths that the pip settings name (:class:`HostPipSetup`) are bound read-only at the same
    path, since settings and the files they name (an index's pages, a constraint file's ``-r``
    lines) refer to them by that path; a path whose place in the rootfs is taken (or reached
    through a link) is bound under the build's private ``/tmp`` instead, and the settings naming
    it are rewritten. Mount points bwrap creates in the rootfs are removed by :meth:`tidy`.
    """

    rootfs: Path
    pip_conf: Path | None
    forwarded_env: dict[str, str]
    #: (host path, inside path) pairs, bound read-only.
    binds: list[tuple[str, str]] = field(default_factory=list)
    mount_points: list[Path] = field(default_factory=list)
    #: The host's CA bundle, trusted inside (a proxy's own CA is commonly added to it).
    ca_bundle: Path | None = None
    #: The host's pip settings name a CA bundle of their own (else pip gets ``ca_bundle``).
    pip_names_cert: bool = False

    @classmethod
    def prepare(cls, rootfs: Path, build_dir: Path, setup: HostPipSetup) -> BuildSandbox:
        place = {path: _inside_place(rootfs, path) for path in setup.host_paths}
        config, pip_env = setup.render(place)
        pip_conf: Path | None = None
        if config:
            pip_conf = build_dir / "pip.conf"
            # The host config may hold index credentials: private, and deleted by tidy().
            with open(os.open(pip_conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                _config_parser(config).write(f)
        sandbox = cls(
            rootfs,
            pip_conf,
            pip_env | pick(os.environ, PROXY_VARS),
            ca_bundle=_host_ca(),
            pip_names_cert=any(
                s.key.removeprefix("PIP_").lower() == "cert" for s in setup.settings
            ),
        )
        for host, inside in place.items():
            sandbox.binds.append((host, inside))
            if inside == host:
                sandbox.mount_points.append(first_missing(rootfs, inside))
        return sandbox

    def env(self, step: Run) -> dict[str, str]:
        env = {"PATH": BUILD_PATH, "HOME": "/root", "LANG": "C.UTF-8", **self.forwarded_env}
        if self.ca_bundle is not None:
            env["SSL_CERT_FILE"] = _INNER_CA
            if not self.pip_names_cert:
                env["PIP_CERT"] = _INNER_CA
        if self.pip_conf is not None:
            env["PIP_CONFIG_FILE"] = _INNER_PIP_CONF
        return env | dict(step.env)

    def read_only_files(self) -> list[tuple[str, str]]:
        """(host path, inside path) of everything the build is given of the host, read-only:
        the CA bundle, the pip settings and the files they name."""
        files = [(str(self.ca_bundle), _INNER_CA)] if self.ca_bundle is not None else []
        if self.pip_conf is not None:
            files.append((str(self.pip_conf), _INNER_PIP_CONF))
        return files + self.binds

    @contextlib.asynccontextmanager
    async def command(self, step: Run) -> AsyncIterator[Command]:
        """``step`` under bubblewrap as the host's root, with the host's network: for the
        steps of our own recipes only (untrusted ones run in ``isolated.py``)."""
        yield Command(self.argv(step), self.env(step), shown=step.argv)

    def argv(self, step: Run) -> list[str]:
        argv = ["bwrap", "--bind", str(self.rootfs), "/", "--dev", "/dev", "--proc", "/proc"]
        argv += ["--perms", "1777", "--tmpfs", "/tmp"]
        argv += ["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]
        for host, inside in self.read_only_files():
            argv += ["--ro-bind", host, inside]
        argv += ["--share-net", "--unshare-pid", "--unshare-ipc", "--die-with-parent"]
        argv += ["--new-session", "--chdir", step.cwd, "--"]
        if (step.uid, step.gid) != (0, 0):
            # Not bwrap --unshare-user --uid: run by root, that maps the sandbox uid to real root,
            # so files would be created root-owned and the user's own home would be read-only.
            argv += ["setpriv", f"--reuid={step.uid}", f"--regid={step.gid}", "--clear-groups"]
            argv += ["--"]
        return argv + list(step.argv)

    def tidy_copy(self, copy: Path) -> None:
        """Remove from ``copy``, a copy of the rootfs made mid-build, the mount points bwrap
        made in the rootfs (:meth:`tidy` removes them from the rootfs itself)."""
        for top in self.mount_points:
            _remove_mount_points(copy / top.relative_to(self.rootfs))

    def tidy(self) -> None:
        if self.pip_conf is not None:
            self.pip_conf.unlink(missing_ok=True)
        for top in self.mount_points:
            _remove_mount_points(top)


def _inside_place(rootfs: Path, path: str) -> str:
    """Where host ``path`` is bound in the build: its own path if nothing of the template is
    there and no link leads there, else a place of its own in the build's private /tmp."""
    own = rootfs.joinpath(path.lstrip("/"))
    if resolve_inside(rootfs, path) == own and not os.path.lexists(own):
        return path
    return f"{_BUILD_SHARE}/host{path}"


def _host_ca() -> Path | None:
    for candidate in (os.environ.get("SSL_CERT_FILE"), str(HOST_CA_BUNDLE)):
        if candidate and os.path.isfile(candidate):
            return Path(candidate)
    return None


def _remove_mount_points(top: Path) -> None:
    """Remove what bwrap created as mount points below ``top``: empty files and directories.
    Nothing is followed: ``top`` did not exist before the build, so a link there is the
    build's own and is left alone."""
    if top.is_symlink() or not top.exists():
        return
    if not top.is_dir():
        if top.stat().st_size == 0:
            top.unlink()
        return
    for directory, _, files in os.walk(top, topdown=False):
        for name in files:
            entry = Path(directory, name)
            with contextlib.suppress(OSError):
                if not entry.is_symlink() and entry.stat().st_size == 0:
                    entry.unlink()
        with contextlib.suppress(OSError):
            os.rmdir(directory)


def _config_parser(config: Mapping[str, Mapping[str, str]]) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict(config)
    return parser


def pick(source: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    return {name: source[name] for name in names if name in source}
