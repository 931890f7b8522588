"""``sandcastle.agent.paths``: what a path names and what it may not touch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandcastle.agent.channel import RequestFailed
from sandcastle.agent.paths import PathRules, check_not_ancestor


def code_of(call: object) -> str:
    assert callable(call)
    with pytest.raises(RequestFailed) as caught:
        call()
    return caught.value.code


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("notes.txt", "/home/user/notes.txt"),
        ("a/./b//c/", "/home/user/a/b/c"),
        ("../other", "/home/other"),
        ("../..", "/"),
        ("/tmp/../etc", "/etc"),
        ("/", "/"),
    ],
)
def test_lexical_normalises_against_the_home(raw: str, expected: str) -> None:
    assert PathRules("/home/user").lexical(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        None,
        17,
        "a\x00b",
        "../../..",
        "/../x",
        "x" * 256,
        "é" * 128,  # 256 bytes
        "a/" * 2048 + "b",
    ],
)
def test_lexical_refuses_malformed_paths(raw: object) -> None:
    assert code_of(lambda: PathRules("/home/user").lexical(raw)) == "invalid_path"


def test_components_up_to_255_bytes_and_paths_up_to_4096_bytes_are_fine() -> None:
    rules = PathRules("/home/user")
    assert rules.lexical("x" * 255).endswith("x" * 255)
    assert len(rules.lexical("/" + "a/" * 2046 + "bc")) == 4095


@pytest.mark.parametrize(
    "raw",
    [
        "/run/sandcastle",
        "/run/sandcastle/agent.sock",
        "/opt/sandcastle/app",
        "/proc/1/root/etc",
        "/sys",
        "/dev/shm/x",
        "../../run/sandcastle/x",
    ],
)
def test_forbidden_roots(raw: str) -> None:
    rules = PathRules("/home/user")
    assert code_of(lambda: rules.resolve(raw, follow=False)) == "forbidden_path"


def test_neighbours_of_forbidden_roots_are_fine() -> None:
    rules = PathRules("/home/user")
    assert rules.lexical("/run/sandcastlex") == "/run/sandcastlex"
    assert rules.resolve("/run", follow=True) == "/run"
    assert rules.resolve("/devices", follow=False) == "/devices"


@pytest.mark.parametrize("target", ["/proc/1/root/etc", "/run/sandcastle", "/dev", "/proc/self"])
def test_symlinks_through_forbidden_roots_are_refused(tmp_path: Path, target: str) -> None:
    os.symlink(target, tmp_path / "trap")
    rules = PathRules(str(tmp_path))
    for raw in ("trap/passwd", "trap/x/y"):
        assert code_of(lambda raw=raw: rules.resolve(raw, follow=False)) == "forbidden_path"
    assert code_of(lambda: rules.resolve("trap", follow=True)) == "forbidden_path"
    # The link itself, not followed, is an ordinary name in the home.
    assert rules.resolve("trap", follow=False) == str(tmp_path / "trap")


def test_chains_of_relative_symlinks_resolve(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_text("x")
    os.symlink("real", tmp_path / "one")
    os.symlink("one/../one", tmp_path / "two")
    rules = PathRules(str(tmp_path))
    assert rules.resolve("two/f", follow=True) == str(tmp_path / "real" / "f")
    assert rules.resolve("two/missing/deeper", follow=True) == str(tmp_path / "real/missing/deeper")


def test_symlink_loops_are_invalid(tmp_path: Path) -> None:
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    rules = PathRules(str(tmp_path))
    assert code_of(lambda: rules.resolve("a", follow=True)) == "invalid_path"


@pytest.mark.parametrize(
    ("path", "code"),
    [("/", "invalid_path"), ("/opt", "forbidden_path"), ("/run", "forbidden_path")],
)
def test_deleting_a_parent_of_a_forbidden_root_is_refused(path: str, code: str) -> None:
    assert code_of(lambda: check_not_ancestor(path)) == code


def test_deleting_elsewhere_is_fine() -> None:
    check_not_ancestor("/home/user")
    check_not_ancestor("/opt/venv")
