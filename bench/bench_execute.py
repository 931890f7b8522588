"""Execution latency per language through a real server, beside bare ``jupyter_client`` baselines.

Run by hand from the repository root (as root, with the python template built)::

    SANDCASTLE_TEST_TEMPLATES_DIR=build/templates .venv/bin/python -m bench.bench_execute [--iterations 20]

Through HTTP against ``sandcastle serve``, in one sandbox (2048 MB, so a TypeScript spare kernel is
kept) and one of the default 512 MB (none is):

- ``execute 1+1``: one ``POST …/execute`` round trip in a warm context, Python and TypeScript;
- ``new context``: ``POST …/contexts`` per language, with the agent's spare kernel ready (the
  bench waits for the spare to be replaced between samples), and TypeScript without a spare;
- ``stream first event``: ``POST …/execute/stream`` of ``1+1`` until its first event line;

and, in the same run on the host, the baselines with bare ``jupyter_client``: ipykernel (IPC, as
the agent uses) and Deno's kernel (TCP, the same ``deno`` binary the template carries): kernel
start until ready, and a warm ``execute_interactive("1+1")``. Prints medians and p95 (nearest
rank) in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from jupyter_client.kernelspec import KernelSpecManager

from bench.bench_skeleton import destroy_leftovers
from bench.common import host_baselines, p95
from sandcastle.runtime.templates.recipes import _DENO_KERNELSPEC
from tests.serverproc import ServerProcess, templates_dir

#: How long the agent gets to replace a spare kernel between context-creation samples.
SPARE_SETTLE_S = {"python": 1.5, "typescript": 2.0}


def find_deno() -> Path:
    candidates = [
        Path(shutil.which("deno") or "/nonexistent"),
        templates_dir() / "python" / "rootfs" / "opt" / "venv" / "bin" / "deno",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SystemExit("no deno binary on the host (pip install deno, or build the template)")


def host_kernelspecs(root: Path) -> KernelSpecManager:
    """A kernelspec directory with the template's Deno spec, pointed at a host deno."""
    spec = json.loads(json.dumps(_DENO_KERNELSPEC))
    spec["argv"][0] = str(find_deno())
    spec["env"]["DENO_DIR"] = str(root / "deno-dir")
    (root / "kernels" / "deno").mkdir(parents=True)
    (root / "kernels" / "deno" / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(root / "kernels")])


def execute(api: httpx.Client, sandbox_id: str, context_id: str) -> float:
    started = time.perf_counter()
    response = api.post(
        f"/v1/sandboxes/{sandbox_id}/execute", json={"code": "1+1", "context_id": context_id}
    )
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    assert response.json()["items"] == [{"is_primary": True, "text": "2"}], response.text
    return elapsed


def new_context(api: httpx.Client, sandbox_id: str, language: str) -> tuple[str, float]:
    started = time.perf_counter()
    response = api.post(f"/v1/sandboxes/{sandbox_id}/contexts", json={"language": language})
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return str(response.json()["id"]), elapsed


def stream_first_event(api: httpx.Client, sandbox_id: str, context_id: str) -> float:
    url = f"/v1/sandboxes/{sandbox_id}/execute/stream"
    started = time.perf_counter()
    with api.stream("POST", url, json={"code": "1+1", "context_id": context_id}) as response:
        response.raise_for_status()
        lines = response.iter_lines()
        first = next(line for line in lines if line)
        elapsed = (time.perf_counter() - started) * 1000
        assert json.loads(first)["type"] == "execution_count", first
        for _ in lines:
            pass
    return elapsed


def server_runs(api: httpx.Client, iterations: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {}
    big = api.post("/v1/sandboxes", json={"memory_mb": 2048, "timeout_ms": 3_600_000})
    small = api.post("/v1/sandboxes", json={"timeout_ms": 3_600_000})
    big.raise_for_status()
    small.raise_for_status()
    big_id, small_id = str(big.json()["id"]), str(small.json()["id"])
    try:
        for language in ("python", "typescript"):
            context_id, _ = new_context(api, big_id, language)
            for _ in range(3):
                execute(api, big_id, context_id)  # warm-up
            samples[f"execute 1+1 {language}"] = [
                execute(api, big_id, context_id) for _ in range(iterations)
            ]
            samples[f"stream first event {language}"] = [
                stream_first_event(api, big_id, context_id) for _ in range(iterations)
            ]
            creates = []
            time.sleep(SPARE_SETTLE_S[language])
            for _ in range(iterations):
                created, elapsed = new_context(api, big_id, language)
                creates.append(elapsed)
                api.delete(f"/v1/sandboxes/{big_id}/contexts/{created}").raise_for_status()
                time.sleep(SPARE_SETTLE_S[language])
            samples[f"new context {language}"] = creates
        cold = []
        for _ in range(min(iterations, 10)):
            created, elapsed = new_context(api, small_id, "typescript")
            cold.append(elapsed)
            api.delete(f"/v1/sandboxes/{small_id}/contexts/{created}").raise_for_status()
        samples["new context ts, 512 MB (cold)"] = cold
    finally:
        api.delete(f"/v1/sandboxes/{big_id}")
        api.delete(f"/v1/sandboxes/{small_id}")
    return samples


def line(label: str, samples: list[float]) -> str:
    return f"  {label:<36}{statistics.median(samples):>9.1f}{p95(samples):>9.1f}{len(samples):>6}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    n: int = args.iterations
    if not (templates_dir() / "python" / "manifest.json").exists():
        raise SystemExit(f"the python template is not built in {templates_dir()}")

    scratch = Path(tempfile.mkdtemp(prefix="sc-bench-"))
    try:
        specs = host_kernelspecs(scratch)
        baselines: dict[str, list[float]] = {}
        for kernel in ("python3", "deno"):
            starts, trips = host_baselines(kernel, n, scratch, specs)
            baselines[f"{kernel} kernel start (ready)"] = starts
            baselines[f"{kernel} execute_interactive 1+1"] = trips
        server = ServerProcess(scratch / "server")
        server.start()
        try:
            with server.client() as api:
                samples = server_runs(api, n)
        finally:
            try:
                server.destroy_all()
            finally:
                server.stop()
                destroy_leftovers(server.data_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    header = f"  {'':<36}{'median':>9}{'p95':>9}{'n':>6}"
    print(f"iterations: {n}   (ms; p95 is nearest rank)")
    print("sandcastle (HTTP, bwrap sandbox)")
    print(header)
    for label, values in samples.items():
        print(line(label, values))
    print("baseline (host, bare jupyter_client)")
    print(header)
    for label, values in baselines.items():
        print(line(label, values))


if __name__ == "__main__":
    main()
