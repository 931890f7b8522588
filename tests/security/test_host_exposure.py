"""Attacks on what the host holds for a sandbox: links planted for the server to follow, the
server's environment and descriptors, and host disk a sandbox could fill through them."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandcastle.runtime.local import instance_name
from tests.e2e.code_runs import finished, submit
from tests.e2e.executing import run
from tests.e2e_fixtures import HOST_ENV_MARKER
from tests.security.test_attacks import value
from tests.serverproc import ServerProcess, templates_dir

#: Reads every /proc entry a sandbox process can: environments, command lines, mount tables,
#: descriptor links, for every pid it can see; tries to open the agent's memory (which holds
#: its channel secret); then tries to take a descriptor of PID 1 with pidfd_getfd.
_PROC_SWEEP = """
import ctypes, errno, os
seen = {}
for pid in [p for p in os.listdir('/proc') if p.isdigit()]:
    try:
        if b'sandcastle.agent' in open(f'/proc/{pid}/cmdline', 'rb').read():
            open(f'/proc/{pid}/mem', 'rb').close()
            seen[f'/proc/{pid}/mem'] = 'the agent memory opened'
    except OSError:
        pass
    for entry in ('environ', 'cmdline', 'mountinfo', 'mounts'):
        try:
            seen[f'/proc/{pid}/{entry}'] = open(f'/proc/{pid}/{entry}', 'rb').read().decode(errors='replace')
        except OSError:
            pass
    try:
        for fd in os.listdir(f'/proc/{pid}/fd'):
            try:
                seen[f'/proc/{pid}/fd/{fd}'] = os.readlink(f'/proc/{pid}/fd/{fd}')
            except OSError:
                pass
    except OSError:
        pass
libc = ctypes.CDLL(None, use_errno=True)
pidfd = libc.syscall(434, 1, 0)  # pidfd_open(1)
got = libc.syscall(438, pidfd, 1, 0) if pidfd >= 0 else -1  # pidfd_getfd(pidfd, 1)
getfd = 'ok' if got >= 0 else errno.errorcode.get(ctypes.get_errno(), '?')
(seen, getfd)
"""


def test_nothing_of_the_hosts_environment_paths_or_descriptors_is_visible_inside(
    api: httpx.Client, sandbox: dict[str, Any], server: ServerProcess
) -> None:
    # Work in two contexts first, so more processes (kernels, the spare) are there to read.
    run(api, sandbox["id"], code="1")
    seen, getfd = value(run(api, sandbox["id"], code=_PROC_SWEEP))

    assert seen, "the sweep read nothing: it proves nothing"
    run_dir = f"/run/sandcastle/{instance_name(server.data_dir)}"
    host_words = [
        HOST_ENV_MARKER[1],
        str(server.data_dir),
        run_dir,
        "/run/sandcastle/agent-",
        str(templates_dir()),
        "the agent memory opened",
    ]
    leaks = {where: text for where, text in seen.items() if any(w in text for w in host_words)}
    assert leaks == {}
    assert getfd != "ok"


def test_output_to_inherited_descriptors_cannot_grow_the_hosts_disk(
    api: httpx.Client, server: ServerProcess, fresh: Any
) -> None:
    sid = fresh(disk_mb=64)
    # Every descriptor the sandbox can reach that leads to a file outside its own tree
    # (its inode is not the one at that path inside): 300 MB through each.
    code = (
        "import os\n"
        "chunk = b'x' * (1 << 20)\n"
        "outside = set()\n"
        "for pid in [p for p in os.listdir('/proc') if p.isdigit()]:\n"
        "    try:\n"
        "        fds = os.listdir(f'/proc/{pid}/fd')\n"
        "    except OSError:\n"
        "        continue\n"
        "    for fd in fds:\n"
        "        path = f'/proc/{pid}/fd/{fd}'\n"
        "        try:\n"
        "            link, st = os.readlink(path), os.stat(path)\n"
        "        except OSError:\n"
        "            continue\n"
        "        if link.startswith(('socket:', 'pipe:', 'anon_inode:', '/dev/')):\n"
        "            continue\n"
        "        try:\n"
        "            inside = os.stat(link)\n"
        "            if (inside.st_dev, inside.st_ino) == (st.st_dev, st.st_ino):\n"
        "                continue\n"
        "        except OSError:\n"
        "            pass\n"
        "        outside.add(path)\n"
        "written = {}\n"
        "own = f'/proc/{os.getpid()}/fd/'\n"
        "for path in sorted(outside):\n"
        "    try:\n"
        "        # Our own descriptors as they are (a reopen would check the file's mode).\n"
        "        fd = int(path[len(own):]) if path.startswith(own) else os.open(path, os.O_WRONLY)\n"
        "    except OSError:\n"
        "        continue\n"
        "    written[path] = 0\n"
        "    for _ in range(300):\n"
        "        try:\n"
        "            written[path] += os.write(fd, chunk)\n"
        "        except OSError:\n"
        "            break\n"
        "    if not path.startswith(own):\n"
        "        os.close(fd)\n"
        "written"
    )
    written = value(run(api, sid, code=code, timeout_ms=120_000))
    held = _host_bytes(server.data_dir / "sandboxes" / sid)
    assert held <= (64 + 16) * 1024 * 1024, f"the host holds {held} bytes ({written})"
    # The sandbox goes on answering.
    assert run(api, sid, code="6 * 7")["items"] == [{"is_primary": True, "text": "42"}]


def _host_bytes(directory: Path) -> int:
    """Disk the host really spends under ``directory``, not counting what is mounted below it
    (the layer image's own filesystem is counted once, as the image's blocks)."""
    total = 0
    device = directory.stat().st_dev
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if Path(root, d).stat().st_dev == device]
        for name in files:
            st = Path(root, name).lstat()
            if stat.S_ISREG(st.st_mode):
                total += st.st_blocks * 512
    return total


@pytest.mark.parametrize(
    "shape",
    ["dangling link to a new host file", "link to an existing host file", "link to a host dir"],
)
def test_forks_never_write_through_a_link_the_sandbox_planted(
    api: httpx.Client, sandbox: dict[str, Any], server: ServerProcess, backend: str, shape: str
) -> None:
    if backend != "gvisor":
        pytest.skip("only gvisor copies a layer into a new sandbox (bwrap refuses snapshots)")
    marker = secrets.token_hex(6)
    outside = server.data_dir.parent / f"outside-{marker}"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("host data\n")
    os.chmod(victim, 0o600)
    target = {
        "dangling link to a new host file": outside / "created",
        "link to an existing host file": victim,
        "link to a host dir": outside,
    }[shape]
    before = _state(outside)
    sid = sandbox["id"]
    # The runtime seeds /tmp/.sandcastle into every new layer, and the server does it as root.
    planted = run(
        api,
        sid,
        code=f"import os\nos.remove('/tmp/.sandcastle')\nos.symlink({str(target)!r}, "
        "'/tmp/.sandcastle')\nos.readlink('/tmp/.sandcastle')",
    )
    assert planted["error"] is None, planted["error"]
    snapshot = api.post(f"/v1/sandboxes/{sid}/snapshots")
    assert snapshot.status_code == 201, snapshot.text
    fork = api.post("/v1/sandboxes", json={"snapshot_id": snapshot.json()["id"]})
    try:
        assert fork.status_code == 201, fork.text
        assert _state(outside) == before
        seeded = run(api, fork.json()["id"], code="import os; os.path.islink('/tmp/.sandcastle')")
        assert seeded["items"] == [{"is_primary": True, "text": "False"}]
    finally:
        if fork.status_code == 201:
            api.delete(f"/v1/sandboxes/{fork.json()['id']}")
        api.delete(f"/v1/snapshots/{snapshot.json()['id']}")


def _state(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    return {
        str(path): (path.read_bytes() if path.is_file() else b"", path.lstat().st_mode,
                    path.lstat().st_uid)
        for path in sorted(directory.rglob("*"))
    }  # fmt: skip


def test_sparse_artifacts_cost_the_host_and_the_budgets_what_they_hold(
    api: httpx.Client, server: ServerProcess, fresh: Any
) -> None:
    sid = fresh(disk_mb=64)
    # 4 files of 100 MiB apparent size, a few KiB really written, in a 64 MB sandbox: by their
    # apparent size only two would fit the run's total budget (256 MiB by default).
    code = (
        "import os\n"
        "for i in range(4):\n"
        "    with open(f'sparse{i:02}.bin', 'wb') as f:\n"
        "        f.write(b'head'); f.seek(100 * 2**20 - 4); f.write(b'tail')\n"
    )
    done = finished(api, sid, submit(api, sid, code=code)["id"], timeout=180)
    assert done["status"] == "succeeded", done
    artifacts = done["execution"]["artifacts"]
    assert len(artifacts) == 4
    kept = [a for a in artifacts if a["sha256"] is not None]
    assert len(kept) == 4, [a["metadata"].get("skipped") for a in artifacts]
    held = _host_bytes(server.data_dir / "artifacts" / done["id"])
    assert held < 4 * 2**20, f"the host holds {held} bytes for {len(kept)} sparse artifacts"
    # Served whole all the same.
    body = api.get(kept[0]["download_url"])
    assert len(body.content) == 100 * 2**20
    assert body.content[:4] == b"head" and body.content[-4:] == b"tail"


def test_the_output_an_execution_makes_the_server_hold_is_bounded(
    api: httpx.Client, fresh: Any
) -> None:
    sid = fresh()
    # 24 results of 1 MiB each, past the 16 MiB an execution keeps.
    code = (
        "from IPython.display import display\n"
        "for i in range(24):\n"
        "    display({'text/plain': str(i % 10) * (1 << 20)}, raw=True)\n"
    )
    result = run(api, sid, code=code, timeout_ms=120_000)

    kept = sum(len(item.get("text", "")) for item in result["items"])
    assert 0 < kept <= 16 * 2**20
    assert len(result["items"]) < 24
    assert "output truncated" in "".join(result["logs"]["stderr"])
    # The sandbox goes on answering.
    assert run(api, sid, code="6 * 7")["items"] == [{"is_primary": True, "text": "42"}]


def test_every_sandbox_has_a_channel_secret_of_its_own_forks_included(
    api: httpx.Client, server: ServerProcess, fresh: Any, backend: str
) -> None:
    made = [fresh(), fresh()]
    if backend == "gvisor":  # a fork restores the memory of its source, secret and all
        snapshot = api.post(f"/v1/sandboxes/{made[0]}/snapshots")
        assert snapshot.status_code == 201, snapshot.text
        made.append(fresh(snapshot_id=snapshot.json()["id"]))
    for sid in made:  # each has said hello (and been re-keyed) by now
        assert run(api, sid, code="1")["error"] is None

    secrets_held = [
        (server.data_dir / "sandboxes" / sid / "agent.secret").read_text().strip() for sid in made
    ]

    assert all(secrets_held)
    assert len(set(secrets_held)) == len(made)
