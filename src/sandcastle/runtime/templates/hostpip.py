"""What a template build inherits from the host's pip set-up, and which host paths that needs.

The host's pip configuration (every file pip reads, as ``pip config list`` reports it) and its
``PIP_*`` variables reach the build, because on many hosts pip only works with them: a private
index, a wheel directory, a CA bundle, a constraint file. Whatever of them names a host path
(an absolute path or a ``file://`` URL) needs that path inside the build, read-only:
:func:`inspect_host_pip` finds each one before the build starts, and

- drops a path that does not exist (or is not a file or directory) from its setting, with a
  warning naming the option, since pip would otherwise fail on it a minute into the build;
- drops settings that name a place pip *writes* (``cache-dir``, ``log``, ``target``, …), since the
  build must not write to the host;
- follows ``-r``/``-c`` lines of requirement and constraint files to the files they include.

:meth:`HostPipSetup.render` then rewrites the settings for where each path ends up inside the
build (its own path, unless that would hide the template's own file there).
"""

from __future__ import annotations

import ast
import asyncio
import os
import shlex
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

#: Options whose value is a place pip writes to: never given a host path inside the build.
WRITE_OPTIONS = frozenset(
    {"cache-dir", "log", "log-file", "target", "prefix", "root", "src", "build", "download"}
    | {"dest", "wheel-dir", "report"}
)
#: Index options: a ``file://`` index's pages link their files beside the index (PEP 503 pages
#: commonly say ``../../files/…``), so the index's parent directory is what must be visible.
INDEX_OPTIONS = frozenset({"index-url", "extra-index-url", "i"})
#: Options whose tokens are paths even when relative (which is meaningless in a global setting).
PATH_OPTIONS = frozenset({"constraint", "requirement", "cert", "client-cert", "c", "r"})
#: Options that may name a directory, a file or a URL.
LOCATION_OPTIONS = frozenset({"find-links", "f"})
#: ``-r``/``-c`` inside requirement files; deeper than this is a loop or a mistake.
_MAX_INCLUDE_DEPTH = 8
_INCLUDE_FLAGS = ("-r", "-c", "--requirement", "--constraint")
#: Options naming requirement or constraint files, whose ``-r``/``-c`` lines are followed.
_REQUIREMENT_OPTIONS = frozenset({"constraint", "requirement", "c", "r"})


@dataclass(frozen=True)
class HostRef:
    """One host path named in a setting: ``bind`` must be visible inside the build, and the value
    is written back as ``bind``'s inside place followed by ``below``."""

    bind: str
    below: str = ""
    url: bool = False


Token = str | HostRef


@dataclass(frozen=True)
class Setting:
    """A pip setting as the build will get it: a config ``section`` (``None`` for a variable)."""

    section: str | None
    key: str
    tokens: tuple[Token, ...]


@dataclass(frozen=True)
class HostPipSetup:
    """The host's pip settings, reduced to what the build can use, and the host paths they need."""

    settings: tuple[Setting, ...]
    #: Host files a requirement or constraint file includes (``-r``/``-c``), by absolute path.
    includes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def host_paths(self) -> list[str]:
        """The host paths to bind, each once, none below another one of them."""
        wanted = {t.bind for s in self.settings for t in s.tokens if isinstance(t, HostRef)}
        return _outermost(wanted | set(self.includes))

    def render(self, place: Mapping[str, str]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
        """The settings with every host path replaced by its place inside the build.

        ``place`` maps each of :attr:`host_paths` to where it is bound; a path below one of them
        follows it. Returns the configuration (by section) and the ``PIP_*`` variables.
        """
        config: dict[str, dict[str, str]] = {}
        env: dict[str, str] = {}
        for setting in self.settings:
            value = " ".join(_render_token(token, place) for token in setting.tokens)
            if setting.section is None:
                env[setting.key] = value
            else:
                config.setdefault(setting.section, {})[setting.key] = value
        return config, env


def _render_token(token: Token, place: Mapping[str, str]) -> str:
    if isinstance(token, str):
        return token
    inside = inside_place(token.bind, place) + token.below
    return "file://" + quote(inside) if token.url else inside


def inside_place(path: str, place: Mapping[str, str]) -> str:
    """Where host ``path`` is inside the build, given where each bound path went."""
    for bound, inside in place.items():
        if path == bound or path.startswith(bound.rstrip("/") + "/"):
            return inside + path[len(bound) :]
    raise KeyError(f"{path} is not below any bound path")


def _outermost(paths: Iterable[str]) -> list[str]:
    kept: list[str] = []
    for path in sorted(set(paths)):
        if not any(path == parent or path.startswith(parent + "/") for parent in kept):
            kept.append(path)
    return kept


async def inspect_host_pip(environ: Mapping[str, str] | None = None) -> HostPipSetup:
    """Ask pip for the host's effective configuration and plan what the build inherits."""
    environ = os.environ if environ is None else environ
    config, problem = await _pip_config_list(environ)
    env = {
        name: value
        for name, value in environ.items()
        # PIP_CONFIG_FILE names the host file; the build gets its own (its content is `config`).
        if name.startswith("PIP_") and name != "PIP_CONFIG_FILE"
    }
    setup = plan(config, env)
    if problem is not None:
        warning = f"the host's pip configuration files are not inherited: {problem}"
        setup = HostPipSetup(setup.settings, setup.includes, (warning, *setup.warnings))
    return setup


def plan(config: Mapping[str, Mapping[str, str]], env: Mapping[str, str]) -> HostPipSetup:
    """Plan the build's pip settings from the host's ``config`` (by section) and ``PIP_*``
    variables ``env``: which host paths they need, what is dropped and why."""
    warnings: list[str] = []
    settings: list[Setting] = []
    named: list[tuple[str | None, str, str, str]] = [
        (section, option, value, f"[{section}] {option}")
        for section, options in config.items()
        for option, value in options.items()
    ]
    named += [(None, name, value, name) for name, value in env.items()]
    for section, key, value, where in named:
        option = key.removeprefix("PIP_").lower().replace("_", "-")
        setting = _plan_setting(section, key, option, value, where, warnings)
        if setting is not None:
            settings.append(setting)
    includes = _includes(settings, warnings)
    return HostPipSetup(tuple(settings), tuple(includes), tuple(warnings))


def _plan_setting(
    section: str | None, key: str, option: str, value: str, where: str, warnings: list[str]
) -> Setting | None:
    if option in WRITE_OPTIONS:
        warnings.append(f"pip option {where} = {value!r} is ignored: the build never writes there")
        return None
    kept: list[Token] = []
    for token in value.split():
        path = _host_path(token, option)
        if path is None:
            if option in PATH_OPTIONS or (option in LOCATION_OPTIONS and "://" not in token):
                warnings.append(
                    f"pip option {where}: {token!r} is dropped: a relative path has no meaning "
                    "inside the build"
                )
            else:
                kept.append(token)
            continue
        if not (os.path.isfile(path) or os.path.isdir(path)):
            what = "does not exist" if not os.path.lexists(path) else "is not a file or directory"
            warnings.append(f"pip option {where}: {path} is dropped: it {what} on this host")
            continue
        is_url = token.startswith("file:")
        if option in INDEX_OPTIONS and os.path.dirname(path) != "/":
            parent = os.path.dirname(path)
            kept.append(HostRef(parent, path[len(parent) :], url=is_url))
        else:
            kept.append(HostRef(path, url=is_url))
    if not kept:
        return None
    return Setting(section, key, tuple(kept))


def _host_path(token: str, option: str) -> str | None:
    """The absolute host path ``token`` names, or None if it names none."""
    if token.startswith("file:"):
        path = unquote(urlparse(token).path)
    elif token.startswith("~/") and option in PATH_OPTIONS | LOCATION_OPTIONS:
        path = os.path.expanduser(token)
    elif token.startswith("/"):
        path = token
    else:
        return None
    return os.path.normpath(path) if path.startswith("/") else None


def _includes(settings: list[Setting], warnings: list[str]) -> list[str]:
    """Host files included (``-r``/``-c``) by the requirement and constraint files named."""
    roots = [
        token.bind
        for setting in settings
        if setting.key.removeprefix("PIP_").lower().replace("_", "-") in _REQUIREMENT_OPTIONS
        for token in setting.tokens
        if isinstance(token, HostRef) and os.path.isfile(token.bind)
    ]
    found: list[str] = []
    pending = [(root, 0) for root in roots]
    seen = set(roots)
    while pending:
        path, depth = pending.pop()
        for included in _included_by(path):
            if included in seen:
                continue
            seen.add(included)
            if not os.path.isfile(included):
                warnings.append(f"{path} includes {included}, which does not exist on this host")
            elif depth + 1 >= _MAX_INCLUDE_DEPTH:
                warnings.append(f"{path}: includes nested deeper than {_MAX_INCLUDE_DEPTH} levels")
            else:
                found.append(included)
                pending.append((included, depth + 1))
    return found


def _included_by(path: str) -> list[str]:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        for index in range(len(words)):
            target = _include_target(words, index)
            if target and "://" not in target:
                base = os.path.dirname(path)
                found.append(os.path.normpath(os.path.join(base, os.path.expanduser(target))))
    return found


def _include_target(words: list[str], index: int) -> str | None:
    """The file ``words[index]`` includes, if it is ``-r``/``-c`` in any of pip's spellings."""
    word = words[index]
    if word in _INCLUDE_FLAGS:
        return words[index + 1] if index + 1 < len(words) else None
    for flag in _INCLUDE_FLAGS:
        if word.startswith(flag + "="):
            return word[len(flag) + 1 :]
    if word[:2] in ("-r", "-c") and not word.startswith("--"):
        return word[2:]
    return None


async def _pip_config_list(
    environ: Mapping[str, str],
) -> tuple[dict[str, dict[str, str]], str | None]:
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
            env=dict(environ),
        )
        out, err = await process.communicate()
    except OSError as exc:
        return {}, str(exc)
    if process.returncode != 0:
        return {}, err.decode(errors="replace").strip() or f"pip exited {process.returncode}"
    return parse_pip_config_list(out.decode(errors="replace")), None


def parse_pip_config_list(text: str) -> dict[str, dict[str, str]]:
    """Parse ``pip config list`` lines (``section.key='value'``); ``:env:`` entries are skipped
    because the builder takes the ``PIP_*`` variables from the environment itself."""
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
