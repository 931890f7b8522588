"""``sandcastle.agent.files`` on the host, in a temporary home: operations and sessions."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sandcastle.agent import files as agent_files
from sandcastle.agent.channel import RequestFailed
from sandcastle.agent.files import MAX_CHUNK_BYTES, AgentFiles


async def no_events(event: dict[str, Any]) -> None:
    raise AssertionError("file methods emit no events")


@pytest.fixture
def record(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Where the agent notes its writes in progress (outside the home the tests list)."""
    return str(tmp_path_factory.mktemp("record") / "partial")


@pytest_asyncio.fixture
async def agent(tmp_path: Path, record: str) -> AsyncIterator[AgentFiles]:
    files = AgentFiles(home=str(tmp_path), partials_record=record)
    try:
        yield files
    finally:
        await files.aclose()


async def call(agent: AgentFiles, method: str, **params: Any) -> dict[str, Any]:
    return await agent.handlers()[method](params, no_events)


async def failure(agent: AgentFiles, method: str, **params: Any) -> str:
    with pytest.raises(RequestFailed) as caught:
        await call(agent, method, **params)
    return caught.value.code


async def write(agent: AgentFiles, path: str, data: bytes, **options: Any) -> dict[str, Any]:
    opened = await call(agent, "file.write.open", path=path, **options)
    handle = opened["handle"]
    await call(agent, "file.write.chunk", handle=handle, offset=0, payload=data)
    return await call(agent, "file.write.close", handle=handle, size=len(data))


async def read(agent: AgentFiles, path: str, chunk: int = 3) -> bytes:
    opened = await call(agent, "file.read.open", path=path)
    out = b""
    while True:
        reply = await call(
            agent, "file.read.chunk", handle=opened["handle"], offset=len(out), length=chunk
        )
        assert isinstance(reply["payload"], bytes), reply
        out += reply["payload"]
        if reply["eof"]:
            break
    await call(agent, "file.read.close", handle=opened["handle"])
    assert len(out) == opened["size"]
    return out


async def test_write_read_and_list(agent: AgentFiles, tmp_path: Path) -> None:
    closed = await write(agent, "dir/sub/file.txt", b"hello world")
    assert closed["created"] is True
    assert closed["info"]["path"] == str(tmp_path / "dir/sub/file.txt")
    assert await read(agent, "dir/sub/file.txt") == b"hello world"
    assert (await write(agent, "dir/sub/file.txt", b"new"))["created"] is False
    listing = await call(agent, "file.list", path="dir/sub")
    assert [(e["name"], e["type"], e["size"]) for e in listing["entries"]] == [
        ("file.txt", "file", 3)
    ]
    # No temporary files are left behind.
    assert sorted(os.listdir(tmp_path / "dir/sub")) == ["file.txt"]


async def test_chunks_may_arrive_out_of_order(agent: AgentFiles, tmp_path: Path) -> None:
    handle = (await call(agent, "file.write.open", path="ooo.bin"))["handle"]
    for offset, data in [(4, b"5678"), (0, b"1234"), (8, b"9")]:
        await call(
            agent,
            "file.write.chunk",
            handle=handle,
            offset=offset,
            payload=data,
        )
    await call(agent, "file.write.close", handle=handle, size=9)
    assert (tmp_path / "ooo.bin").read_bytes() == b"123456789"


async def test_exclusive_write_and_abort(agent: AgentFiles, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    assert await failure(agent, "file.write.open", path="taken", exclusive=True) == "exists"
    os.symlink("nowhere", tmp_path / "dangling")
    assert await failure(agent, "file.write.open", path="dangling", exclusive=True) == "exists"
    handle = (await call(agent, "file.write.open", path="aborted", exclusive=True))["handle"]
    await call(agent, "file.write.chunk", handle=handle, offset=0, payload=b"abc")
    await call(agent, "file.write.abort", handle=handle)
    assert sorted(os.listdir(tmp_path)) == ["dangling", "taken"]
    assert await failure(agent, "file.write.chunk", handle=handle, offset=0, payload=b"") == (
        "bad_handle"
    )


async def test_exclusive_write_loses_to_a_file_created_meanwhile(
    agent: AgentFiles, tmp_path: Path
) -> None:
    handle = (await call(agent, "file.write.open", path="race", exclusive=True))["handle"]
    (tmp_path / "race").write_text("first")
    assert await failure(agent, "file.write.close", handle=handle, size=0) == "exists"
    assert (tmp_path / "race").read_text() == "first"
    assert sorted(os.listdir(tmp_path)) == ["race"]


async def test_a_short_write_is_not_committed(agent: AgentFiles, tmp_path: Path) -> None:
    handle = (await call(agent, "file.write.open", path="short"))["handle"]
    await call(agent, "file.write.chunk", handle=handle, offset=0, payload=b"abc")
    assert await failure(agent, "file.write.close", handle=handle, size=10) == "incomplete"
    assert os.listdir(tmp_path) == []


async def test_writing_through_a_symlink_replaces_its_target(
    agent: AgentFiles, tmp_path: Path
) -> None:
    (tmp_path / "real").write_text("old")
    os.chmod(tmp_path / "real", 0o600)
    os.symlink("real", tmp_path / "link")
    await write(agent, "link", b"new")
    assert (tmp_path / "real").read_text() == "new"
    assert (tmp_path / "link").is_symlink()
    assert (tmp_path / "real").stat().st_mode & 0o777 == 0o600  # permissions kept


async def test_reading_what_is_not_a_regular_file(agent: AgentFiles, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")  # opening it must not hang the agent
    assert await failure(agent, "file.read.open", path="fifo") == "not_a_file"
    assert await failure(agent, "file.read.open", path=".") == "is_a_directory"
    assert await failure(agent, "file.read.open", path="missing") == "not_found"
    (tmp_path / "d").mkdir()
    assert await failure(agent, "file.write.open", path="d") == "is_a_directory"


async def test_mkdir_stat_rename_delete(agent: AgentFiles, tmp_path: Path) -> None:
    made = await call(agent, "file.mkdir", path="a/b")
    assert made["created"] is True and made["info"]["type"] == "dir"
    assert (await call(agent, "file.mkdir", path="a/b"))["created"] is False
    (tmp_path / "a/b/f").write_text("f")
    os.symlink("b/f", tmp_path / "a/link")
    stat = await call(agent, "file.stat", path="a/link")
    assert (stat["type"], stat["target"]) == ("symlink", "b/f")
    assert await failure(agent, "file.rename", **{"from": "a/b/f", "to": "a/link"}) == "exists"
    moved = await call(agent, "file.rename", **{"from": "a/b/f", "to": "g"})
    assert moved["path"] == str(tmp_path / "g")
    await call(agent, "file.delete", path="a/link")
    assert not (tmp_path / "a/link").exists() and (tmp_path / "g").exists()
    await call(agent, "file.delete", path="a")
    assert sorted(os.listdir(tmp_path)) == ["g"]
    assert await failure(agent, "file.delete", path="a") == "not_found"


async def test_listing_is_bounded_and_skips_names_json_cannot_carry(
    agent: AgentFiles, tmp_path: Path
) -> None:
    for i in range(5):
        (tmp_path / f"f{i}").write_text("x")
    os.close(os.open(os.fsencode(tmp_path) + b"/bad\xff", os.O_CREAT | os.O_WRONLY, 0o644))
    listing = await call(agent, "file.list", path=".", limit=3)
    assert len(listing["entries"]) == 3 and listing["truncated"] is True
    full = await call(agent, "file.list", path=".")
    assert [e["name"] for e in full["entries"]] == ["f0", "f1", "f2", "f3", "f4"]


async def test_snapshot(agent: AgentFiles, tmp_path: Path) -> None:
    (tmp_path / "top.txt").write_text("12345")
    (tmp_path / "deep/er").mkdir(parents=True)
    (tmp_path / "deep/er/x").write_text("x")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache/ignored").write_text("i")
    (tmp_path / ".hidden").write_text("h")
    os.symlink("top.txt", tmp_path / "link")
    snap = await call(agent, "files.snapshot", root=".")
    assert {k: v[0] for k, v in snap["files"].items()} == {"top.txt": 5, "deep/er/x": 1}
    assert snap["truncated"] is False
    shallow = await call(agent, "files.snapshot", root=".", max_depth=1)
    assert set(shallow["files"]) == {"top.txt"} and shallow["truncated"] is True
    few = await call(agent, "files.snapshot", root=".", max_files=1)
    assert len(few["files"]) == 1 and few["truncated"] is True


async def test_handles_are_limited(agent: AgentFiles, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    handles = [
        (await call(agent, "file.read.open", path="f"))["handle"]
        for _ in range(agent_files.MAX_HANDLES)
    ]
    assert await failure(agent, "file.read.open", path="f") == "too_many_handles"
    await call(agent, "file.read.close", handle=handles[0])
    await call(agent, "file.read.open", path="f")


async def test_bad_parameters(agent: AgentFiles) -> None:
    assert await failure(agent, "file.stat") == "invalid_path"
    assert await failure(agent, "file.list", path=".", limit=0) == "invalid"
    handle = (await call(agent, "file.write.open", path="p"))["handle"]
    # The bytes come as the request's payload: base64 in the JSON params is not accepted.
    assert await failure(agent, "file.write.chunk", handle=handle, data_b64="YWJj") == "invalid"
    too_big = b"x" * (MAX_CHUNK_BYTES + 1)
    assert await failure(agent, "file.write.chunk", handle=handle, payload=too_big) == "invalid"
    assert await failure(agent, "file.read.chunk", handle=handle, offset=0) == "bad_handle"


async def test_an_agent_starting_removes_what_cut_writes_of_the_last_one_left(
    tmp_path: Path, record: str
) -> None:
    before = AgentFiles(home=str(tmp_path), partials_record=record)
    for name in ("a.txt", "sub/b.txt"):
        await call(before, "file.write.open", path=name)
    committed = await write(before, "kept.txt", b"whole")
    # The agent ends without closing its writes (killed: no aclose).
    left = sorted(p.name for p in tmp_path.rglob("*.sandcastle-part"))
    assert len(left) == 2

    after = AgentFiles(home=str(tmp_path), partials_record=record)
    assert after.remove_left_over() == 2

    assert list(tmp_path.rglob("*.sandcastle-part")) == []
    assert (tmp_path / "kept.txt").read_bytes() == b"whole" and committed["created"]
    assert not os.path.exists(record)


async def test_the_record_names_nothing_but_temporary_files_to_remove(
    tmp_path: Path, record: str
) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("mine")
    decoy = tmp_path / "dir.sandcastle-part"  # not hidden: not a name the agent makes
    decoy.write_text("x")
    Path(record).write_text(f"{precious}\n{decoy}\nrelative/.x.sandcastle-part\n")

    assert AgentFiles(home=str(tmp_path), partials_record=record).remove_left_over() == 0
    assert precious.read_text() == "mine" and decoy.exists()


async def test_the_record_is_emptied_when_no_write_is_in_progress(
    agent: AgentFiles, tmp_path: Path, record: str
) -> None:
    opened = await call(agent, "file.write.open", path="one.txt")
    await write(agent, "two.txt", b"2")
    assert os.path.exists(record)  # "one.txt" is still being written

    await call(agent, "file.write.abort", handle=opened["handle"])

    assert not os.path.exists(record)


async def test_a_record_that_is_not_a_regular_file_neither_blocks_nor_is_trusted(
    tmp_path: Path, record: str
) -> None:
    os.mkfifo(record)  # user code can put anything at the record's path

    files = AgentFiles(home=str(tmp_path), partials_record=record)
    assert files.remove_left_over() == 0  # returned at once: a FIFO is not opened for reading
    done = await write(files, "x.txt", b"x")  # noting the write does not block either
    assert done["created"]
    await files.aclose()
