"""Finding the Debian mirror in the host's apt sources (deb822 first, then one-line entries)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandcastle.runtime.templates.sources import MirrorNotFoundError, find_mirror, parse_deb822

# What this host has: the main mirror with bookworm and bookworm-updates, and security apart.
DEBIAN_SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

NODESOURCE = """\
Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
Signed-By: /usr/share/keyrings/nodesource.gpg
"""

GOOGLE_CLOUD_LIST = (
    "deb [signed-by=/usr/share/keyrings/cloud.google.gpg] "
    "https://packages.cloud.google.com/apt cloud-sdk main\n"
)


@pytest.fixture
def apt(tmp_path: Path) -> tuple[Path, Path]:
    sources_dir = tmp_path / "sources.list.d"
    sources_dir.mkdir()
    return sources_dir, tmp_path / "sources.list"


def mirror(apt: tuple[Path, Path], suite: str = "bookworm") -> str:
    sources_dir, sources_list = apt
    return find_mirror(suite, sources_dir=sources_dir, sources_list=sources_list)


def test_deb822_main_mirror_is_found_among_other_repositories(apt: tuple[Path, Path]) -> None:
    sources_dir, _ = apt
    # Third-party files sort before "debian.sources" on purpose: they must be skipped, not chosen.
    (sources_dir / "aaa-nodesource.sources").write_text(NODESOURCE)
    (sources_dir / "debian.sources").write_text(DEBIAN_SOURCES)
    (sources_dir / "google-cloud-sdk.list").write_text(GOOGLE_CLOUD_LIST)
    assert mirror(apt) == "http://deb.debian.org/debian"


def test_suite_match_is_exact_not_a_prefix(apt: tuple[Path, Path]) -> None:
    sources_dir, _ = apt
    security_only = DEBIAN_SOURCES.split("\n\n")[1]
    (sources_dir / "debian.sources").write_text(security_only)
    with pytest.raises(MirrorNotFoundError, match="bookworm"):
        mirror(apt)
    assert mirror(apt, "bookworm-security") == "http://deb.debian.org/debian-security"


def test_disabled_source_only_and_non_main_stanzas_are_skipped(apt: tuple[Path, Path]) -> None:
    sources_dir, _ = apt
    (sources_dir / "a.sources").write_text(
        "Types: deb\nURIs: http://disabled.example/debian\nSuites: bookworm\n"
        "Components: main\nEnabled: no\n\n"
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\nComponents: main\n\n"
        "Types: deb\nURIs: http://contrib.example/debian\nSuites: bookworm\nComponents: contrib\n\n"
        "Types: deb deb-src\nURIs: http://good.example/debian\nSuites: bookworm\n"
        "Components: main contrib\n"
    )
    assert mirror(apt) == "http://good.example/debian"


def test_transports_debootstrap_cannot_use_are_skipped(apt: tuple[Path, Path]) -> None:
    sources_dir, _ = apt
    (sources_dir / "a.sources").write_text(
        "Types: deb\nURIs: mirror+file:///etc/apt/mirrors.txt https://m.example/debian\n"
        "Suites: bookworm\nComponents: main\n"
    )
    assert mirror(apt) == "https://m.example/debian"


def test_deb822_continuation_lines_and_comments() -> None:
    stanzas = parse_deb822(
        "# header comment\nTypes: deb\nURIs: http://a.example/debian\n http://b.example/debian\n"
        "Suites: bookworm\nComponents: main\n\n\n"
    )
    assert stanzas == [
        {
            "types": "deb",
            "uris": "http://a.example/debian http://b.example/debian",
            "suites": "bookworm",
            "components": "main",
        }
    ]


def test_deb822_wins_over_one_line_entries(apt: tuple[Path, Path]) -> None:
    sources_dir, sources_list = apt
    sources_list.write_text("deb http://oneline.example/debian bookworm main\n")
    (sources_dir / "debian.sources").write_text(DEBIAN_SOURCES)
    assert mirror(apt) == "http://deb.debian.org/debian"


def test_one_line_fallback_with_options_and_comments(apt: tuple[Path, Path]) -> None:
    _, sources_list = apt
    sources_list.write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb http://security.debian.org/debian-security bookworm-security main\n"
        "deb [ arch=amd64 signed-by=/usr/share/keyrings/k.gpg ] http://ftp.example/debian "
        "bookworm main non-free-firmware # trailing comment\n"
    )
    assert mirror(apt) == "http://ftp.example/debian"


def test_one_line_entries_in_sources_list_d(apt: tuple[Path, Path]) -> None:
    sources_dir, _ = apt
    (sources_dir / "google-cloud-sdk.list").write_text(GOOGLE_CLOUD_LIST)
    (sources_dir / "mirror.list").write_text("deb http://list.example/debian bookworm main\n")
    assert mirror(apt) == "http://list.example/debian"


def test_nothing_configured_raises_a_clear_error(apt: tuple[Path, Path]) -> None:
    sources_dir, _ = apt
    (sources_dir / "nodesource.sources").write_text(NODESOURCE)
    with pytest.raises(MirrorNotFoundError) as info:
        mirror(apt)
    message = str(info.value)
    assert "'bookworm'" in message and "nodesource.sources" in message


def test_missing_files_and_directories_are_not_errors(tmp_path: Path) -> None:
    with pytest.raises(MirrorNotFoundError):
        find_mirror(
            "bookworm", sources_dir=tmp_path / "absent", sources_list=tmp_path / "absent.list"
        )
