"""Sandboxes with outbound network, bwrap beside gVisor: what the internet costs a create.

Run by hand from the repository root (as root, with ``runsc``, ``slirp4netns`` and the python
template built)::

    .venv/bin/python bench/bench_network.py [--iterations 5]

One run starts two real servers (``bwrap``, ``gvisor``; no warm pool, so every create is cold)
and measures, median and p95 (nearest rank) in milliseconds:

1. create → first ``1+1``, without network (gVisor: from the template image);
2. create with ``{"network": {"internet": true}}`` → first ``1+1`` (gVisor: cold, since a
   sandbox on its own network namespace cannot restore the template image);
3. in such a sandbox, a TCP connect round trip through slirp4netns to the host's outward
   address (a listener of the bench's own, on the host side);
4. the baseline, in the same run: the same connect from the host itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root holds ``bench`` and ``tests``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import socket
import tempfile
import threading
import time

from bench.bench_snapshots import (
    BenchError,
    Results,
    Server,
    check,
    elapsed_ms,
    step,
)
from tests.serverproc import ServerProcess, templates_dir

CONNECTS = 20


def outward_address() -> str:
    """The host's address on its default route (what slirp4netns NATs a sandbox to)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
        return str(probe.getsockname()[0])


def listener(address: str) -> tuple[socket.socket, int]:
    """A TCP listener that accepts and closes, forever, on a thread of its own."""
    server = socket.socket()
    server.bind((address, 0))
    server.listen(64)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, int(server.getsockname()[1])


CONNECT_CODE = """
import json, socket, time
samples = []
for _ in range({n}):
    started = time.perf_counter()
    s = socket.create_connection(({host!r}, {port}), timeout=5)
    samples.append((time.perf_counter() - started) * 1000)
    s.close()
print(json.dumps(samples))
"""


def creates(server: Server, n: int, internet: bool) -> list[float]:
    samples: list[float] = []
    body = {"template": "python", "network": {"internet": internet}}
    for _ in range(n):
        started = time.perf_counter()
        sandbox = server.create(body)
        try:
            server.execute(sandbox["id"], "1+1", "2")
            samples.append(elapsed_ms(started))
        finally:
            server.delete_sandbox(sandbox["id"])
    return samples


def connects_inside(server: Server, host: str, port: int) -> list[float]:
    sandbox = server.create({"template": "python", "network": {"internet": True}})
    try:
        code = CONNECT_CODE.format(n=CONNECTS, host=host, port=port)
        result = server.execute(sandbox["id"], code, None)
        samples: list[float] = json.loads(result["logs"]["stdout"][0])
        return samples
    finally:
        server.delete_sandbox(sandbox["id"])


def connects_on_host(host: str, port: int) -> list[float]:
    samples: list[float] = []
    for _ in range(CONNECTS):
        started = time.perf_counter()
        socket.create_connection((host, port), timeout=5).close()
        samples.append(elapsed_ms(started))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args()
    n: int = args.iterations
    if not (templates_dir() / "python" / "manifest.json").exists():
        raise SystemExit(f"the python template is not built in {templates_dir()}")
    results = Results()
    scratch = Path(tempfile.mkdtemp(prefix="sc-bench-net-"))
    host = outward_address()
    tcp, port = listener(host)
    servers: list[Server] = []
    try:
        results.add("host", f"baseline: TCP connect to {host}", connects_on_host(host, port))
        for backend in ("bwrap", "gvisor"):
            env = {"SANDCASTLE_RUNTIME": backend, "SANDCASTLE_WARM_POOL": "{}"}
            server = Server(backend, ServerProcess(scratch / backend, env=env))
            servers.append(server)
            server.proc.start()
            if check(server.api.get("/v1/health"), 200)["runtime"] != backend:
                raise BenchError(f"the {backend} server runs another backend")
            if backend == "gvisor":
                server.template_image(120.0)
            with step(f"{backend}: creates without and with the internet"):
                results.add(backend, "create → first result, no network", creates(server, n, False))
                results.add(backend, "create → first result, internet", creates(server, n, True))
            with step(f"{backend}: TCP connects from inside"):
                samples = connects_inside(server, host, port)
                results.add(backend, f"TCP connect to {host} via slirp4netns", samples)
    finally:
        tcp.close()
        for server in servers:
            server.cleanup()
    results.print()


if __name__ == "__main__":
    main()
