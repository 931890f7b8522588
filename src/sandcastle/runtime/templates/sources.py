"""Find the Debian mirror the host's apt already uses, so template builds never hard-code one.

apt reads two formats: deb822 stanzas in ``sources.list.d/*.sources`` and one-line
``deb [opts] URI suite components...`` entries in ``sources.list`` and ``sources.list.d/*.list``.
We look for a binary (``deb``) source carrying ``main`` for exactly the wanted suite; suites such
as ``bookworm-security`` or third-party repositories (nodesource, google cloud) are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
APT_SOURCES_LIST = Path("/etc/apt/sources.list")

# debootstrap can fetch only over these; apt-only transports (mirror+, tor+, cdrom:) are skipped.
_FETCHABLE_SCHEMES = ("http://", "https://", "ftp://", "file://")


class MirrorNotFoundError(Exception):
    """No apt source on the host names a usable mirror for the suite."""


def find_mirror(
    suite: str,
    *,
    component: str = "main",
    sources_dir: Path = APT_SOURCES_DIR,
    sources_list: Path = APT_SOURCES_LIST,
) -> str:
    """Return the URI of the first host apt source serving ``suite`` with ``component``.

    deb822 ``*.sources`` files win over one-line entries, in the alphanumeric order apt reads them.
    Raises :class:`MirrorNotFoundError` naming the files searched when nothing matches.
    """
    deb822_files = sorted(sources_dir.glob("*.sources"))
    one_line_files = [sources_list, *sorted(sources_dir.glob("*.list"))]
    for path in deb822_files:
        for uri in _deb822_uris(_read(path), suite, component):
            return uri
    for path in one_line_files:
        for uri in _one_line_uris(_read(path), suite, component):
            return uri
    searched = ", ".join(str(p) for p in [*deb822_files, *one_line_files]) or "(no files)"
    raise MirrorNotFoundError(
        f"no apt source for suite {suite!r} with component {component!r} found in: {searched}"
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return ""


def _fetchable(uri: str) -> bool:
    return uri.startswith(_FETCHABLE_SCHEMES)


def parse_deb822(text: str) -> list[dict[str, str]]:
    """Split deb822 text into stanzas of ``{field (lower-cased): value}``.

    Continuation lines (leading whitespace) are joined with a space; ``#`` lines are comments.
    """
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last_key: str | None = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, last_key = {}, None
            continue
        if raw[0] in " \t":
            if last_key is not None:
                current[last_key] = f"{current[last_key]} {raw.strip()}".strip()
            continue
        key, sep, value = raw.partition(":")
        if not sep:
            continue
        last_key = key.strip().lower()
        current[last_key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def _deb822_uris(text: str, suite: str, component: str) -> Iterator[str]:
    for stanza in parse_deb822(text):
        if stanza.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in stanza.get("types", "").split():
            continue
        if suite not in stanza.get("suites", "").split():
            continue
        if component not in stanza.get("components", "").split():
            continue
        yield from (uri for uri in stanza.get("uris", "").split() if _fetchable(uri))


def _one_line_uris(text: str, suite: str, component: str) -> Iterator[str]:
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        words = line.split()
        if not words or words[0] != "deb":
            continue
        rest = line[len("deb") :].strip()
        if rest.startswith("["):
            # Options may contain spaces ("[ arch=amd64 signed-by=... ]"); skip to the bracket.
            _, bracket, rest = rest.partition("]")
            if not bracket:
                continue
        fields = rest.split()
        if len(fields) < 3:
            continue
        uri, entry_suite, components = fields[0], fields[1], fields[2:]
        if entry_suite == suite and component in components and _fetchable(uri):
            yield uri
