"""Lifecycle costs through a real server: warm-pool hit vs miss, pause/resume, density.

Run by hand from the repository root (as root, with the python template built)::

    .venv/bin/python -m bench.bench_lifecycle [--iterations 15] [--density 30]

Measures, in one run:

- create → first ``1+1`` result with a warm-pool hit (pool of 2, waiting for refill between
  iterations) and with a miss (``memory_mb`` differs from the pool's), median and p95;
- ``POST …/pause`` and ``POST …/resume`` latency, and the same freeze/thaw done directly on the
  sandbox's cgroup (the baseline: what the HTTP and bookkeeping add);
- density: N idle sandboxes, each with a live Python context holding a variable, created one after
  another; the memory each costs (cgroup ``memory.usage_in_bytes``, and the host's MemAvailable
  drop divided by N), and whether every one still answers afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.bench_skeleton import execute
from bench.common import p95
from tests.serverproc import ServerProcess


def wait_pool(api: httpx.Client, ready: int, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while api.get("/v1/health").json()["warm_pools"]["python"]["ready"] < ready:
        if time.monotonic() > end:
            raise RuntimeError("warm pool did not refill")
        time.sleep(0.1)


def create_first_result(api: httpx.Client, body: dict[str, object]) -> tuple[float, str, bool]:
    started = time.perf_counter()
    created = api.post("/v1/sandboxes", json=body)
    created.raise_for_status()
    sandbox = created.json()
    execute(api, sandbox["id"])
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, sandbox["id"], bool(sandbox.get("warm_pool_checkout", {}).get("hit"))


def mem_available_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    raise RuntimeError("no MemAvailable")


def cgroup(controller: str, sandbox_id: str) -> Path:
    (path,) = Path(f"/sys/fs/cgroup/{controller}/sandcastle").glob(f"*/{sandbox_id}")
    return path


def freeze_direct(sandbox_id: str) -> tuple[float, float]:
    state = cgroup("freezer", sandbox_id) / "freezer.state"

    def flip(target: str) -> float:
        started = time.perf_counter()
        state.write_text(target)
        while state.read_text().strip() != target:
            pass
        return (time.perf_counter() - started) * 1000

    return flip("FROZEN"), flip("THAWED")


def row(name: str, samples: list[float]) -> str:
    return f"{name:<38} {statistics.median(samples):>9.1f} {p95(samples):>9.1f}   n={len(samples)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--density", type=int, default=30)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sandcastle-bench-"))
    server = ServerProcess(work / "server", env={"SANDCASTLE_WARM_POOL": '{"python": 2}'})
    server.start()
    try:
        with server.client() as api:
            hits: list[float] = []
            misses: list[float] = []
            pauses: list[float] = []
            resumes: list[float] = []
            freezes: list[float] = []
            thaws: list[float] = []
            for _ in range(args.iterations):
                wait_pool(api, 2)
                elapsed, sid, hit = create_first_result(api, {})
                (hits if hit else misses).append(elapsed)
                started = time.perf_counter()
                api.post(f"/v1/sandboxes/{sid}/pause").raise_for_status()
                pauses.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                api.post(f"/v1/sandboxes/{sid}/resume").raise_for_status()
                resumes.append((time.perf_counter() - started) * 1000)
                frozen, thawed = freeze_direct(sid)
                freezes.append(frozen)
                thaws.append(thawed)
                execute(api, sid)  # still works after all that
                api.delete(f"/v1/sandboxes/{sid}")
                elapsed, sid, hit = create_first_result(api, {"memory_mb": 384})
                assert not hit
                misses.append(elapsed)
                api.delete(f"/v1/sandboxes/{sid}")

            print(f"{'ms':<38} {'median':>9} {'p95':>9}")
            print(row("create → first result, pool hit", hits))
            print(row("create → first result, pool miss", misses))
            print(row("pause (HTTP)", pauses))
            print(row("resume (HTTP)", resumes))
            print(row("baseline: cgroup freeze, direct", freezes))
            print(row("baseline: cgroup thaw, direct", thaws))

            wait_pool(api, 2)
            before = mem_available_kb()
            ids: list[str] = []
            usage: list[int] = []
            for i in range(args.density):
                created = api.post("/v1/sandboxes", json={"timeout_ms": 3_600_000})
                created.raise_for_status()
                sid = created.json()["id"]
                ids.append(sid)
                result = api.post(
                    f"/v1/sandboxes/{sid}/execute", json={"code": f"state = list(range({i}))"}
                )
                result.raise_for_status()
            time.sleep(2)
            for sid in ids:
                usage.append(int((cgroup("memory", sid) / "memory.usage_in_bytes").read_text()))
            after = mem_available_kb()
            alive = sum(
                1
                for sid in ids
                if api.post(f"/v1/sandboxes/{sid}/execute", json={"code": "1"}).status_code == 200
            )
            print(
                f"\ndensity: {len(ids)} idle sandboxes with a live Python context, "
                f"{alive} answering afterwards"
            )
            print(
                f"  cgroup memory per sandbox: median {statistics.median(usage) / 2**20:.0f} MiB, "
                f"max {max(usage) / 2**20:.0f} MiB"
            )
            print(
                f"  host MemAvailable drop per sandbox: {(before - after) / len(ids) / 1024:.0f} MiB "
                f"(total {(before - after) / 1024:.0f} MiB)"
            )
            print(
                f"  → this {mem_available_kb() // 1024} MiB-available host would hold about "
                f"{int(mem_available_kb() / max(1, (before - after) / len(ids)))} more"
            )
            for sid in ids:
                api.delete(f"/v1/sandboxes/{sid}")
    finally:
        server.purge()


if __name__ == "__main__":
    main()
