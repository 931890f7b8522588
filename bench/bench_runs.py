"""Asynchronous code runs: latency beside synchronous ``/execute``, and throughput.

Run by hand from the repository root (as root, with the python template built)::

    SANDCASTLE_TEST_TEMPLATES_DIR=build/templates .venv/bin/python -m bench.bench_runs \
        [--iterations 50] [--runs 200]

Through HTTP against ``sandcastle serve``:

- ``submit → completed``: ``POST …/code/runs {"code": "1+1"}`` on a warm context, then ``GET``
  the run every 2 ms until it is finished (client-side, so it includes up to one poll interval),
  and the server's own ``completed_at − created_at`` for the same runs;
- the baseline in the same run: ``POST …/execute {"code": "1+1"}`` on a warm context;
- throughput: ``--runs`` trivial runs submitted as fast as 8 client threads can, spread over 4
  contexts of one sandbox (the default per-sandbox limit is 4), and the same across ten
  sandboxes; runs per second from the first submit until the last run finished, plus one
  context alone (runs one at a time by definition).

Prints medians and p95 (nearest rank) in milliseconds, and runs per second.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import shutil
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.bench_skeleton import destroy_leftovers
from bench.common import p95
from tests.serverproc import ServerProcess, templates_dir

POLL_S = 0.002
FINISHED = {"succeeded", "failed", "cancelled"}


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def context(api: httpx.Client, sandbox_id: str) -> str:
    response = api.post(f"/v1/sandboxes/{sandbox_id}/contexts", json={})
    response.raise_for_status()
    return str(response.json()["id"])


def wait_run(api: httpx.Client, sandbox_id: str, run_id: str) -> dict[str, Any]:
    while True:
        got: dict[str, Any] = api.get(f"/v1/sandboxes/{sandbox_id}/code/runs/{run_id}").json()
        if got["status"] in FINISHED:
            if got["status"] != "succeeded":
                raise SystemExit(f"run {run_id} {got['status']}: {got['failure_reason']}")
            return got
        time.sleep(POLL_S)


def latencies(api: httpx.Client, sandbox_id: str, n: int) -> dict[str, list[float]]:
    ctx = context(api, sandbox_id)
    api.post(f"/v1/sandboxes/{sandbox_id}/execute", json={"code": "0", "context_id": ctx})
    client_side: list[float] = []
    server_side: list[float] = []
    execute: list[float] = []
    for _ in range(n):
        started = time.perf_counter()
        response = api.post(
            f"/v1/sandboxes/{sandbox_id}/code/runs", json={"code": "1+1", "context_id": ctx}
        )
        response.raise_for_status()
        done = wait_run(api, sandbox_id, response.json()["id"])
        client_side.append((time.perf_counter() - started) * 1000)
        server = parse(done["completed_at"]) - parse(done["created_at"])
        server_side.append(server.total_seconds() * 1000)

        started = time.perf_counter()
        response = api.post(
            f"/v1/sandboxes/{sandbox_id}/execute", json={"code": "1+1", "context_id": ctx}
        )
        response.raise_for_status()
        execute.append((time.perf_counter() - started) * 1000)
    return {"client": client_side, "server": server_side, "execute": execute}


def throughput(api: httpx.Client, targets: list[tuple[str, str]], runs: int) -> float:
    """Runs per second: ``runs`` submitted round-robin over ``(sandbox, context)`` targets."""

    def submit(i: int) -> tuple[str, str]:
        sandbox_id, ctx = targets[i % len(targets)]
        response = api.post(
            f"/v1/sandboxes/{sandbox_id}/code/runs", json={"code": f"{i}+1", "context_id": ctx}
        )
        response.raise_for_status()
        return sandbox_id, str(response.json()["id"])

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        submitted = list(pool.map(submit, range(runs)))
    pending = {sandbox_id for sandbox_id, _ in submitted}
    while pending:
        for sandbox_id in list(pending):
            waiting = (
                api.get(
                    f"/v1/sandboxes/{sandbox_id}/code/runs",
                    params={"status": "queued", "limit": 1},
                ).json()["items"]
                or api.get(
                    f"/v1/sandboxes/{sandbox_id}/code/runs",
                    params={"status": "running", "limit": 1},
                ).json()["items"]
            )
            if not waiting:
                pending.discard(sandbox_id)
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    for sandbox_id, run_id in submitted[:: max(1, runs // 20)]:
        wait_run(api, sandbox_id, run_id)  # spot check: they succeeded
    return runs / elapsed


def row(label: str, samples: list[float]) -> str:
    return f"{label:<44}{statistics.median(samples):>9.1f}{p95(samples):>9.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    if not (templates_dir() / "python" / "manifest.json").exists():
        raise SystemExit(f"the python template is not built in {templates_dir()}")

    scratch = Path(tempfile.mkdtemp(prefix="sc-bench-runs-"))
    try:
        # No per-key rate limit: the bench measures the runs, not the limiter.
        server = ServerProcess(scratch / "server", env={"SANDCASTLE_RATE_LIMIT_PER_S": "0"})
        server.start()
        try:
            with server.client() as api:
                body = {"timeout_ms": 3_600_000}
                one = api.post("/v1/sandboxes", json=body).json()["id"]
                lat = latencies(api, one, args.iterations)
                four = [(one, context(api, one)) for _ in range(4)]
                single = throughput(api, four[:1], args.runs // 2)
                per_sandbox = throughput(api, four, args.runs)
                ten = [api.post("/v1/sandboxes", json=body).json()["id"] for _ in range(10)]
                spread = throughput(api, [(s, context(api, s)) for s in ten], args.runs * 2)
        finally:
            try:
                server.destroy_all()
            finally:
                server.stop()
                destroy_leftovers(server.data_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"iterations: {args.iterations}   (ms; p95 is nearest rank)")
    print(f"{'':<44}{'median':>9}{'p95':>9}")
    print(row("run submit → completed (client, 2 ms polls)", lat["client"]))
    print(row("run completed_at − created_at (server)", lat["server"]))
    print(row("baseline: POST /execute 1+1", lat["execute"]))
    print()
    print("throughput, trivial runs (runs/s):")
    print(f"  one context, one sandbox ({args.runs // 2} runs)        {single:>8.1f}")
    print(f"  four contexts, one sandbox ({args.runs} runs)       {per_sandbox:>8.1f}")
    print(f"  one context each, ten sandboxes ({args.runs * 2} runs)  {spread:>8.1f}")


if __name__ == "__main__":
    main()
