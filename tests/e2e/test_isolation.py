"""A sandbox cannot see the host, reach the network, or use more memory than it was given."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx

from sandcastle.agent import layout
from tests.e2e.executing import run
from tests.serverproc import ServerProcess


def test_host_files_are_out_of_reach(
    api: httpx.Client, sandbox: dict[str, object], server: ServerProcess, tmp_path: Path
) -> None:
    marker = secrets.token_hex(8)
    root_file = Path("/root") / f"sandcastle-test-{marker}"
    root_file.write_text(marker)
    data_file = server.data_dir / f"secret-{marker}"
    data_file.write_text(marker)
    try:
        code = (
            "import os, pathlib\n"
            f"paths = [{str(root_file)!r}, {str(data_file)!r}, {str(server.data_dir / 'admin.key')!r}]\n"
            "found = []\n"
            "for p in paths:\n"
            "    try:\n"
            "        found.append(pathlib.Path(p).read_text())\n"
            "    except OSError:\n"
            "        pass\n"
            "for top in ('/root', '/proc/1/root/root', '/tmp', '/home'):\n"
            "    for dirpath, _, files in os.walk(top):\n"
            "        for f in files:\n"
            "            try:\n"
            "                found.append(pathlib.Path(dirpath, f).read_text())\n"
            "            except (OSError, UnicodeDecodeError):\n"
            "                pass\n"
            "any(" + repr(marker) + " in text for text in found)"
        )
        result = run(api, sandbox["id"], code=code)
        assert result["error"] is None, result["error"]
        assert result["items"] == [{"is_primary": True, "text": "False"}]
    finally:
        root_file.unlink()
        data_file.unlink()


def test_no_network(api: httpx.Client, sandbox: dict[str, object], server: ServerProcess) -> None:
    code = (
        "import socket\n"
        "results = []\n"
        f"for host, port in [('127.0.0.1', {server.port}), ('1.1.1.1', 53), ('10.0.0.1', 80)]:\n"
        "    s = socket.socket(); s.settimeout(2)\n"
        "    try:\n"
        "        s.connect((host, port)); results.append('connected')\n"
        "    except OSError as exc:\n"
        "        results.append(type(exc).__name__)\n"
        "    finally:\n"
        "        s.close()\n"
        "import os\n"
        "(results, sorted(os.listdir('/sys/class/net')) if os.path.exists('/sys/class/net') else None)"
    )
    result = run(api, sandbox["id"], code=code)
    assert result["error"] is None, result["error"]
    text = result["items"][0]["text"]
    assert "connected" not in text


def test_memory_limit_kills_and_is_reported(api: httpx.Client, backend: str) -> None:
    created = api.post("/v1/sandboxes", json={"memory_mb": 256})
    assert created.status_code == 201, created.text
    sandbox_id = created.json()["id"]
    try:
        # What the OOM killer takes when the sandbox is full is a kernel, never the agent.
        score = run(api, sandbox_id, code="open('/proc/self/oom_score_adj').read().strip()")
        assert score["items"] == [{"is_primary": True, "text": "'500'"}], score
        hog = run(
            api,
            sandbox_id,
            code="blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))",
        )
        error = hog["error"]
        assert isinstance(error, dict)
        assert error["name"] == "OutOfMemoryError", error
        assert "256 MB" in error["value"]
        # The sandbox itself survives: a new context works.
        again = run(api, sandbox_id, code="2 * 21")
        assert again["items"] == [{"is_primary": True, "text": "42"}]
    finally:
        api.delete(f"/v1/sandboxes/{sandbox_id}")


def test_seccomp_and_namespaces_refuse_escapes(
    api: httpx.Client, sandbox: dict[str, object]
) -> None:
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "out = {}\n"
        "out['unshare_user'] = libc.unshare(0x10000000)\n"
        "out['mount'] = libc.mount(b'none', b'/mnt', b'tmpfs', 0, None)\n"
        "out['ptrace'] = libc.ptrace(16, 1, 0, 0)\n"
        "out['uid'] = os.getuid()\n"
        "out['caps'] = [l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1]\n"
        "out"
    )
    result = run(api, sandbox["id"], code=code)
    assert result["error"] is None, result["error"]
    values = eval(result["items"][0]["text"])  # a dict repr we produced
    assert values["unshare_user"] == -1
    assert values["mount"] == -1
    assert values["ptrace"] == -1
    assert values["uid"] == layout.USER_UID
    assert int(values["caps"], 16) == 0
