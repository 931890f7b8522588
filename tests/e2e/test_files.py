"""``/v1/sandboxes/{id}/files`` against real sandboxes: every operation, big files, attacks."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serverproc import ServerProcess

HOME = "/home/user"
MB = 1024 * 1024


def files_url(sandbox: dict[str, Any], suffix: str = "") -> str:
    return f"/v1/sandboxes/{sandbox['id']}/files{suffix}"


def run_code(api: httpx.Client, sandbox: dict[str, Any], code: str) -> dict[str, Any]:
    response = api.post(f"/v1/sandboxes/{sandbox['id']}/execute", json={"code": code})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    assert result["error"] is None, result["error"]
    return result


def primary(result: dict[str, Any]) -> str:
    return str(next(i["text"] for i in result["items"] if i["is_primary"]))


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"code", "detail", "type"} and body["code"] == status, body
    if code is not None:
        assert body["detail"].startswith(f"{code}:"), body


#: Made by the kernels themselves whenever one starts (the spare is started in the background).
KERNEL_DIRS = frozenset({".ipython", ".local", ".cache", ".config", ".jupyter"})


def home_names(api: httpx.Client, sandbox: dict[str, Any]) -> set[str]:
    response = api.get(files_url(sandbox), params={"path": HOME})
    assert response.status_code == 200, response.text
    return {e["name"] for e in response.json()["entries"]} - KERNEL_DIRS


# --- every operation -----------------------------------------------------------------------------


def test_write_read_stat_and_list(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    created = api.put(
        files_url(sandbox, "/content"), params={"path": "docs/notes.txt"}, content=b"first"
    )
    assert created.status_code == 201, created.text
    info = created.json()
    assert info["path"] == f"{HOME}/docs/notes.txt"
    assert (info["name"], info["type"], info["size"], info["mode"]) == (
        "notes.txt",
        "file",
        5,
        0o644,
    )
    replaced = api.put(
        files_url(sandbox, "/content"), params={"path": f"{HOME}/docs/notes.txt"}, content=b"second"
    )
    assert replaced.status_code == 200, replaced.text

    read = api.get(files_url(sandbox, "/content"), params={"path": "docs/notes.txt"})
    assert read.status_code == 200
    assert read.content == b"second"
    assert read.headers["content-type"].startswith("text/plain")
    assert read.headers["content-length"] == "6"

    stat = api.get(files_url(sandbox, "/stat"), params={"path": "docs/notes.txt"}).json()
    assert stat["size"] == 6 and stat["type"] == "file" and stat["mtime"].endswith("Z")

    listing = api.get(files_url(sandbox), params={"path": "docs"}).json()
    assert listing["path"] == f"{HOME}/docs" and listing["truncated"] is False
    assert [(e["name"], e["type"], e["size"]) for e in listing["entries"]] == [
        ("notes.txt", "file", 6)
    ]
    # The code in the sandbox sees what the API wrote.
    assert primary(run_code(api, sandbox, "open('docs/notes.txt').read()")) == "'second'"


def test_put_without_overwrite_refuses_an_existing_file(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    url = files_url(sandbox, "/content")
    assert (
        api.put(url, params={"path": "once.txt", "overwrite": "false"}, content=b"1").status_code
        == 201
    )
    again = api.put(url, params={"path": "once.txt", "overwrite": "false"}, content=b"2")
    assert_error(again, 409, "exists")
    assert api.get(url, params={"path": "once.txt"}).content == b"1"


def test_mkdir_creates_parents_and_is_idempotent(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    first = api.post(files_url(sandbox, "/mkdir"), json={"path": "a/b/c"})
    assert first.status_code == 201, first.text
    assert first.json()["type"] == "dir" and first.json()["path"] == f"{HOME}/a/b/c"
    assert api.post(files_url(sandbox, "/mkdir"), json={"path": "a/b/c"}).status_code == 200
    api.put(files_url(sandbox, "/content"), params={"path": "plain"}, content=b"x")
    assert_error(api.post(files_url(sandbox, "/mkdir"), json={"path": "plain"}), 409, "exists")


def test_rename(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    content = files_url(sandbox, "/content")
    api.put(content, params={"path": "old.txt"}, content=b"old")
    api.put(content, params={"path": "taken.txt"}, content=b"taken")
    moved = api.post(files_url(sandbox, "/rename"), json={"from": "old.txt", "to": "new.txt"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["path"] == f"{HOME}/new.txt"
    assert_error(api.get(content, params={"path": "old.txt"}), 404, "not_found")
    refused = api.post(files_url(sandbox, "/rename"), json={"from": "new.txt", "to": "taken.txt"})
    assert_error(refused, 409, "exists")
    forced = api.post(
        files_url(sandbox, "/rename"),
        json={"from": "new.txt", "to": "taken.txt", "overwrite": True},
    )
    assert forced.status_code == 200
    assert api.get(content, params={"path": "taken.txt"}).content == b"old"
    missing = api.post(files_url(sandbox, "/rename"), json={"from": "nope", "to": "x"})
    assert_error(missing, 404, "not_found")


def test_delete_files_directories_and_symlinks(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    content = files_url(sandbox, "/content")
    api.put(content, params={"path": "tree/sub/deep.txt"}, content=b"x")
    api.put(content, params={"path": "keep.txt"}, content=b"kept")
    run_code(api, sandbox, "import os; os.symlink('keep.txt', 'link')")
    link = api.get(files_url(sandbox, "/stat"), params={"path": "link"}).json()
    assert link["type"] == "symlink" and link["target"] == "keep.txt"

    assert api.delete(files_url(sandbox), params={"path": "link"}).status_code == 204
    assert api.get(content, params={"path": "keep.txt"}).content == b"kept"  # not the target
    assert api.delete(files_url(sandbox), params={"path": "tree"}).status_code == 204
    assert_error(api.get(files_url(sandbox, "/stat"), params={"path": "tree"}), 404, "not_found")
    assert_error(api.delete(files_url(sandbox), params={"path": "tree"}), 404, "not_found")


def test_reading_what_is_not_a_file(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    content = files_url(sandbox, "/content")
    assert_error(api.get(content, params={"path": "missing.bin"}), 404, "not_found")
    assert_error(api.get(content, params={"path": HOME}), 409, "is_a_directory")
    assert_error(api.get(files_url(sandbox), params={"path": "missing-dir"}), 404, "not_found")


def test_multipart_upload_of_several_files(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    parts: list[tuple[str, tuple[str | None, bytes] | tuple[str | None, bytes, str]]] = [
        ("file", ("one.txt", b"1" * 10, "text/plain")),
        ("note", (None, b"a plain field is ignored")),
        ("file", ("two.bin", os.urandom(3 * MB + 17), "application/octet-stream")),
    ]
    uploaded = api.post(files_url(sandbox, "/upload"), params={"path": "incoming"}, files=parts)
    assert uploaded.status_code == 201, uploaded.text
    assert [(f["path"], f["size"]) for f in uploaded.json()["files"]] == [
        (f"{HOME}/incoming/one.txt", 10),
        (f"{HOME}/incoming/two.bin", 3 * MB + 17),
    ]
    two = api.get(files_url(sandbox, "/content"), params={"path": "incoming/two.bin"})
    assert two.content == parts[2][1][1]
    again = api.post(files_url(sandbox, "/upload"), params={"path": "incoming"}, files=parts[:1])
    assert_error(again, 409, "exists")
    bad = api.post(
        files_url(sandbox, "/upload"),
        content=b"not multipart",
        headers={"content-type": "text/plain"},
    )
    assert_error(bad, 422)


def test_execution_sees_the_api_and_the_api_sees_the_execution(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    run_code(
        api, sandbox, "import os; os.makedirs('made/here'); open('made/here/f', 'wb').write(b'abc')"
    )
    listing = api.get(files_url(sandbox), params={"path": "made/here"}).json()
    assert [(e["name"], e["size"]) for e in listing["entries"]] == [("f", 3)]


# --- big files stream both ways ------------------------------------------------------------------


def _high_water_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_200_mb_file_both_ways_with_bounded_server_memory(
    api: httpx.Client, sandbox: dict[str, Any], server: ServerProcess, tmp_path: Path
) -> None:
    size = 200 * MB
    source = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(source, "wb") as out:
        for _ in range(size // MB):
            block = os.urandom(MB)
            digest.update(block)
            out.write(block)
    assert server.proc is not None
    before_kb = _high_water_kb(server.proc.pid)

    def body() -> Iterator[bytes]:
        with open(source, "rb") as f:
            while block := f.read(256 * 1024):
                yield block

    put = api.put(files_url(sandbox, "/content"), params={"path": "big.bin"}, content=body())
    assert put.status_code == 201, put.text
    assert put.json()["size"] == size
    inside = run_code(
        api,
        sandbox,
        "import hashlib\nh = hashlib.sha256()\nwith open('big.bin', 'rb') as f:\n"
        "    while b := f.read(1 << 20): h.update(b)\nh.hexdigest()",
    )
    assert primary(inside) == repr(digest.hexdigest())

    back = hashlib.sha256()
    received = 0
    with api.stream("GET", files_url(sandbox, "/content"), params={"path": "big.bin"}) as r:
        assert r.status_code == 200
        assert r.headers["content-length"] == str(size)
        for block in r.iter_bytes():
            back.update(block)
            received += len(block)
    assert received == size
    assert back.hexdigest() == digest.hexdigest()

    growth_mb = (_high_water_kb(server.proc.pid) - before_kb) / 1024
    assert growth_mb < 150, f"the server's peak memory grew by {growth_mb:.0f} MB"


def test_an_interrupted_upload_leaves_nothing(
    api: httpx.Client, sandbox: dict[str, Any], server: ServerProcess
) -> None:
    def body() -> Iterator[bytes]:
        yield b"x" * MB
        raise RuntimeError("the client gives up")

    with pytest.raises(RuntimeError):
        api.put(files_url(sandbox, "/content"), params={"path": "partial.bin"}, content=body())
    # The server notices the dropped connection on its own time: wait for it (bounded).
    names = ""
    for _ in range(40):
        names = primary(run_code(api, sandbox, "import os; sorted(os.listdir('.'))"))
        if "partial" not in names:
            break
        time.sleep(0.25)
    assert "partial" not in names


def test_abandoned_downloads_release_their_handles(
    api: httpx.Client, sandbox: dict[str, Any], server: ServerProcess
) -> None:
    # The agent holds at most 64 open files: leaked handles would make later reads fail.
    api.put(files_url(sandbox, "/content"), params={"path": "ten.bin"}, content=b"z" * 10 * MB)
    for _ in range(80):
        with httpx.Client(base_url=server.url, headers=api.headers, timeout=60) as quitter:
            with quitter.stream(
                "GET", files_url(sandbox, "/content"), params={"path": "ten.bin"}
            ) as r:
                assert r.status_code in (200, 422), r.status_code
                next(r.iter_raw(), None)
    # The server notices each dropped connection on its own time: wait for it (bounded).
    status = 0
    for _ in range(40):
        status = api.get(files_url(sandbox, "/content"), params={"path": "ten.bin"}).status_code
        if status == 200:
            break
        time.sleep(0.25)
    assert status == 200


# --- path attacks: each must be refused, with nothing written ------------------------------------

BAD_PATHS = [
    pytest.param("../../../etc/passwd", 422, "invalid_path", id="dotdot-above-root"),
    pytest.param("/home/user/../../../x", 422, "invalid_path", id="absolute-dotdot-above-root"),
    pytest.param("a\x00b", 422, "invalid_path", id="nul-byte"),
    pytest.param("x" * 300, 422, "invalid_path", id="300-byte-component"),
    pytest.param("a/" * 2100 + "f", 422, "invalid_path", id="path-over-4096-bytes"),
    pytest.param("/run/sandcastle/agent.sock", 403, "forbidden_path", id="agent-socket"),
    pytest.param("/run/sandcastle/new", 403, "forbidden_path", id="agent-socket-dir"),
    pytest.param("../../run/sandcastle/x", 403, "forbidden_path", id="dotdot-into-agent-dir"),
    pytest.param(
        "/opt/sandcastle/app/sandcastle/agent/main.py", 403, "forbidden_path", id="agent-code"
    ),
    pytest.param("/proc/1/environ", 403, "forbidden_path", id="proc"),
    pytest.param("/proc/1/root/etc/passwd", 403, "forbidden_path", id="proc-root"),
    pytest.param("/sys/kernel/x", 403, "forbidden_path", id="sys"),
    pytest.param("/dev/shm/x", 403, "forbidden_path", id="dev"),
]


@pytest.mark.security
@pytest.mark.parametrize(("path", "status", "code"), BAD_PATHS)
def test_bad_paths_are_refused_for_every_operation(
    api: httpx.Client, sandbox: dict[str, Any], path: str, status: int, code: str
) -> None:
    before = home_names(api, sandbox)
    content = files_url(sandbox, "/content")
    assert_error(api.put(content, params={"path": path}, content=b"evil"), status, code)
    assert_error(api.get(content, params={"path": path}), status, code)
    assert_error(api.get(files_url(sandbox, "/stat"), params={"path": path}), status, code)
    assert_error(api.get(files_url(sandbox), params={"path": path}), status, code)
    assert_error(api.post(files_url(sandbox, "/mkdir"), json={"path": path}), status, code)
    assert_error(api.delete(files_url(sandbox), params={"path": path}), status, code)
    api.put(content, params={"path": "mine.txt"}, content=b"mine")
    moved = api.post(files_url(sandbox, "/rename"), json={"from": "mine.txt", "to": path})
    assert_error(moved, status, code)
    assert home_names(api, sandbox) == before | {"mine.txt"}


@pytest.mark.security
@pytest.mark.parametrize(
    "path", ["/", "/opt", "/run", "/home/user/../.."], ids=["root", "opt", "run", "dotdot-root"]
)
def test_deleting_or_moving_a_parent_of_the_agent_is_refused(
    api: httpx.Client, sandbox: dict[str, Any], path: str
) -> None:
    deleted = api.delete(files_url(sandbox), params={"path": path})
    assert deleted.status_code in (403, 422), deleted.text
    moved = api.post(files_url(sandbox, "/rename"), json={"from": path, "to": "/home/user/x"})
    assert moved.status_code in (403, 422), moved.text
    assert api.get(f"/v1/sandboxes/{sandbox['id']}/agent/").status_code == 200  # agent alive


@pytest.mark.security
@pytest.mark.parametrize(
    "target",
    ["/proc/1/root/etc", "/run/sandcastle", "/run/sandcastle/agent.sock", "/opt/sandcastle/app"],
)
def test_symlinks_planted_in_the_sandbox_do_not_lead_out(
    api: httpx.Client, sandbox: dict[str, Any], target: str
) -> None:
    # A symlink the sandbox's code made, pointing into the agent's mounts (or through /proc).
    run_code(api, sandbox, f"import os; os.symlink({target!r}, 'trap')")
    passwd_before = primary(run_code(api, sandbox, "open('/etc/passwd').read()"))
    content = files_url(sandbox, "/content")
    for path in ("trap", "trap/passwd", "trap/agent.py", "trap/x/y"):
        assert_error(
            api.put(content, params={"path": path}, content=b"evil"), 403, "forbidden_path"
        )
        assert_error(api.get(content, params={"path": path}), 403, "forbidden_path")
    assert_error(api.get(files_url(sandbox), params={"path": "trap"}), 403, "forbidden_path")
    assert_error(
        api.post(files_url(sandbox, "/mkdir"), json={"path": "trap/d"}), 403, "forbidden_path"
    )
    assert_error(
        api.post(files_url(sandbox, "/rename"), json={"from": "trap/passwd", "to": "stolen"}),
        403,
        "forbidden_path",
    )
    # The link itself is the sandbox's: it can be inspected and removed, its target untouched.
    link = api.get(files_url(sandbox, "/stat"), params={"path": "trap"}).json()
    assert (link["type"], link["target"]) == ("symlink", target)
    assert primary(run_code(api, sandbox, "open('/etc/passwd').read()")) == passwd_before
    leftovers = run_code(
        api,
        sandbox,
        "import glob; glob.glob('/etc/.*sandcastle*') + glob.glob('/home/user/.*part')",
    )
    assert primary(leftovers) == "[]"
    assert api.delete(files_url(sandbox), params={"path": "trap"}).status_code == 204
    assert api.get(f"/v1/sandboxes/{sandbox['id']}/agent/").status_code == 200


@pytest.mark.security
def test_writes_outside_the_users_reach_are_refused_by_the_sandbox(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    # Not a forbidden path, but the agent is the sandbox user: the kernel says no.
    refused = api.put(files_url(sandbox, "/content"), params={"path": "/etc/passwd"}, content=b"x")
    assert_error(refused, 403, "permission_denied")
    assert "root" in primary(run_code(api, sandbox, "open('/etc/passwd').read()"))


def test_files_of_another_tenant_or_missing_sandbox_are_404(api: httpx.Client) -> None:
    assert_error(api.get("/v1/sandboxes/sb_00000000/files"), 404)
    assert_error(
        api.put("/v1/sandboxes/sb_00000000/files/content", params={"path": "x"}, content=b"x"), 404
    )
