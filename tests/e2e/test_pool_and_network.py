"""Warm pools, outbound network, and deadlines across a restart."""

from __future__ import annotations

import contextlib
import http.server
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandcastle.runtime.bwrap import instance_name
from tests.e2e.executing import run
from tests.helpers import PROBE
from tests.helpers import eventually as wait_for
from tests.serverproc import ServerProcess


def pool_ready(api: httpx.Client) -> bool:
    return bool(api.get("/v1/health").json()["warm_pools"]["python"]["ready"] >= 1)


def test_warm_pool_hit_miss_and_invisibility(api: httpx.Client, server: ServerProcess) -> None:
    wait_for(lambda: pool_ready(api), timeout=60)
    instance_run = Path("/run/sandcastle") / instance_name(server.data_dir)
    known = {s["id"] for s in api.get("/v1/sandboxes", params={"limit": 200}).json()["items"]}
    pooled = {p.name for p in instance_run.glob("sb_*")} - known
    assert pooled, "a started pool sandbox exists on the host"
    for pool_sandbox in pooled:  # never visible to any org before checkout
        assert api.get(f"/v1/sandboxes/{pool_sandbox}").status_code == 404

    hit = api.post("/v1/sandboxes", json={"metadata": {"who": "hit"}})
    assert hit.status_code == 201, hit.text
    body = hit.json()
    try:
        assert body["warm_pool_checkout"] == {"hit": True, "id": "wp_python"}
        assert body["id"] in pooled
        assert body["metadata"] == {"who": "hit"}
        assert body["status"] == "running"
        # It has no earlier tenant's state: a fresh home and a working kernel.
        fresh = run(api, body["id"], code="import os; sorted(os.listdir('/home/user'))")
        assert fresh["error"] is None
        miss = api.post("/v1/sandboxes", json={"memory_mb": 256})
        assert miss.status_code == 201
        assert miss.json()["warm_pool_checkout"] == {"hit": False, "id": "wp_python"}
        api.delete(f"/v1/sandboxes/{miss.json()['id']}")
        wait_for(lambda: pool_ready(api), timeout=60)  # refilled in the background
    finally:
        api.delete(f"/v1/sandboxes/{body['id']}")


@pytest.fixture
def test_host() -> Iterator[str]:
    """An HTTP server on a test host of our own: a network namespace joined by a veth pair."""
    name = f"sct{uuid.uuid4().hex[:6]}"
    host_if, peer_if = f"{name}a", f"{name}b"
    address = "198.18.77.2"

    def sh(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True)

    sh("ip", "netns", "add", name)
    server: subprocess.Popen[bytes] | None = None
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        sh("ip", "link", "set", peer_if, "netns", name)
        sh("ip", "addr", "add", "198.18.77.1/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", name, "ip", "addr", "add", f"{address}/30", "dev", peer_if)
        sh("ip", "netns", "exec", name, "ip", "link", "set", peer_if, "up")
        sh("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                name,
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
                address,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            lambda: subprocess.run(
                ["ip", "netns", "exec", name, "python3", "-c",
                 f"import socket; socket.create_connection(('{address}', 8080), 1)"],
                capture_output=True,
            ).returncode == 0,
            timeout=10,
        )  # fmt: skip
        yield address
    finally:
        if server is not None:
            server.kill()
            server.wait()
        with contextlib.suppress(subprocess.CalledProcessError):
            sh("ip", "link", "del", host_if)
        sh("ip", "netns", "del", name)


@pytest.fixture
def loopback_server() -> Iterator[int]:
    """A server on the host's loopback, standing in for the control plane's ports."""
    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_internet_sandbox_reaches_out_but_not_the_host(
    api: httpx.Client, server: ServerProcess, test_host: str, loopback_server: int, backend: str
) -> None:
    created = api.post("/v1/sandboxes", json={"network": {"internet": True}})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    try:
        assert created.json()["network"] == {"internet": True}
        out = run(
            api,
            sid,
            code=PROBE + f"(probe({test_host!r}, 8080), probe('10.0.2.2', {server.port}),"
            f" probe('10.0.2.2', {loopback_server}), probe('127.0.0.1', {server.port}),"
            " sorted(__import__('os').listdir('/sys/class/net'))"
            " if __import__('os').path.exists('/sys/class/net') else None)",
        )
        assert out["error"] is None, out["error"]
        reached, host_api, host_loop, own_loop, _ = eval(out["items"][0]["text"])
        assert reached == "open"
        assert host_api != "open" and host_loop != "open" and own_loop != "open"
        fetch = f"import urllib.request; urllib.request.urlopen('http://{test_host}:8080/', timeout=5).status"
        fetched = run(api, sid, code=fetch)
        assert fetched["items"] == [{"is_primary": True, "text": "200"}]
        if backend == "gvisor":  # its host network cannot be saved: said up front
            refused = api.post(f"/v1/sandboxes/{sid}/hibernate")
            assert refused.status_code == 422, refused.text
            assert "network.internet" in refused.json()["detail"]
    finally:
        api.delete(f"/v1/sandboxes/{sid}")


def test_default_sandbox_has_no_route_out(
    api: httpx.Client, sandbox: dict[str, Any], test_host: str
) -> None:
    out = run(api, sandbox["id"], code=PROBE + f"probe({test_host!r}, 8080)")
    assert out["items"][0]["text"] != "'open'"


def test_deadlines_survive_a_restart(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"SANDCASTLE_WARM_POOL": "{}"})
    server.start()
    try:
        with server.client() as api:
            sid = api.post("/v1/sandboxes", json={"timeout_ms": 4000}).json()["id"]
            assert "warm_pool_checkout" not in api.get(f"/v1/sandboxes/{sid}").json()
        server.kill9()
        server.start()
        with server.client() as api:
            wait_for(
                lambda: api.get(f"/v1/sandboxes/{sid}").json()["status"] == "destroyed",
                timeout=30,
            )
            assert api.get(f"/v1/sandboxes/{sid}").json()["status_reason"] == "timeout"
    finally:
        server.purge()
