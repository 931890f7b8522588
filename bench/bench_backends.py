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
- ``upload`` / ``download`` of a ``--file-mb`` file (``PUT``/``GET …/files/content``) with
  ``curl`` (httpx's own CPU, ~50 MB/s here, would be what is measured), in MB/s, beside the
  host's own ``cp`` of it;
- ``density`` (``--density N``, off by default): N sandboxes, each with a live Python context
  holding a variable, left alone for ``--idle-s``: the host's idle CPU (``/proc/stat``) and
  memory in use (``MemAvailable``) beside the same reading before any was made, then every one
  answers its variable.

and, on the host in the same run, the baselines: bare ``jupyter_client`` kernel start and warm
``execute_interactive("1+1")``. Prints medians and p95 (nearest rank) in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
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
    #: ``--density``: sandboxes made, host idle CPU % before and with them, host memory in use
    #: (MiB) before and with them, and how many answered afterwards.
    density: tuple[int, float, float, float, float, int] | None = None


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


def curl(*args: str) -> None:
    subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", *args], check=True)


def transfers(api: httpx.Client, source: Path, figures: Figures, rounds: int) -> None:
    size_mb = source.stat().st_size / 2**20
    body = {"template": "python", "disk_mb": int(size_mb) * 2 + 512}
    sid = api.post("/v1/sandboxes", json=body).json()["id"]
    url = f"{str(api.base_url).rstrip('/')}/v1/sandboxes/{sid}/files/content?path=big.bin"
    auth = f"Authorization: {api.headers['Authorization']}"
    try:
        for _ in range(rounds):
            took = timed(lambda: curl("-H", auth, "-T", str(source), url))
            figures.upload_mb_s.append(size_mb / (took / 1000))
            took = timed(lambda: curl("-H", auth, url))
            figures.download_mb_s.append(size_mb / (took / 1000))
        info = api.get(f"/v1/sandboxes/{sid}/files/stat", params={"path": "big.bin"}).json()
        assert info["size"] == source.stat().st_size, info
    finally:
        api.delete(f"/v1/sandboxes/{sid}")


def host_cpu() -> tuple[int, int]:
    """Idle and total jiffies of the host since boot (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return values[3] + values[4], sum(values)


def host_idle_percent(seconds: float) -> float:
    idle0, total0 = host_cpu()
    time.sleep(seconds)
    idle1, total1 = host_cpu()
    return 100 * (idle1 - idle0) / max(1, total1 - total0)


def host_memory_mib() -> float:
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    total, available = (int(fields[k].split()[0]) for k in ("MemTotal", "MemAvailable"))
    return (total - available) / 1024


def density(api: httpx.Client, figures: Figures, count: int, idle_s: float) -> None:
    """``count`` idle sandboxes with a live context each: what they cost the host."""
    idle_before, memory_before = host_idle_percent(idle_s), host_memory_mib()
    made: list[tuple[str, str]] = []
    try:
        for i in range(count):
            # Long-lived: making them all takes minutes on gVisor.
            body = {"template": "python", "timeout_ms": 3_600_000}
            sid = api.post("/v1/sandboxes", json=body).json()["id"]
            made.append((sid, run(api, sid, code=f"kept = {i}")["context_id"]))
        time.sleep(2)  # the last creates' work settles
        idle_with, memory_with = host_idle_percent(idle_s), host_memory_mib()
        answered = sum(
            run(api, sid, code="kept", context_id=context)["items"][0]["text"] == str(i)
            for i, (sid, context) in enumerate(made)
        )
        figures.density = (count, idle_before, idle_with, memory_before, memory_with, answered)
    finally:
        for sid, _context in made:
            api.delete(f"/v1/sandboxes/{sid}")


def measure(
    backend: str, iterations: int, idle_s: float, source: Path, snapshots: bool, crowd: int
) -> Figures:
    figures = Figures()
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-{backend}-"))
    # The server's own reconcile interval (the tests' is shorter), so the density figure
    # includes what a real server spends watching its sandboxes.
    env = {
        "SANDCASTLE_RUNTIME": backend,
        "SANDCASTLE_WARM_POOL": '{"python": 1}',
        "SANDCASTLE_RECONCILE_INTERVAL_S": "2.0",
    }
    server = ServerProcess(data_dir, env=env)
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
            if crowd:
                density(api, figures, crowd, idle_s)
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
    parser.add_argument("--density", type=int, default=0, help="idle sandboxes to crowd")
    args = parser.parse_args()

    print(f"{'ms':<34}{'median':>9}{'p95':>9}", flush=True)
    with tempfile.TemporaryDirectory() as root:
        source = Path(root) / "payload.bin"
        with source.open("wb") as out:
            for _ in range(args.file_mb):
                out.write(os.urandom(2**20))
        for backend in args.backends.split(","):
            # Printed as soon as measured: a later backend's failure loses nothing.
            report(
                backend,
                measure(
                    backend,
                    args.iterations,
                    args.idle_s,
                    source,
                    snapshots=backend == "gvisor",
                    crowd=args.density,
                ),
                args.file_mb,
            )
        starts, trips = host_baselines("python3", max(5, args.iterations // 2), Path(root))
        copies = []
        for _ in range(3):
            took = timed(lambda: shutil.copyfile(source, Path(root) / "copy.bin"))
            copies.append(args.file_mb / (took / 1000))
    print("--- host, bare jupyter_client")
    print(line("execute_interactive 1+1", trips))
    print(line("kernel start until ready", starts))
    print(rate(f"cp of {args.file_mb} MB (MB/s)", copies))


def report(backend: str, f: Figures, file_mb: int) -> None:
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
    print(rate(f"upload {file_mb} MB (MB/s)", f.upload_mb_s))
    print(rate(f"download {file_mb} MB (MB/s)", f.download_mb_s))
    if f.density is not None:
        count, idle0, idle1, memory0, memory1, answered = f.density
        print(
            f"{'density: sandboxes, answered':<34}{count:>9}{answered:>9}\n"
            f"{'  host idle CPU % (before, with)':<34}{idle0:>9.1f}{idle1:>9.1f}\n"
            f"{'  host memory MiB (before, with)':<34}{memory0:>9.0f}{memory1:>9.0f}"
            f"   ({(memory1 - memory0) / max(1, count):.0f} MiB each)"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
