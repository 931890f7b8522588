"""Seeding a sandbox's writable layer from the host never follows a link the sandbox planted:
whatever shape the planted links take, no file outside the layer changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandcastle.agent import layout
from sandcastle.runtime import beneath
from sandcastle.runtime.layers import seed
from sandcastle.runtime.sentry import guard_kills


def host_state(host: Path) -> dict[str, tuple[bytes | str, int, int, int]]:
    """Every entry below ``host``: content (or link target), mode, owner."""
    state: dict[str, tuple[bytes | str, int, int, int]] = {}
    for path in sorted(host.rglob("*")):
        st = path.lstat()
        data: bytes | str = (
            os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else b""
        )
        state[str(path)] = (data, st.st_mode, st.st_uid, st.st_gid)
    return state


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A layer (upper), its template and a 'host' directory the links aim at."""
    upper, template, host = tmp_path / "upper", tmp_path / "template", tmp_path / "host"
    for directory in (upper, template / "tmp", template / "etc", host / "etc"):
        directory.mkdir(parents=True)
    os.chmod(template / "tmp", 0o1777)
    (host / "etc" / "passwd").write_text("root:x:0:0\n")
    return upper, template, host


def planted(upper: Path, host: Path) -> list[tuple[str, Path, str]]:
    """(name, where in the layer, link target) for each shape of planted link."""
    return [
        ("dangling link to a host file", upper / "tmp" / ".sandcastle", str(host / "new-file")),
        ("link to an existing host file", upper / "tmp" / ".sandcastle", str(host / "etc/passwd")),
        ("link to a host directory as a parent", upper / "tmp", str(host)),
        ("relative link climbing out", upper / "tmp" / ".sandcastle", "../../host/etc/passwd"),
        ("link loop", upper / "tmp" / ".sandcastle", ".sandcastle"),
        ("link at a root-owned seed", upper / "etc" / "resolv.conf", str(host / "etc/passwd")),
        ("linked /etc", upper / "etc", str(host / "etc")),
    ]


@pytest.mark.parametrize("case", range(7))
def test_no_host_file_changes_whatever_link_the_sandbox_planted(
    trees: tuple[Path, Path, Path], case: int
) -> None:
    upper, template, host = trees
    name, where, target = planted(upper, host)[case]
    where.parent.mkdir(parents=True, exist_ok=True)
    where.symlink_to(target)
    before = host_state(host)

    seed(upper, template, {"/etc/resolv.conf": "nameserver 10.0.2.3\n"},
         {"/tmp/.sandcastle": "0"})  # fmt: skip

    assert host_state(host) == before, name
    # The seeds are real files in the layer, owned as asked.
    resolv = upper / "etc" / "resolv.conf"
    assert not resolv.is_symlink() and resolv.read_text() == "nameserver 10.0.2.3\n"
    kills = upper / "tmp" / ".sandcastle"
    assert not kills.is_symlink() and not kills.parent.is_symlink()
    assert kills.read_text() == "0"
    assert kills.stat().st_uid == layout.USER_UID


def test_new_parents_take_the_templates_mode_and_an_existing_user_file_is_kept(
    trees: tuple[Path, Path, Path],
) -> None:
    upper, template, _ = trees
    (upper / "etc").mkdir()
    (upper / "etc" / "kept").write_text("the user's")

    seed(upper, template, {}, {"/tmp/.sandcastle": "0", "/etc/kept": "ours"})

    assert (upper / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (upper / "etc" / "kept").read_text() == "the user's"


def test_a_fifo_in_place_of_a_seed_is_replaced_without_blocking(
    trees: tuple[Path, Path, Path],
) -> None:
    upper, _, _ = trees
    (upper / "etc").mkdir()
    os.mkfifo(upper / "etc" / "resolv.conf")

    assert beneath.write_file(
        upper, "/etc/resolv.conf", b"x", mode=0o644, uid=0, gid=0, dir_attrs=lambda _: (0o755, 0, 0)
    )
    assert (upper / "etc" / "resolv.conf").read_bytes() == b"x"


def test_paths_that_climb_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        beneath.write_file(
            tmp_path, "/a/../../x", b"", mode=0o644, uid=0, gid=0, dir_attrs=lambda _: (0o755, 0, 0)
        )


def test_the_guards_kill_count_is_read_without_following_links(tmp_path: Path) -> None:
    upper, host = tmp_path / "upper", tmp_path / "host"
    (upper / "tmp").mkdir(parents=True)
    host.mkdir()
    (host / "count").write_text("7")
    assert guard_kills(upper) == 0
    (upper / "tmp" / ".sandcastle").write_text("2")
    assert guard_kills(upper) == 2
    (upper / "tmp" / ".sandcastle").unlink()
    (upper / "tmp" / ".sandcastle").symlink_to(host / "count")
    assert guard_kills(upper) == 0
    # A link on the way (not only the last component) is not followed either.
    (upper / "tmp" / ".sandcastle").unlink()
    (upper / "tmp").rmdir()
    (host / ".sandcastle").write_text("9")
    (upper / "tmp").symlink_to(host)
    assert guard_kills(upper) == 0
    os.mkfifo(host / "fifo")
    (upper / "tmp").unlink()
    (upper / "tmp").mkdir()
    os.mkfifo(upper / "tmp" / ".sandcastle")
    assert guard_kills(upper) == 0
