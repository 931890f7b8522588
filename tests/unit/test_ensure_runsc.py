"""``scripts/ensure-runsc`` in dry-run mode against temporary apt sources and fake runsc binaries.

Nothing is installed: ``ENSURE_RUNSC_DRY_RUN=1`` prints what would be written and run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure-runsc"

DEB822 = """\
Types: deb
# a comment kept with the stanza
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""

SECURITY_FIRST = """\
Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://mirror.example/debian
Suites:
 bookworm
 bookworm-updates
Components: main
"""

BOOKWORM = "ID=debian\nVERSION_CODENAME=bookworm\n"


@pytest.fixture
def apt(tmp_path: Path) -> Path:
    (tmp_path / "apt").mkdir()
    return tmp_path / "apt"


def fake_runsc(tmp_path: Path, version: str, flags: str) -> Path:
    path = tmp_path / "runsc"
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = --version ]; then echo "runsc version {version}"; echo "spec: 1.0.2"; fi\n'
        f'if [ "$1" = flags ]; then echo "  -platform string"; echo "    {flags}"; fi\n'
    )
    path.chmod(0o755)
    return path


def ensure(
    tmp_path: Path,
    apt: Path,
    *,
    runsc: str | Path = "/nonexistent/runsc",
    sources_list: str | None = None,
    os_release: str = BOOKWORM,
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "os-release").write_text(os_release)
    if sources_list is not None:
        (tmp_path / "sources.list").write_text(sources_list)
    env = {
        **os.environ,
        "SANDCASTLE_RUNSC_PATH": str(runsc),
        "ENSURE_RUNSC_DRY_RUN": "1",
        "ENSURE_RUNSC_APT_DIR": str(apt),
        "ENSURE_RUNSC_SOURCES_LIST": str(tmp_path / "sources.list"),
        "ENSURE_RUNSC_OS_RELEASE": str(tmp_path / "os-release"),
    }
    return subprocess.run(
        [str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def written(result: subprocess.CompletedProcess[str]) -> str:
    """The stanza the script would write."""
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("would write ")) + 1
    end = next(i for i, line in enumerate(lines) if line.startswith("would run: "))
    return "\n".join(lines[start:end]) + "\n"


def test_a_good_runsc_is_left_alone_quietly(tmp_path: Path, apt: Path) -> None:
    runsc = fake_runsc(tmp_path, "0.0~20240729.0", "systrap (default), ptrace, kvm")
    result = ensure(tmp_path, apt, runsc=runsc)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_copies_the_bookworm_stanza_with_only_the_suite_changed(tmp_path: Path, apt: Path) -> None:
    (apt / "debian.sources").write_text(DEB822)
    result = ensure(tmp_path, apt)
    assert result.returncode == 0, result.stderr
    assert "is not installed" in result.stdout
    assert (
        written(result)
        == DEB822.split("\n\n")[0].replace(
            "Suites: bookworm bookworm-updates", "Suites: bookworm-backports"
        )
        + "\n"
    )
    assert result.stdout.splitlines()[-2:] == [
        "would run: apt-get update",
        "would run: env DEBIAN_FRONTEND=noninteractive apt-get install -y"
        " -t bookworm-backports runsc",
    ]
    assert sorted(p.name for p in apt.iterdir()) == ["debian.sources"]  # dry run: no write


def test_skips_a_security_stanza_and_multi_line_suites(tmp_path: Path, apt: Path) -> None:
    (apt / "debian.sources").write_text(SECURITY_FIRST)
    result = ensure(tmp_path, apt)
    assert result.returncode == 0, result.stderr
    assert written(result) == (
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm-backports\n"
        "Components: main\n"
    )


def test_derives_the_mirror_from_a_classic_sources_list(tmp_path: Path, apt: Path) -> None:
    result = ensure(
        tmp_path,
        apt,
        sources_list=(
            "# deb http://commented.example/debian bookworm main\n"
            "deb [arch=amd64 signed-by=/k.gpg] http://security.example/ bookworm-security main\n"
            "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
        ),
    )
    assert result.returncode == 0, result.stderr
    assert written(result) == (
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm-backports\n"
        "Components: main\nSigned-By: /k.gpg\n"
    )


@pytest.mark.parametrize(
    "existing",
    [
        ("sandcastle-backports.sources", "Types: deb\n"),
        ("other.sources", "URIs: http://m/debian\nSuites: bookworm-backports\n"),
        ("other.list", "deb http://m/debian bookworm-backports main\n"),
    ],
)
def test_existing_backports_are_not_added_twice(
    tmp_path: Path, apt: Path, existing: tuple[str, str]
) -> None:
    (apt / "debian.sources").write_text(DEB822)
    (apt / existing[0]).write_text(existing[1])
    result = ensure(tmp_path, apt)
    assert result.returncode == 0, result.stderr
    assert "would write" not in result.stdout
    assert "would run: apt-get update" in result.stdout


@pytest.mark.parametrize(
    ("version", "flags", "problem"),
    [
        ("0.0~20230101.0", "systrap (default), ptrace, kvm", "is too old"),
        ("release-20240729.0", "ptrace (default), kvm", "has no systrap platform"),
    ],
)
def test_an_old_runsc_is_replaced(
    tmp_path: Path, apt: Path, version: str, flags: str, problem: str
) -> None:
    (apt / "debian.sources").write_text(DEB822)
    result = ensure(tmp_path, apt, runsc=fake_runsc(tmp_path, version, flags))
    assert result.returncode == 0, result.stderr
    assert problem in result.stdout and "would run: apt-get update" in result.stdout


def test_no_mirror_to_copy_is_a_clear_error(tmp_path: Path, apt: Path) -> None:
    result = ensure(tmp_path, apt)
    assert result.returncode == 1
    assert "cannot find the Debian mirror" in result.stderr


def test_later_debian_installs_from_its_main_archive(tmp_path: Path, apt: Path) -> None:
    result = ensure(tmp_path, apt, os_release="ID=debian\nVERSION_CODENAME=trixie\n")
    assert result.returncode == 0, result.stderr
    assert "would write" not in result.stdout
    assert result.stdout.splitlines()[-1] == (
        "would run: env DEBIAN_FRONTEND=noninteractive apt-get install -y runsc"
    )


def test_other_systems_get_a_clear_error(tmp_path: Path, apt: Path) -> None:
    result = ensure(tmp_path, apt, os_release="ID=fedora\n")
    assert result.returncode == 1
    assert "this is not Debian (fedora)" in result.stderr
    assert "gvisor.dev" in result.stderr
