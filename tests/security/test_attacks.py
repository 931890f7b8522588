"""The attack suite: each case is something untrusted code tries, and must fail to get through.

Every case runs real code in a real sandbox through the HTTP API and checks the outcome on the
host side where it can (cgroup counters, files, the server's health), not only what the sandbox
reports about itself.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import httpx

from sandcastle.agent import protocol
from sandcastle.runtime.bwrap import instance_name
from tests.e2e.executing import run
from tests.e2e.test_lifecycle_ops import cgroup_dir
from tests.helpers import eventually as wait_for
from tests.serverproc import ServerProcess


def value(result: dict[str, Any]) -> Any:
    """The primary result's Python value (our own code prints a repr)."""
    assert result["error"] is None, result["error"]
    return eval(result["items"][0]["text"])  # a repr produced by our test code


def test_host_paths_are_unreachable(
    api: httpx.Client, sandbox: dict[str, Any], server: ServerProcess
) -> None:
    marker = secrets.token_hex(8)
    host_secret = server.data_dir / f"host-{marker}"
    host_secret.write_text(marker)
    other = api.post("/v1/sandboxes", json={}).json()["id"]
    run(api, other, code=f"open('/home/user/neighbour', 'w').write({marker!r})")
    try:
        targets = [
            "/etc/shadow",
            str(host_secret),
            str(server.data_dir / "admin.key"),
            str(server.data_dir / "sandcastle.db"),
            f"/run/sandcastle/{instance_name(server.data_dir)}/{other}/root/home/user/neighbour",
            str(server.data_dir / "sandboxes" / other / "layer" / "upper" / "home/user/neighbour"),
            "/proc/1/root/etc/hostname",
            "/proc/1/root" + str(host_secret),
            "/home/user/../../.." + str(host_secret),
        ]
        code = (
            "import os\n"
            f"marker = {marker!r}\n"
            f"targets = {targets!r}\n"
            "os.symlink(targets[1], '/tmp/link-to-host')\n"
            "targets.append('/tmp/link-to-host')\n"
            "leaks = []\n"
            "for t in targets:\n"
            "    try:\n"
            "        data = open(t).read()\n"
            "    except OSError:\n"
            "        continue\n"
            "    if marker in data or t == '/etc/shadow':\n"
            "        leaks.append(t)\n"
            "writes = []\n"
            "for t in ('/etc/passwd', '/usr/bin/python3', '/opt/sandcastle/agent-venv/bin/python',"
            " '/run/sandcastle/agent.sock', '/opt/sandcastle/app/sandcastle/agent/main.py'):\n"
            "    try:\n"
            "        open(t, 'a').write('#')\n"
            "        writes.append(t)\n"
            "    except OSError:\n"
            "        pass\n"
            "try:\n"
            "    init_root = open('/proc/1/root/etc/hostname').read().strip()\n"
            "except PermissionError:\n"
            "    init_root = 'denied'\n"
            "(leaks, writes, init_root)"
        )
        leaks, writes, init_root = value(run(api, sandbox["id"], code=code))
        assert leaks == []
        assert writes == []
        # /proc/1 is the agent's init on both backends, which is not dumpable, so its root is
        # not even the sandbox's to read.
        assert init_root == "denied"
        assert host_secret.read_text() == marker
    finally:
        host_secret.unlink()
        api.delete(f"/v1/sandboxes/{other}")


def test_privileged_syscalls_are_refused(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    code = (
        "import ctypes, errno, os, socket\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def err(rc):\n"
        "    return 'ok' if rc == 0 else errno.errorcode.get(ctypes.get_errno(), '?')\n"
        "out = {}\n"
        "out['ptrace'] = err(libc.ptrace(16, 1, 0, 0))\n"
        "out['mount'] = err(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))\n"
        "out['umount'] = err(libc.umount2(b'/proc', 2))\n"
        "out['unshare_user'] = err(libc.unshare(0x10000000))\n"
        "out['unshare_net'] = err(libc.unshare(0x40000000))\n"
        "out['setns'] = err(libc.setns(os.open('/proc/self/ns/net', os.O_RDONLY), 0))\n"
        "out['kexec_load'] = err(libc.syscall(246, 0, 0, 0, 0))\n"
        "out['init_module'] = err(libc.syscall(175, 0, 0, b''))\n"
        "out['finit_module'] = err(libc.syscall(313, 0, b'', 0))\n"
        "out['bpf'] = err(libc.syscall(321, 0, 0, 0))\n"
        "out['keyctl'] = err(libc.syscall(250, 0, 0, 0, 0, 0))\n"
        "out['reboot'] = err(libc.syscall(169, 0xfee1dead, 672274793, 0x1234567, 0))\n"
        "try:\n"
        "    socket.socket(socket.AF_PACKET, socket.SOCK_RAW); out['raw'] = 'ok'\n"
        "except OSError as e:\n"
        "    out['raw'] = errno.errorcode.get(e.errno, '?')\n"
        "try:\n"
        "    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); out['icmp'] = 'ok'\n"
        "except OSError as e:\n"
        "    out['icmp'] = errno.errorcode.get(e.errno, '?')\n"
        "for name, path in (('sys', '/sys/kernel/mm/transparent_hugepage/enabled'),\n"
        "                   ('procsys', '/proc/sys/kernel/hostname'), ('sysrq', '/proc/sysrq-trigger')):\n"
        "    try:\n"
        "        open(path, 'w').write('x'); out[name] = 'ok'\n"
        "    except OSError as e:\n"
        "        out[name] = errno.errorcode.get(e.errno, '?')\n"
        "out['caps'] = [l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0]\n"
        "out['no_new_privs'] = libc.prctl(39, 0, 0, 0, 0)\n"  # PR_GET_NO_NEW_PRIVS
        "out"
    )
    out = value(run(api, sandbox["id"], code=code))
    caps, nnp = out.pop("caps"), out.pop("no_new_privs")
    assert all(result != "ok" for result in out.values()), out
    assert int(caps, 16) == 0
    assert nnp == 1


def test_fork_bomb_is_contained(
    api: httpx.Client, server: ServerProcess, fresh: Any, backend: str
) -> None:
    sid = fresh()
    pids = cgroup_dir("pids", sid)
    bomb = (
        # Every process, children included, forks until one is refused (then all stop) or for
        # 30 s: exponential. In a lean interpreter of its own, so the process limit stops it.
        "import subprocess, sys\n"
        "BOMB = '''\n"
        "import os, time\n"
        "end = time.time() + 30\n"
        "parent = os.getpid()\n"
        "while time.time() < end and not os.path.exists('/tmp/refused'):\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        open('/tmp/refused', 'w').close()\n"
        "if os.getpid() != parent:\n"
        "    os._exit(0)\n"
        "print(int(os.path.exists('/tmp/refused')))\n"
        "'''\n"
        "done = subprocess.run([sys.executable, '-S', '-c', BOMB], capture_output=True, text=True)\n"
        "(done.returncode, int(done.stdout or -1))"
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(run, api, sid, code=bomb, timeout_ms=60_000)
        time.sleep(1)
        # The server keeps answering while the bomb runs, and the host's limit holds.
        for _ in range(5):
            assert httpx.get(server.url + "/v1/health", timeout=10).status_code == 200
            limit = int((pids / "pids.max").read_text())
            assert int((pids / "pids.current").read_text()) <= limit
        result = future.result(timeout=120)
    # The limit bites: forks are refused rather than the host's process table filling. Under
    # bwrap the host's pids cgroup refuses them; under gVisor the Sentry does (RLIMIT_NPROC),
    # before the host limit, which must leave room for the Sentry's own threads.
    if backend == "bwrap":
        assert value(result) == (0, 1)  # the bomb exited normally, stopped by a refused fork
        assert int((pids / "pids.events").read_text().split()[1]) > 0
    elif result["error"] is not None:
        # Under gVisor every task costs memory in use (a bomb of ~500: up to ~2 GB, freed a
        # while after the tasks exit): the agent's memory guard may stop it first, killing
        # the kernel and its tree. Contained either way.
        assert result["error"]["name"] == "OutOfMemoryError", result["error"]
    else:
        assert value(result) == (0, 1)

    # The sandbox survives its bomb (once its tasks are gone, new kernels start again).
    def answers() -> bool:
        response = api.post(f"/v1/sandboxes/{sid}/execute", json={"code": "6 * 7"})
        return response.status_code == 200 and response.json()["items"] == [
            {"is_primary": True, "text": "42"}
        ]

    wait_for(answers, timeout=60, interval=1)
    assert api.delete(f"/v1/sandboxes/{sid}").json()["status"] == "destroyed"


def test_cpu_hog_is_held_to_its_quota_and_neighbours_keep_working(
    api: httpx.Client, fresh: Any
) -> None:
    hog = fresh(vcpus=1)
    neighbour = fresh()
    hog_code = (
        "import threading, time\n"
        "def spin():\n"
        "    end = time.time() + 8\n"
        "    while time.time() < end: pass\n"
        "ts = [threading.Thread(target=spin) for _ in range(4)]\n"
        "[t.start() for t in ts]"
    )
    run(api, hog, code="import multiprocessing")  # warm the context
    usage = cgroup_dir("cpuacct", hog) / "cpuacct.usage"
    run(api, hog, code=hog_code)  # threads keep spinning after the execute returns
    start_cpu, start = int(usage.read_text()), time.monotonic()
    results = [run(api, neighbour, code="sum(range(1000))") for _ in range(10)]
    time.sleep(max(0.0, 2.0 - (time.monotonic() - start)))
    cores = (int(usage.read_text()) - start_cpu) / 1e9 / (time.monotonic() - start)
    assert all(r["items"] == [{"is_primary": True, "text": "499500"}] for r in results)
    assert cores < 1.2, f"hog used {cores:.2f} cores with vcpus=1"


def test_memory_bomb_in_shm_and_heap_is_killed(api: httpx.Client, fresh: Any, backend: str) -> None:
    sid = fresh(memory_mb=256)
    for code in (
        "x = bytearray(1024 * 1024 * 1024)",
        "f = open('/dev/shm/fill', 'wb')\nwhile True:\n    f.write(b'x' * (16 << 20))",
    ):
        result = run(api, sid, code=code, timeout_ms=60_000)
        assert result["error"] is not None
        assert result["error"]["name"] in ("OutOfMemoryError", "MemoryError", "OSError"), result[
            "error"
        ]
    usage = int((cgroup_dir("memory", sid) / "memory.max_usage_in_bytes").read_text())
    # The host limit held: 256 MB under bwrap; under gVisor 256 MB and the Sentry's share,
    # which the bombs never reach because the agent's guard kills the kernel first.
    limit = int((cgroup_dir("memory", sid) / "memory.limit_in_bytes").read_text())
    assert usage <= limit
    if backend == "bwrap":
        assert limit == 256 * 1024 * 1024
    after = api.get(f"/v1/sandboxes/{sid}").json()
    assert after["oom_kills"] >= 1
    assert after["status"] == "running"  # the sandbox itself survives its bombs


def test_disk_fill_stops_at_disk_mb_and_spares_the_host(
    api: httpx.Client, server: ServerProcess, fresh: Any
) -> None:
    sid = fresh(disk_mb=80)
    image = server.data_dir / "sandboxes" / sid / "layer.img"
    result = value(
        run(
            api,
            sid,
            code=(
                "import errno\n"
                "try:\n"
                "    with open('/home/user/big', 'wb') as f:\n"
                "        while True: f.write(b'y' * (1 << 20))\n"
                "except OSError as e:\n"
                "    r = errno.errorcode[e.errno]\n"
                "r"
            ),
        )
    )
    assert result == "ENOSPC"
    allocated = os.stat(image).st_blocks * 512
    assert allocated <= 80 * 1024 * 1024


def test_killing_the_agent_marks_the_sandbox_error_and_spares_the_server(
    api: httpx.Client, server: ServerProcess, fresh: Any
) -> None:
    sid = fresh()
    response = api.post(
        f"/v1/sandboxes/{sid}/execute", json={"code": "import os, signal; os.kill(os.getppid(), 9)"}
    )
    assert response.status_code in (200, 409, 502)
    wait_for(lambda: api.get(f"/v1/sandboxes/{sid}").json()["status"] == "error")
    assert httpx.get(server.url + "/v1/health").status_code == 200
    other = fresh()
    assert run(api, other, code="6 * 7")["items"] == [{"is_primary": True, "text": "42"}]


def test_flood_of_stdout_is_truncated_without_blowing_up_the_server(
    api: httpx.Client, server: ServerProcess, sandbox: dict[str, Any]
) -> None:
    assert server.proc is not None
    rss_before = _rss_kb(server.proc.pid)
    result = run(
        api,
        sandbox["id"],
        code="import sys\nfor _ in range(100):\n    sys.stdout.write('z' * 100_000 + '\\n')",
    )
    total = sum(len(chunk) for chunk in result["logs"]["stdout"])
    assert total < 1_200_000
    assert "output truncated" in result["logs"]["stdout"][-1]
    assert _rss_kb(server.proc.pid) - rss_before < 100_000


def test_tampering_with_the_agent_socket_does_not_confuse_the_server(
    api: httpx.Client, server: ServerProcess, sandbox: dict[str, Any]
) -> None:
    sid = sandbox["id"]
    ctx = run(api, sid, code="anchor = 'kept'")["context_id"]
    code = (
        "import socket, struct, json\n"
        "def attempt(payload):\n"
        "    s = socket.socket(socket.AF_UNIX)\n"
        "    s.connect('/run/sandcastle/agent.sock')\n"
        "    s.settimeout(2)\n"
        "    try:\n"
        "        s.sendall(payload)\n"
        "        return s.recv(100)\n"
        "    except OSError:\n"
        "        return b''\n"
        "    finally:\n"
        "        s.close()\n"
        "attempt(b'garbage that is not a frame')\n"
        f"attempt(struct.pack('>I', {protocol.MAX_FRAME_BYTES + 1}) + b'x' * 1000)\n"
        "attempt(struct.pack('>I', 0xFFFFFFFF))\n"
        "attempt(struct.pack('>I', 5) + b'[1,2]')\n"
        "attempt(struct.pack('>I', 12) + b'\\xff\\xfe not utf8')\n"
        # A well-formed hello from user code: it must not take the agent's place.
        "hello = json.dumps({'type': 'hello', 'version': 1, 'sandbox_id': 'x', 'contexts': []})\n"
        "attempt(struct.pack('>I', len(hello)) + hello.encode())\n"
        "'done'"
    )
    assert value(run(api, sid, code=code)) == "done"
    assert httpx.get(server.url + "/v1/health").status_code == 200
    after = run(api, sid, code="anchor", context_id=ctx)
    assert after["items"] == [{"is_primary": True, "text": "'kept'"}]


def test_sandbox_cannot_reach_the_server_port_even_by_its_socket(
    api: httpx.Client, server: ServerProcess, sandbox: dict[str, Any]
) -> None:
    code = (
        "import socket\n"
        "s = socket.socket(); s.settimeout(2)\n"
        "try:\n"
        f"    s.connect(('127.0.0.1', {server.port})); r = 'open'\n"
        "except OSError as e:\n"
        "    r = type(e).__name__\n"
        "r"
    )
    assert value(run(api, sandbox["id"], code=code)) != "open"
    # and the host side of the channel is a Unix socket only the sandbox's agent can reach
    with socket.socket() as probe:
        probe.settimeout(1)
        assert probe.connect_ex(("127.0.0.1", server.port)) == 0  # the server itself is up


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


#: Calls and socket families beyond what a program needs: each answer must be a refusal.
_BEYOND_THE_ALLOWLIST = """
import ctypes, errno, socket
libc = ctypes.CDLL(None, use_errno=True)
def err(rc):
    return 'ok' if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), '?')
params = ctypes.create_string_buffer(120)
out = {
    'io_uring_setup': err(libc.syscall(425, 8, params)),
    'modify_ldt': err(libc.syscall(154, 0, params, 16)),
    'memfd_secret': err(libc.syscall(447, 0)),
    'userfaultfd': err(libc.syscall(323, 0)),
    'pidfd_getfd': err(libc.syscall(438, 0, 0, 0)),
    'personality_read_implies_exec': err(libc.syscall(135, 0x0400000)),
    'personality_no_aslr': err(libc.syscall(135, 0x0040000)),
    'lookup_dcookie': err(libc.syscall(212, 0, 0, 0)),
    'kcmp': err(libc.syscall(312, 1, 1, 0, 0, 0)),
}
for name, family, kind, proto in [
    ('vsock', 40, socket.SOCK_STREAM, 0), ('alg', 38, socket.SOCK_SEQPACKET, 0),
    ('key', 15, socket.SOCK_RAW, 2), ('packet', 17, socket.SOCK_RAW, 0),
    ('netlink_audit', 16, socket.SOCK_RAW, 9), ('netlink_uevent', 16, socket.SOCK_RAW, 15),
    ('tipc', 30, socket.SOCK_RDM, 0), ('rds', 21, socket.SOCK_SEQPACKET, 0),
]:
    out[name] = err(libc.socket(family, kind, proto))
pair = (ctypes.c_int * 2)()
for name, family, kind in [('tipc', 30, socket.SOCK_SEQPACKET), ('vsock', 40, socket.SOCK_STREAM)]:
    out['socketpair_' + name] = err(libc.socketpair(family, kind, 0, pair))
# What programs need still works.
needed = {
    'socketpair_unix': err(libc.socketpair(1, socket.SOCK_STREAM, 0, pair)),
    'inet': err(libc.socket(2, socket.SOCK_STREAM, 0)),
    'netlink_route': err(libc.socket(16, socket.SOCK_RAW, 0)),
}
(out, needed)
"""


def test_calls_and_socket_families_beyond_the_allowlist_are_refused(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    refused, needed = value(run(api, sandbox["id"], code=_BEYOND_THE_ALLOWLIST))

    assert {name: answer for name, answer in refused.items() if answer == "ok"} == {}
    assert needed == dict.fromkeys(needed, "ok")


def test_oversized_requests_are_refused_before_the_server_holds_them(
    api: httpx.Client, sandbox: dict[str, Any], server: ServerProcess
) -> None:
    sid = sandbox["id"]
    huge = "x" * (11 * 2**20)  # past the 10 MiB a route reads whole
    attempts = {
        "create, huge metadata": api.post("/v1/sandboxes", json={"metadata": {"k": huge}}),
        "create, metadata past its bound": api.post(
            "/v1/sandboxes", json={"metadata": {"k": "v" * 20_000}}
        ),
        "execute, code past its bound": api.post(
            f"/v1/sandboxes/{sid}/execute", json={"code": "#" * 2_000_001}
        ),
        "execute, env_vars past their bound": api.post(
            f"/v1/sandboxes/{sid}/execute",
            json={"code": "1", "env_vars": {f"V{i}": "x" * 1024 for i in range(200)}},
        ),
        "run, huge body": api.post(f"/v1/sandboxes/{sid}/code/runs", json={"code": huge}),
    }
    statuses = {what: response.status_code for what, response in attempts.items()}
    assert statuses == {
        "create, huge metadata": 413,
        "create, metadata past its bound": 422,
        "execute, code past its bound": 422,
        "execute, env_vars past their bound": 422,
        "run, huge body": 413,
    }
    for response in attempts.values():  # a clear error in the route's documented shape
        body = response.json()
        assert "detail" in body or "message" in body, response.text
    # Nothing was made or stored: the org's sandboxes are the ones it had.
    listed = api.get("/v1/sandboxes", params={"limit": 200}).json()["items"]
    assert all(len(json.dumps(s["metadata"])) < 1000 for s in listed)
