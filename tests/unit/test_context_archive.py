"""A build context archive from a client is unpacked only when everything in it is a plain file,
directory or link that stays inside, within the context limits; anything else refuses it whole."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from sandcastle.runtime.templates import context_archive
from sandcastle.runtime.templates.context_archive import unpack
from sandcastle.runtime.templates.from_dockerfile import BuildContextError


def archive(tmp_path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    path = tmp_path / "context.tar"
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def test_files_directories_and_inner_links_are_unpacked(tmp_path: Path) -> None:
    path = archive(
        tmp_path,
        (member("src", tarfile.DIRTYPE), b""),
        (member("src/app.py"), b"print('hi')\n"),
        (member("app.py", tarfile.SYMTYPE, "src/app.py"), b""),
    )
    target = tmp_path / "out"
    target.mkdir()

    unpack(path, target)

    assert (target / "src" / "app.py").read_text() == "print('hi')\n"
    assert (target / "app.py").is_symlink()


@pytest.mark.parametrize(
    "bad",
    [
        member("../escape.txt"),
        member("link", tarfile.SYMTYPE, "/etc/passwd"),
        member("link", tarfile.SYMTYPE, "../../outside"),
        member("null", tarfile.CHRTYPE),
        member("fifo", tarfile.FIFOTYPE),
    ],
    ids=["dotdot", "absolute-link", "escaping-link", "device", "fifo"],
)
def test_a_member_leading_out_or_a_special_file_refuses_the_archive(
    tmp_path: Path, bad: tarfile.TarInfo
) -> None:
    path = archive(tmp_path, (member("fine.txt"), b"ok"), (bad, b"x"))
    target = tmp_path / "out"
    target.mkdir()

    with pytest.raises(BuildContextError):
        unpack(path, target)
    assert not (tmp_path / "escape.txt").exists()


def test_an_absolute_member_name_lands_inside_the_context(tmp_path: Path) -> None:
    path = archive(tmp_path, (member("/etc/app.conf"), b"setting"))
    target = tmp_path / "out"
    target.mkdir()

    unpack(path, target)

    assert (target / "etc" / "app.conf").read_text() == "setting"


def test_an_archive_declaring_more_than_the_limit_is_refused_before_unpacking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(context_archive, "MAX_CONTEXT_BYTES", 10)
    path = archive(tmp_path, (member("a.txt"), b"123456"), (member("b.txt"), b"123456"))
    target = tmp_path / "out"
    target.mkdir()

    with pytest.raises(BuildContextError, match="more than"):
        unpack(path, target)
    assert list(target.iterdir()) == []


def test_something_that_is_no_tar_archive_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "context.tar"
    path.write_bytes(b"not an archive at all" * 100)

    with pytest.raises(BuildContextError, match="not a readable tar archive"):
        unpack(path, tmp_path)
