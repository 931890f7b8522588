"""Load: N concurrent clients loop create → executes → upload/download → delete against a real
server, and what is left afterwards.

Each client, until the time is up: creates a sandbox, runs five executes in it (the first makes
its context), uploads 1 MB and downloads it back (checking the bytes), then deletes it. Printed
per request kind: count, errors, median and p95 latency; overall requests/s; errors by status
and type; the server's peak RSS; and leftovers once the clients stopped and the server was given
a reconcile pass: records not ``destroyed``, sandbox cgroups and processes still on the host.

    .venv/bin/python -m bench.bench_load --clients 50 --seconds 600 [--backend bwrap]
        [--database-url postgresql+asyncpg://… | --postgres]   # default: SQLite

Run it by hand (it is not part of the suite); it starts and purges a server of its own, and with
``--postgres`` a throw-away PostgreSQL cluster too (the test suite's, tuned for speed over
durability: ``fsync`` off).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import p95
from tests import pgcluster
from tests.serverproc import ServerProcess

PAYLOAD = os.urandom(1 << 20)
KINDS = ("create", "execute", "upload", "download", "delete")


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    errors_by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    created: set[str] = field(default_factory=set)


async def timed(
    tally: Tally, kind: str, request: Awaitable[httpx.Response]
) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await request
    except httpx.HTTPError as exc:
        tally.errors[f"{kind}: {type(exc).__name__}"] += 1
        tally.errors_by_kind[kind] += 1
        return None
    tally.latencies[kind].append((time.perf_counter() - started) * 1000)
    if response.status_code >= 400:
        try:
            type_ = response.json().get("type", "?")
        except ValueError:
            type_ = "?"
        tally.errors[f"{kind}: {response.status_code} {type_}"] += 1
        tally.errors_by_kind[kind] += 1
        return None
    return response


async def client_loop(client: httpx.AsyncClient, tally: Tally, until: float) -> None:
    while time.monotonic() < until:
        created = await timed(tally, "create", client.post("/v1/sandboxes", json={}))
        if created is None:
            await asyncio.sleep(0.5)
            continue
        sid = created.json()["id"]
        tally.created.add(sid)
        base = f"/v1/sandboxes/{sid}"
        context: str | None = None
        for i in range(5):
            body: dict[str, object] = {"code": f"x = {i}\nx * 2"}
            if context is not None:
                body["context_id"] = context
            done = await timed(tally, "execute", client.post(f"{base}/execute", json=body))
            if done is not None:
                context = done.json().get("context_id", context)
        params = {"path": "/home/user/load.bin"}
        await timed(
            tally, "upload", client.put(f"{base}/files/content", params=params, content=PAYLOAD)
        )
        got = await timed(tally, "download", client.get(f"{base}/files/content", params=params))
        if got is not None and got.content != PAYLOAD:
            tally.errors["download: wrong bytes"] += 1
        await timed(tally, "delete", client.delete(base))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def host_leftovers(created: set[str]) -> tuple[int, int]:
    """Sandbox cgroups, and processes whose cgroup names a sandbox, still on the host."""
    groups = sum(1 for sid in created for _ in Path("/sys/fs/cgroup").glob(f"*/sandcastle/*/{sid}"))
    processes = 0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                text = (proc / "cgroup").read_text()
            except OSError:
                continue
            processes += any(sid in text for sid in created)
    return groups, processes


async def drive(server: ServerProcess, clients: int, seconds: float) -> None:
    tally = Tally()
    assert server.proc is not None
    peak_rss = rss_kb(server.proc.pid)
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    async with httpx.AsyncClient(
        base_url=server.url, headers=headers, timeout=300, limits=limits
    ) as client:
        until = time.monotonic() + seconds
        started = time.perf_counter()
        loops = [asyncio.create_task(client_loop(client, tally, until)) for _ in range(clients)]
        while not all(loop.done() for loop in loops):
            await asyncio.sleep(1)
            peak_rss = max(peak_rss, rss_kb(server.proc.pid))
        await asyncio.gather(*loops)
        elapsed = time.perf_counter() - started
        await asyncio.sleep(5)  # a reconcile pass or two
        statuses: collections.Counter[str] = collections.Counter()
        for sid in tally.created:
            got = await client.get(f"/v1/sandboxes/{sid}", params={"fields": "id,status"})
            statuses[got.json().get("status", f"HTTP {got.status_code}")] += 1

    requests = sum(len(v) for v in tally.latencies.values()) + sum(tally.errors_by_kind.values())
    print(f"{clients} clients, {elapsed:.0f} s, {requests} requests, {requests / elapsed:.1f}/s")
    print(f"{'kind':<10} {'count':>7} {'errors':>7} {'median ms':>10} {'p95 ms':>10}")
    for kind in KINDS:
        samples = tally.latencies.get(kind, [])
        median = statistics.median(samples) if samples else float("nan")
        high = p95(samples) if samples else float("nan")
        errors = tally.errors_by_kind[kind]
        print(f"{kind:<10} {len(samples):>7} {errors:>7} {median:>10.1f} {high:>10.1f}")
    print("errors:", dict(tally.errors) or "none")
    not_destroyed = {k: v for k, v in statuses.items() if k != "destroyed"}
    groups, processes = host_leftovers(tally.created)
    print(f"leftovers: records not destroyed {not_destroyed or 0}, cgroups {groups}, ", end="")
    print(f"processes {processes}; server peak RSS {peak_rss / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--backend", default="bwrap")
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--database-url", default=None)
    store.add_argument("--postgres", action="store_true", help="start a throw-away cluster")
    args = parser.parse_args()
    env = {
        "SANDCASTLE_RUNTIME": args.backend,
        "SANDCASTLE_WARM_POOL": "{}",
        # The load, not the per-key limits, is measured; capacity above the client count.
        "SANDCASTLE_RATE_LIMIT_PER_S": "0",
        "SANDCASTLE_ORG_MAX_CONCURRENT_SANDBOXES": str(args.clients * 2),
    }
    workdir = Path(tempfile.mkdtemp(prefix="sandcastle-load-"))
    workdir.chmod(0o755)  # the cluster runs as ``postgres``, which must reach its directory
    with contextlib.ExitStack() as stack:
        if args.postgres:
            args.database_url = stack.enter_context(postgres(workdir / "postgres"))
        if args.database_url:
            env["SANDCASTLE_DATABASE_URL"] = args.database_url
        server = ServerProcess(workdir / "server", env=env)
        server.start()
        stack.callback(server.purge)
        asyncio.run(drive(server, args.clients, args.seconds))


@contextlib.contextmanager
def postgres(directory: Path) -> Iterator[str]:
    """A throw-away cluster with one empty database; its URL."""
    bin_dir = pgcluster.bindir()
    if bin_dir is None:
        raise SystemExit("PostgreSQL's server is not installed (apt-get install postgresql)")
    cluster = pgcluster.Cluster(directory, bin_dir)
    cluster.start()
    try:
        yield asyncio.run(pgcluster.create_database(cluster.url, "load"))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
