"""Cold and warm execution latency through a real server, beside bare ``jupyter_client`` baselines.

Run by hand from the repository root (as root, with the python template built)::

    .venv/bin/python -m bench.bench_skeleton [--iterations 20]

For each of N iterations it measures, through HTTP against ``sandcastle serve``:

- ``create → first result``: ``POST /v1/sandboxes`` then ``POST …/execute {"code": "1+1"}``;
- ``warm execute``: one ``1+1`` round trip in that sandbox's context, now warm;

and, in the same run on the host with this venv's ipykernel, the baselines:

- ``kernel start``: ``KernelManager.start_kernel`` until the client is ready;
- ``execute_interactive``: one ``1+1`` round trip in a warm kernel (``BlockingKernelClient``).

Sandboxes are destroyed as it goes, and the server's warm pool at the end. Prints medians and p95 (nearest rank) in milliseconds.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import host_baselines, p95
from tests.serverproc import ServerProcess, templates_dir


def execute(api: httpx.Client, sandbox_id: str, **body: Any) -> dict[str, Any]:
    response = api.post(f"/v1/sandboxes/{sandbox_id}/execute", json={"code": "1+1", **body})
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    assert result["items"] == [{"is_primary": True, "text": "2"}], result
    return result


def server_runs(api: httpx.Client, iterations: int) -> tuple[list[float], list[float], int]:
    """Per iteration: create → first ``1+1`` result, then one warm ``1+1`` round trip.

    Also counts the creates served from the server's warm pool.
    """
    cold: list[float] = []
    warm: list[float] = []
    pool_hits = 0
    for _ in range(iterations):
        started = time.perf_counter()
        response = api.post("/v1/sandboxes", json={"template": "python"})
        response.raise_for_status()
        created = response.json()
        sandbox_id = str(created["id"])
        pool_hits += bool((created.get("warm_pool_checkout") or {}).get("hit"))
        try:
            first = execute(api, sandbox_id)
            cold.append((time.perf_counter() - started) * 1000)
            context_id = first["context_id"]
            execute(api, sandbox_id, context_id=context_id)  # the first warm call pays for imports
            started = time.perf_counter()
            execute(api, sandbox_id, context_id=context_id)
            warm.append((time.perf_counter() - started) * 1000)
        finally:
            api.delete(f"/v1/sandboxes/{sandbox_id}")
    return cold, warm, pool_hits


def destroy_leftovers(data_dir: Path) -> None:
    """Destroy what outlives a stopped server: its warm-pool sandboxes, which the API never lists.

    A server that starts without records removes every sandbox of its data directory as an orphan.
    """
    for name in ("sandcastle.db", "sandcastle.db-wal", "sandcastle.db-shm"):
        (data_dir / name).unlink(missing_ok=True)
    sweeper = ServerProcess(data_dir, env={"SANDCASTLE_WARM_POOL": "{}"})
    sweeper.start()
    sweeper.stop()


def row(label: str, samples: list[float], base_label: str, base: list[float]) -> str:
    return (
        f"{label:<28}{statistics.median(samples):>9.1f}{p95(samples):>9.1f}   "
        f"{base_label:<30}{statistics.median(base):>9.1f}{p95(base):>9.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    n: int = args.iterations
    if not (templates_dir() / "python" / "manifest.json").exists():
        raise SystemExit(f"the python template is not built in {templates_dir()}")

    scratch = Path(tempfile.mkdtemp(prefix="sc-bench-"))
    try:
        starts, host_trips = host_baselines("python3", n, scratch)
        server = ServerProcess(scratch / "server")
        server.start()
        try:
            with server.client() as api:
                cold, warm, pool_hits = server_runs(api, n)
        finally:
            try:
                server.destroy_all()
            finally:
                server.stop()
                destroy_leftovers(server.data_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"iterations: {n}, warm-pool hits: {pool_hits}/{n}   (ms; p95 is nearest rank)")
    print(
        f"{'sandcastle (HTTP)':<28}{'median':>9}{'p95':>9}   {'baseline (host)':<30}{'median':>9}{'p95':>9}"
    )
    print(row("create → first result", cold, "kernel start (ready)", starts))
    print(row("warm execute 1+1", warm, "execute_interactive 1+1", host_trips))


if __name__ == "__main__":
    main()
