"""The subset of the Dockerfile language a template is written in, parsed into instructions.

Supported: ``FROM``, ``RUN`` (shell and exec form), ``ENV``, ``ARG``, ``WORKDIR``, ``COPY`` and
``ADD`` of files from the build context (``--chown`` only), ``USER``, ``LABEL``; comments, line
continuations and the ``syntax`` directive. Anything else — another instruction, a flag, a
second stage, a URL — is a :class:`DockerfileError` naming the line, never silently ignored:
a template that builds must mean what its Dockerfile says.

Parsing only reads the text; variables (``$NAME``, ``${NAME}``, ``${NAME:-default}``,
``${NAME:+alternative}``) are expanded by :func:`expand` as the build walks the instructions,
since their values depend on the ``ARG`` and ``ENV`` lines before each use.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass

from sandcastle.errors import InvalidRequestError

MAX_DOCKERFILE_BYTES = 256 * 1024
MAX_INSTRUCTIONS = 500


class DockerfileError(InvalidRequestError):
    """A Dockerfile this server cannot build; the message names the line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"Dockerfile line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class From:
    line: int
    image: str


@dataclass(frozen=True)
class Run:
    line: int
    #: The exec form's argv, or None for the shell form.
    argv: tuple[str, ...] | None
    #: The shell form's command line (run with ``/bin/sh -c``), or None for the exec form.
    shell: str | None


@dataclass(frozen=True)
class Env:
    line: int
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Arg:
    line: int
    name: str
    default: str | None


@dataclass(frozen=True)
class Workdir:
    line: int
    path: str


@dataclass(frozen=True)
class Copy:
    line: int
    sources: tuple[str, ...]
    dest: str
    chown: str | None
    #: ADD rather than COPY (the same here: no URLs, no archive extraction).
    add: bool


@dataclass(frozen=True)
class User:
    line: int
    user: str


@dataclass(frozen=True)
class Label:
    line: int
    pairs: tuple[tuple[str, str], ...]


Instruction = From | Run | Env | Arg | Workdir | Copy | User | Label

_UNSUPPORTED = {
    "CMD": "a sandbox runs its own agent, not a command of the image",
    "ENTRYPOINT": "a sandbox runs its own agent, not a command of the image",
    "EXPOSE": "a sandbox's ports are reached through its host, not published",
    "VOLUME": "a sandbox's files are its own writable layer",
    "HEALTHCHECK": "the server watches its sandboxes itself",
    "SHELL": "RUN's shell form always uses /bin/sh -c",
    "STOPSIGNAL": "the server ends its sandboxes itself",
    "ONBUILD": "templates are not built upon by triggers",
    "MAINTAINER": "use LABEL maintainer=…",
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VARIABLE = re.compile(
    r"\\\$|\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


def parse(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile; raises :class:`DockerfileError` at the first problem."""
    if len(text.encode()) > MAX_DOCKERFILE_BYTES:
        raise DockerfileError(1, f"the Dockerfile is over {MAX_DOCKERFILE_BYTES} bytes")
    instructions = [_instruction(number, line) for number, line in _logical_lines(text)]
    if not instructions:
        raise DockerfileError(1, "the Dockerfile has no instructions")
    if len(instructions) > MAX_INSTRUCTIONS:
        raise DockerfileError(instructions[MAX_INSTRUCTIONS].line, "too many instructions")
    froms = [i for i in instructions if isinstance(i, From)]
    if not froms:
        raise DockerfileError(instructions[0].line, "no FROM: a template starts from an image")
    if len(froms) > 1:
        raise DockerfileError(froms[1].line, "multi-stage builds are not supported (one FROM)")
    before = [i for i in instructions[: instructions.index(froms[0])] if not isinstance(i, Arg)]
    if before:
        raise DockerfileError(before[0].line, "only ARG may come before FROM")
    return instructions


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(number of its first line, text) of each instruction, continuations joined, comments
    and blank lines dropped."""
    found: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and stripped.startswith("#"):
            directive = re.match(r"#\s*escape\s*=\s*(\S+)", stripped, re.IGNORECASE)
            if directive and directive.group(1) != "\\" and not found:
                raise DockerfileError(number, "only the default escape character (\\) is supported")
            continue
        if pending and (not stripped or stripped.startswith("#")):
            continue  # comments and blank lines inside a continuation are skipped, as Docker does
        if not stripped:
            continue
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        pending.append(raw)
        found.append((start, " ".join(part.strip() for part in pending)))
        pending = []
    if pending:
        found.append((start, " ".join(part.strip() for part in pending)))
    return found


def _instruction(line: int, text: str) -> Instruction:
    keyword, _, rest = text.partition(" ")
    keyword, rest = keyword.upper(), rest.strip()
    if keyword in _UNSUPPORTED:
        raise DockerfileError(line, f"{keyword} is not supported: {_UNSUPPORTED[keyword]}")
    if not rest:
        raise DockerfileError(line, f"{keyword} needs arguments")
    if keyword == "FROM":
        return _from(line, rest)
    if keyword == "RUN":
        _no_flags(line, keyword, rest)
        argv = _exec_form(line, rest)
        return Run(line, argv, None) if argv is not None else Run(line, None, rest)
    if keyword == "ENV":
        return Env(line, _pairs(line, rest, legacy=True))
    if keyword == "ARG":
        name, eq, default = rest.partition("=")
        if not _NAME.match(name) or " " in rest.split("=")[0]:
            raise DockerfileError(line, f"ARG needs one name, not {rest!r}")
        return Arg(line, name, _unquote(line, default) if eq else None)
    if keyword == "WORKDIR":
        return Workdir(line, rest)
    if keyword in ("COPY", "ADD"):
        return _copy(line, keyword, rest)
    if keyword == "USER":
        return User(line, rest)
    if keyword == "LABEL":
        return Label(line, _pairs(line, rest, legacy=False))
    raise DockerfileError(line, f"unknown instruction {keyword}")


def _from(line: int, rest: str) -> From:
    _no_flags(line, "FROM", rest)
    words = rest.split()
    if len(words) == 3 and words[1].upper() == "AS":
        raise DockerfileError(line, "multi-stage builds are not supported (FROM … AS …)")
    if len(words) != 1:
        raise DockerfileError(line, f"FROM takes one image, not {rest!r}")
    return From(line, words[0])


def _copy(line: int, keyword: str, rest: str) -> Copy:
    chown = None
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        name, _, value = flag[2:].partition("=")
        if name != "chown" or not value:
            raise DockerfileError(line, f"{keyword} {flag.split('=')[0]} is not supported")
        chown, rest = value, rest.strip()
    words = _exec_form(line, rest)
    if words is None:
        try:
            words = tuple(shlex.split(rest))
        except ValueError as exc:
            raise DockerfileError(line, f"{keyword}: {exc}") from None
    if len(words) < 2:
        raise DockerfileError(line, f"{keyword} needs a source and a destination")
    for source in words[:-1]:
        if re.match(r"^[a-z][a-z0-9+.-]*://", source, re.IGNORECASE):
            raise DockerfileError(line, f"{keyword} of a URL is not supported: {source}")
    return Copy(line, tuple(words[:-1]), words[-1], chown, keyword == "ADD")


def _no_flags(line: int, keyword: str, rest: str) -> None:
    if rest.startswith("--"):
        flag = rest.split()[0].split("=")[0]
        raise DockerfileError(line, f"{keyword} {flag} is not supported")


def _exec_form(line: int, rest: str) -> tuple[str, ...] | None:
    """The JSON array of an exec form, or None when ``rest`` is not one."""
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None  # Docker too runs what is not valid JSON as the shell form
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise DockerfileError(line, "the exec form is a JSON array of strings")
    return tuple(value)


def _pairs(line: int, rest: str, *, legacy: bool) -> tuple[tuple[str, str], ...]:
    """``key=value`` pairs (values may be quoted), or the legacy ``ENV key value`` form."""
    first = rest.split(None, 1)
    if legacy and "=" not in first[0]:
        if len(first) != 2:
            raise DockerfileError(line, f"ENV {first[0]} needs a value")
        return ((_checked_name(line, first[0]), first[1]),)
    try:
        words = shlex.split(rest, posix=True)
    except ValueError as exc:
        raise DockerfileError(line, str(exc)) from None
    pairs = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq:
            raise DockerfileError(line, f"expected key=value, not {word!r}")
        pairs.append((_checked_name(line, key) if legacy else key, value))
    return tuple(pairs)


def _checked_name(line: int, name: str) -> str:
    if not _NAME.match(name):
        raise DockerfileError(line, f"{name!r} is not a variable name")
    return name


def _unquote(line: int, value: str) -> str:
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise DockerfileError(line, str(exc)) from None
    return " ".join(words)


def expand(text: str, variables: dict[str, str]) -> str:
    """``text`` with ``$NAME``, ``${NAME}``, ``${NAME:-default}`` and ``${NAME:+alternative}``
    replaced from ``variables`` (an unset name is empty); ``\\$`` is a literal ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "\\$":
            return "$"
        name = match.group(1) or match.group(4)
        value = variables.get(name, "")
        if match.group(2) == ":-":
            return value or match.group(3)
        if match.group(2) == ":+":
            return match.group(3) if value else ""
        return value

    return _VARIABLE.sub(replace, text)
