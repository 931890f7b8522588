"""The build sandbox: run a recipe step inside a rootfs with the host's network and pip setup,
and read debootstrap's progress."""

from __future__ import annotations

import ast
import asyncio
import configparser
import contextlib
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from sandcastle.runtime.templates.recipes import Run
from sandcastle.runtime.templates.rootfs import first_missing, resolve_inside

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: Host files are bound inside the build sandbox's private /tmp, so none is left in the template.
_BUILD_SHARE = "/tmp/.sandcastle-build"
_INNER_CA = f"{_BUILD_SHARE}/ca-certificates.crt"
_INNER_PIP_CONF = f"{_BUILD_SHARE}/pip.conf"
BUILD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
#: Set by the builder itself (pointing inside the sandbox), so the host's values are not forwarded.
_OWN_PIP_VARS = ("PIP_CERT", "PIP_CONFIG_FILE")


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
class BuildSandbox:
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
    ) -> BuildSandbox:
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
        sandbox = cls(rootfs, pip_conf, forwarded | pick(os.environ, PROXY_VARS))
        for directory in referenced_dirs(config, forwarded):
            inside = resolve_inside(rootfs, directory)
            if os.path.lexists(inside):
                log(f"warning: not binding {directory}: it would hide the template's own\n")
                continue
            sandbox.binds.append(directory)
            sandbox.mount_points.append(first_missing(rootfs, directory))
        return sandbox

    def env(self, step: Run) -> dict[str, str]:
        env = {"PATH": BUILD_PATH, "HOME": "/root", "LANG": "C.UTF-8", **self.forwarded_env}
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


def pick(source: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    return {name: source[name] for name in names if name in source}
