"""gVisor beside bubblewrap on the path every user takes, with bare ``jupyter_client`` beside both.

Run by hand from the repository root (as root, with the python template built)::

    .venv/bin/python -m bench.bench_backends [--iterations 20] [--idle-s 10]

For each backend it starts ``sandcastle serve`` (warm pool of one) and measures through HTTP:

- ``warm 1+1``: one ``1+1`` round trip in a warm context, and the CFS throttling of the
  sandbox's cgroup over those round trips (``cpu.stat``: periods throttled, time throttled);
- ``pool hit → first result``: ``POST /v1/sandboxes`` taken from the warm pool, then the first
  ``1+1`` (a new context);
- ``cold → first result``: the same with resources no pool entry has (``memory_mb`` 768), so the
  sandbox boots (on gVisor: restored from the template image);
- ``idle``: a sandbox with one live Python context holding a variable, left alone: the CPU it
  uses (``cpuacct.usage`` over ``--idle-s``, % of one core) and its memory cgroup's usage;
- ``hibernate`` / ``resume → first result`` of a sandbox holding 10 MiB of state (backends with
  memory snapshots);
- ``upload`` / ``download`` of a ``--file-mb`` file (``PUT``/``GET …/files/content``), in MB/s,
  beside the host's own ``cp`` of it.

and, on the host in the same run, the baselines: bare ``jupyter_client`` kernel start and warm
``execute_interactive("1+1")``. Prints medians and p95 (nearest rank) in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.bench_skeleton import destroy_leftovers, execute
from bench.common import host_baselines, p95
from tests.e2e.executing import run
from tests.serverproc import ServerProcess

_CGROUPS = Path("/sys/fs/cgroup")


@dataclass
class Figures:
    warm: list[float] = field(default_factory=list)
    pool_hit: list[float] = field(default_factory=list)
    cold: list[float] = field(default_factory=list)
    throttled_periods: int = 0
    throttled_ms: float = 0.0
    idle_cpu_percent: float = 0.0
    idle_memory_mib: float = 0.0
    hibernate: list[float] = field(default_factory=list)
    resume: list[float] = field(default_factory=list)
    upload_mb_s: list[float] = field(default_factory=list)
    download_mb_s: list[float] = field(default_factory=list)


def cgroup(controller: str, sandbox_id: str) -> Path:
    (path,) = (_CGROUPS / controller / "sandcastle").glob(f"*/{sandbox_id}")
    return path


def cpu_stat(sandbox_id: str) -> dict[str, int]:
    text = (cgroup("cpu", sandbox_id) / "cpu.stat").read_text()
    return {key: int(value) for key, value in (line.split() for line in text.splitlines())}


def timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return (time.perf_counter() - started) * 1000


def wait_for_pool(api: httpx.Client, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pools = api.get("/v1/health").json()["warm_pools"]
        if all(p.get("ready", 0) >= p.get("target", 0) for p in pools.values()):
            return
        time.sleep(0.1)
    raise RuntimeError("the warm pool did not refill")


def first_result(api: httpx.Client, **body: Any) -> tuple[float, str, bool]:
    """Create → first ``1+1`` result: milliseconds, the sandbox, whether the pool served it."""
    started = time.perf_counter()
    response = api.post("/v1/sandboxes", json={"template": "python", **body})
    response.raise_for_status()
    created = response.json()
    execute(api, created["id"])
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, created["id"], bool((created.get("warm_pool_checkout") or {}).get("hit"))


#: 10 MiB of state a hibernation must save and a resume restore.
STATE = (
    "import numpy as np; "
    "state = np.random.default_rng(1).integers(0, 255, size=10 * 2**20, dtype=np.uint8)"
)


def hibernations(api: httpx.Client, figures: Figures, rounds: int) -> None:
    sid = api.post("/v1/sandboxes", json={"template": "python"}).json()["id"]
    try:
        context = run(api, sid, code=STATE)["context_id"]
        for _ in range(rounds):
            figures.hibernate.append(
                timed(lambda: api.post(f"/v1/sandboxes/{sid}/hibernate").raise_for_status())
            )
            started = time.perf_counter()
            api.post(f"/v1/sandboxes/{sid}/resume").raise_for_status()
            kept = run(api, sid, code="int(state.nbytes)", context_id=context)
            figures.resume.append((time.perf_counter() - started) * 1000)
            assert kept["items"][0]["text"] == str(10 * 2**20), kept
    finally:
        api.delete(f"/v1/sandboxes/{sid}")


def transfers(api: httpx.Client, source: Path, figures: Figures, rounds: int) -> None:
    size_mb = source.stat().st_size / 2**20
    body = {"template": "python", "disk_mb": int(size_mb) * 2 + 512}
    sid = api.post("/v1/sandboxes", json=body).json()["id"]
    url = f"/v1/sandboxes/{sid}/files/content"
    try:
        for _ in range(rounds):
            with source.open("rb") as data:
                took = timed(
                    lambda: api.put(
                        url, params={"path": "big.bin"}, content=data
                    ).raise_for_status()
                )
            figures.upload_mb_s.append(size_mb / (took / 1000))
            started = time.perf_counter()
            got = 0
            with api.stream("GET", url, params={"path": "big.bin"}) as response:
                response.raise_for_status()
                for block in response.iter_bytes(2**20):
                    got += len(block)
            took = (time.perf_counter() - started) * 1000
            assert got == source.stat().st_size
            figures.download_mb_s.append(size_mb / (took / 1000))
    finally:
        api.delete(f"/v1/sandboxes/{sid}")


def measure(backend: str, iterations: int, idle_s: float, source: Path, snapshots: bool) -> Figures:
    figures = Figures()
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-{backend}-"))
    server = ServerProcess(
        data_dir, env={"SANDCASTLE_RUNTIME": backend, "SANDCASTLE_WARM_POOL": '{"python": 1}'}
    )
    server.start(timeout=300)
    try:
        with server.client() as api:
            wait_for_pool(api)
            for _ in range(iterations):
                wait_for_pool(api)
                elapsed, sid, hit = first_result(api)
                if hit:
                    figures.pool_hit.append(elapsed)
                api.delete(f"/v1/sandboxes/{sid}")
            for _ in range(max(3, iterations // 4)):
                elapsed, sid, _hit = first_result(api, memory_mb=768)
                figures.cold.append(elapsed)
                api.delete(f"/v1/sandboxes/{sid}")

            sid = api.post("/v1/sandboxes", json={"template": "python"}).json()["id"]
            context = run(api, sid, code="kept = list(range(1000))")["context_id"]
            execute(api, sid, context_id=context)  # the first warm call pays for imports
            before = cpu_stat(sid)
            for _ in range(iterations):
                figures.warm.append(timed(lambda: execute(api, sid, context_id=context)))
            after = cpu_stat(sid)
            figures.throttled_periods = after["nr_throttled"] - before["nr_throttled"]
            figures.throttled_ms = (after["throttled_time"] - before["throttled_time"]) / 1e6

            time.sleep(2)  # let the last request's work settle
            usage = cgroup("cpuacct", sid) / "cpuacct.usage"
            start_ns, started = int(usage.read_text()), time.monotonic()
            time.sleep(idle_s)
            used_ns = int(usage.read_text()) - start_ns
            figures.idle_cpu_percent = 100 * used_ns / 1e9 / (time.monotonic() - started)
            memory = cgroup("memory", sid) / "memory.usage_in_bytes"
            figures.idle_memory_mib = int(memory.read_text()) / 2**20
            kept = run(api, sid, code="len(kept)", context_id=context)
            assert kept["items"][0]["text"] == "1000", kept
            api.delete(f"/v1/sandboxes/{sid}")

            if snapshots:
                hibernations(api, figures, max(3, iterations // 4))
            transfers(api, source, figures, 3)
    finally:
        server.stop()
        destroy_leftovers(data_dir)
    return figures


def line(label: str, samples: list[float]) -> str:
    if not samples:
        return f"{label:<34}{'—':>9}{'—':>9}"
    return f"{label:<34}{statistics.median(samples):>9.1f}{p95(samples):>9.1f}"


def rate(label: str, samples: list[float]) -> str:
    if not samples:
        return f"{label:<34}{'—':>9}"
    return f"{label:<34}{statistics.median(samples):>9.0f}   (runs: {', '.join(f'{r:.0f}' for r in samples)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--backends", default="gvisor,bwrap")
    parser.add_argument("--file-mb", type=int, default=200)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as root:
        source = Path(root) / "payload.bin"
        with source.open("wb") as out:
            for _ in range(args.file_mb):
                out.write(os.urandom(2**20))
        results = {
            b: measure(b, args.iterations, args.idle_s, source, snapshots=b == "gvisor")
            for b in args.backends.split(",")
        }
        starts, trips = host_baselines("python3", max(5, args.iterations // 2), Path(root))
        copies = []
        for _ in range(3):
            took = timed(lambda: shutil.copyfile(source, Path(root) / "copy.bin"))
            copies.append(args.file_mb / (took / 1000))

    print(f"{'ms':<34}{'median':>9}{'p95':>9}")
    for backend, f in results.items():
        print(f"--- {backend}")
        print(line("warm 1+1 via the API", f.warm))
        print(line("pool hit → first result", f.pool_hit))
        print(line("cold create → first result", f.cold))
        print(
            f"{'throttled over the warm 1+1s':<34}{f.throttled_periods:>9} periods, "
            f"{f.throttled_ms:.0f} ms"
        )
        print(f"{'idle: CPU (% of a core)':<34}{f.idle_cpu_percent:>9.2f}")
        print(f"{'idle: memory cgroup (MiB)':<34}{f.idle_memory_mib:>9.0f}")
        print(line("hibernate, 10 MiB of state", f.hibernate))
        print(line("resume → first result, 10 MiB", f.resume))
        print(rate(f"upload {args.file_mb} MB (MB/s)", f.upload_mb_s))
        print(rate(f"download {args.file_mb} MB (MB/s)", f.download_mb_s))
    print("--- host, bare jupyter_client")
    print(line("execute_interactive 1+1", trips))
    print(line("kernel start until ready", starts))
    print(rate(f"cp of {args.file_mb} MB (MB/s)", copies))


if __name__ == "__main__":
    main()
