"""Memory snapshots (gVisor) beside bwrap: creates, hibernate/resume, snapshots and forks.

Run by hand from the repository root (as root, with ``runsc`` and the python template built)::

    .venv/bin/python bench/bench_snapshots.py [--iterations 5]

One run starts five real servers (``tests.serverproc.ServerProcess``), each with its own
temporary data directory and ``build/templates`` as its templates:

- ``bwrap`` and ``gvisor`` with ``SANDCASTLE_WARM_POOL={}``: cold creates. The gvisor one
  prepares the python template's memory image at start-up; it is measured only once
  ``<data_dir>/template-images/*/checkpoint.img`` exists;
- ``gvisor`` without a template image: its ``<data_dir>/template-images`` is a plain file, so
  the start-up preparation boots the template but cannot save it (it logs "could not prepare
  template"; the bench waits for that line), and creates boot Python cold under gVisor. (Naming
  another default template does not work: ``serve`` builds a missing default template first.);
- ``bwrap`` and ``gvisor`` with a warm pool of one python sandbox, refilled between iterations.

Measured, median and p95 (nearest rank) in milliseconds:

1. create → first ``1+1`` result, cold (gVisor with and without the template image);
2. the same with a warm-pool hit;
3. gVisor, with 10 MiB and 200 MiB of NumPy state in a context: ``POST …/hibernate``,
   ``POST …/resume``, resume → the first result reading the state, ``POST …/snapshots``, and
   a fork (``POST /v1/sandboxes {"snapshot_id"}`` → the first result reading the state in the
   fork's context); image sizes: the snapshots' ``size_bytes`` and the hibernation image on disk
   (``<data_dir>/snapshots/<snapshot_id>`` while hibernated);
4. bwrap's freezer ``POST …/pause`` / ``POST …/resume`` with the same state, for comparison;
5. the baseline, on the host in the same run: bare ``jupyter_client`` kernel start and ``1+1``.

Every sandbox and snapshot is deleted as it goes; the servers are destroyed and purged at the
end, also on failure.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root holds ``bench`` and ``tests``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.common import host_baselines, p95
from tests.serverproc import ServerProcess, templates_dir

MiB = 1024 * 1024
#: NumPy state sizes (bytes) and the sandbox memory each needs.
STATES = ((10 * MiB, 512), (200 * MiB, 1024))
LONG_TIMEOUT_MS = 1_800_000


class BenchError(RuntimeError):
    """A request answered something else than the bench expected (kept verbatim for the report)."""


def check(response: httpx.Response, *expected: int) -> dict[str, Any]:
    if response.status_code not in expected:
        raise BenchError(
            f"{response.request.method} {response.request.url.path} → "
            f"{response.status_code}: {response.text[:2000]}"
        )
    if response.status_code == 204 or not response.content:
        return {}
    body: dict[str, Any] = response.json()
    return body


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def du(path: Path) -> int:
    """Bytes on disk under ``path`` (allocated blocks, like ``du``)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                total += os.lstat(full).st_blocks * 512
    return total


@dataclass
class Server:
    """One ``sandcastle serve`` of the run and the sandboxes and snapshots made on it."""

    label: str
    proc: ServerProcess
    sandboxes: set[str] = field(default_factory=set)
    snapshots: set[str] = field(default_factory=set)
    _api: httpx.Client | None = None

    @property
    def api(self) -> httpx.Client:
        if self._api is None:
            self._api = self.proc.client(timeout=300.0)
        return self._api

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        created = check(self.api.post("/v1/sandboxes", json=body), 201)
        self.sandboxes.add(created["id"])
        return created

    def execute(
        self, sandbox_id: str, code: str, expect: str | None, context_id: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"code": code, "timeout_ms": 300_000}
        if context_id is not None:
            body["context_id"] = context_id
        result = check(self.api.post(f"/v1/sandboxes/{sandbox_id}/execute", json=body), 200)
        if result.get("error") is not None:
            raise BenchError(f"execute {code!r} in {sandbox_id} raised: {result['error']}")
        if expect is not None and result.get("items") != [{"is_primary": True, "text": expect}]:
            raise BenchError(f"execute {code!r} in {sandbox_id} gave {result.get('items')}")
        return result

    def post(
        self, path: str, *expected: int, busy_retries: int = 20
    ) -> tuple[float, dict[str, Any]]:
        """Time one POST; a 409 *busy* (the agent still serving something) is retried, untimed."""
        for _ in range(busy_retries):
            started = time.perf_counter()
            response = self.api.post(path)
            took = elapsed_ms(started)
            if response.status_code == 409 and "running code" in response.text:
                time.sleep(0.25)
                continue
            return took, check(response, *expected)
        raise BenchError(f"POST {path}: still busy after {busy_retries} tries: {response.text}")

    def delete_sandbox(self, sandbox_id: str) -> None:
        check(self.api.delete(f"/v1/sandboxes/{sandbox_id}"), 200, 204, 404)
        self.sandboxes.discard(sandbox_id)

    def delete_snapshot(self, snapshot_id: str) -> None:
        check(self.api.delete(f"/v1/snapshots/{snapshot_id}"), 200, 204, 404)
        self.snapshots.discard(snapshot_id)

    def pool_ready(self, template: str = "python") -> int:
        health = check(self.api.get("/v1/health"), 200)
        return int(health["warm_pools"].get(template, {}).get("ready", 0))

    def wait_pool(self, ready: int = 1, timeout: float = 240.0) -> None:
        end = time.monotonic() + timeout
        while self.pool_ready() < ready:
            if time.monotonic() > end:
                raise BenchError(f"{self.label}: warm pool not refilled in {timeout:.0f} s")
            time.sleep(0.1)

    def template_image(self, timeout: float) -> int:
        """Wait for the template's memory image (gVisor prepares it in the background); its size."""
        images = self.proc.data_dir / "template-images"
        end = time.monotonic() + timeout
        while True:
            done = [
                d
                for d in (images.iterdir() if images.is_dir() else [])
                if not d.name.endswith(".partial") and (d / "checkpoint.img").exists()
            ]
            if done:
                return du(done[0])
            if time.monotonic() > end:
                raise BenchError(
                    f"{self.label}: no template image after {timeout:.0f} s; server log tail:\n"
                    + self.proc.log_path.read_text(errors="replace")[-3000:]
                )
            time.sleep(0.5)

    def wait_log(self, text: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while text not in self.proc.log_path.read_text(errors="replace"):
            if time.monotonic() > end:
                raise BenchError(f"{self.label}: {text!r} not logged in {timeout:.0f} s")
            time.sleep(0.5)

    def cleanup(self) -> None:
        """Delete what this run made, then destroy and purge everything of the data dir."""
        try:
            if self.proc.proc is not None and self.proc.proc.poll() is None:
                for snapshot_id in list(self.snapshots):
                    try:
                        self.delete_snapshot(snapshot_id)
                    except Exception as exc:  # noqa: BLE001 - cleanup goes on
                        print(f"cleanup: {self.label}: snapshot {snapshot_id}: {exc}")
                for sandbox_id in list(self.sandboxes):
                    try:
                        self.delete_sandbox(sandbox_id)
                    except Exception as exc:  # noqa: BLE001
                        print(f"cleanup: {self.label}: sandbox {sandbox_id}: {exc}")
                self.proc.destroy_all()
        except Exception as exc:  # noqa: BLE001
            print(f"cleanup: {self.label}: destroy_all: {exc}")
        finally:
            if self._api is not None:
                self._api.close()
            try:
                self.proc.purge()
            except Exception as exc:  # noqa: BLE001
                print(f"cleanup: {self.label}: purge: {exc}")
            leftovers = sorted((self.proc.data_dir / "sandboxes").glob("tpl_*"))
            if leftovers:
                # ``purge`` only knows ``sb_`` sandboxes: a template boot that a stop interrupted
                # would keep its mounts and cgroups.
                print(f"cleanup: {self.label}: destroying leftover template boots {leftovers}")
                asyncio.run(destroy_template_boots(self.proc.data_dir, [p.name for p in leftovers]))


async def destroy_template_boots(data_dir: Path, names: list[str]) -> None:
    from sandcastle.config import Settings
    from sandcastle.runtime.registry import create_runtime

    runtime = create_runtime(Settings(data_dir=data_dir), "gvisor")
    try:
        for name in names:
            await runtime.destroy(name)
    finally:
        await runtime.aclose()


@dataclass
class Results:
    rows: list[tuple[str, str, list[float]]] = field(default_factory=list)
    sizes: list[tuple[str, list[int]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, backend: str, label: str, samples: list[float]) -> None:
        self.rows.append((backend, label, samples))

    def print(self) -> None:
        print(f"\n{'backend':<16}{'ms':<52}{'median':>10}{'p95':>10}   n")
        for backend, label, samples in self.rows:
            if samples:
                print(
                    f"{backend:<16}{label:<52}{statistics.median(samples):>10.1f}"
                    f"{p95(samples):>10.1f}   {len(samples)}"
                )
            else:
                print(f"{backend:<16}{label:<52}{'—':>10}{'—':>10}   0")
        print(f"\n{'image sizes (MiB)':<68}{'median':>10}{'max':>10}   n")
        for label, sizes in self.sizes:
            print(
                f"{label:<68}{statistics.median(sizes) / MiB:>10.1f}"
                f"{max(sizes) / MiB:>10.1f}   {len(sizes)}"
            )
        for note in self.notes:
            print(f"note: {note}")


def cold_creates(server: Server, n: int) -> list[float]:
    samples: list[float] = []
    for _ in range(n):
        started = time.perf_counter()
        sandbox = server.create({"template": "python"})
        try:
            server.execute(sandbox["id"], "1+1", "2")
            samples.append(elapsed_ms(started))
            if (sandbox.get("warm_pool_checkout") or {}).get("hit"):
                raise BenchError(f"{server.label}: a cold create was served from a warm pool")
        finally:
            server.delete_sandbox(sandbox["id"])
    return samples


def warm_creates(server: Server, n: int, results: Results) -> list[float]:
    hits: list[float] = []
    misses = 0
    for _ in range(n):
        server.wait_pool(1)
        time.sleep(0.5)  # let the refill's own work settle
        started = time.perf_counter()
        sandbox = server.create({"template": "python"})
        try:
            server.execute(sandbox["id"], "1+1", "2")
            took = elapsed_ms(started)
            if (sandbox.get("warm_pool_checkout") or {}).get("hit"):
                hits.append(took)
            else:
                misses += 1
        finally:
            server.delete_sandbox(sandbox["id"])
    if misses:
        results.notes.append(f"{server.label}: {misses} of {n} warm-pool creates missed the pool")
    return hits


def state_code(size: int) -> str:
    return (
        "import numpy as np; "
        f"a = np.random.default_rng(1).integers(0, 255, size={size}, dtype=np.uint8)"
    )


READ_STATE = "int(a.nbytes)"


@contextmanager
def stateful_sandbox(server: Server, size: int, memory_mb: int) -> Iterator[tuple[str, str]]:
    sandbox = server.create(
        {"template": "python", "memory_mb": memory_mb, "timeout_ms": LONG_TIMEOUT_MS}
    )
    try:
        context_id = str(server.execute(sandbox["id"], state_code(size), None)["context_id"])
        server.execute(sandbox["id"], READ_STATE, str(size), context_id)
        yield sandbox["id"], context_id
    finally:
        server.delete_sandbox(sandbox["id"])


def gvisor_memory(server: Server, n: int, size: int, memory_mb: int, results: Results) -> None:
    tag = f"{size // MiB} MiB"
    hibernate: list[float] = []
    resume: list[float] = []
    resume_first: list[float] = []
    snapshot: list[float] = []
    fork_first: list[float] = []
    hibernation_sizes: list[int] = []
    snapshot_sizes: list[int] = []
    with stateful_sandbox(server, size, memory_mb) as (sid, ctx):
        for _ in range(n):
            took, body = server.post(f"/v1/sandboxes/{sid}/hibernate", 200)
            hibernate.append(took)
            image_id = body.get("snapshot_id")
            if body.get("status") != "paused" or not image_id:
                raise BenchError(f"hibernate answered {json.dumps(body)[:1000]}")
            hibernation_sizes.append(du(server.proc.data_dir / "snapshots" / str(image_id)))

            started = time.perf_counter()
            _, body = server.post(f"/v1/sandboxes/{sid}/resume", 200)
            resume.append(elapsed_ms(started))
            if body.get("status") != "running":
                raise BenchError(f"resume answered {json.dumps(body)[:1000]}")
            server.execute(sid, READ_STATE, str(size), ctx)
            resume_first.append(elapsed_ms(started))

            took, snap = server.post(f"/v1/sandboxes/{sid}/snapshots", 201)
            snapshot.append(took)
            server.snapshots.add(snap["id"])
            snapshot_sizes.append(int(snap["size_bytes"]))
            try:
                started = time.perf_counter()
                fork = server.create({"snapshot_id": snap["id"], "timeout_ms": LONG_TIMEOUT_MS})
                try:
                    contexts = check(server.api.get(f"/v1/sandboxes/{fork['id']}/contexts"), 200)
                    items = contexts.get("items", contexts.get("data", []))
                    if len(items) != 1:
                        raise BenchError(f"fork {fork['id']} has contexts {items}")
                    server.execute(fork["id"], READ_STATE, str(size), items[0]["id"])
                    fork_first.append(elapsed_ms(started))
                finally:
                    server.delete_sandbox(fork["id"])
            finally:
                server.delete_snapshot(snap["id"])
    results.add("gvisor", f"hibernate, {tag}", hibernate)
    results.add("gvisor", f"resume (hibernated), {tag}", resume)
    results.add("gvisor", f"resume → first result, {tag}", resume_first)
    results.add("gvisor", f"snapshot (sandbox runs on), {tag}", snapshot)
    results.add("gvisor", f"fork from snapshot → first result, {tag}", fork_first)
    results.sizes.append((f"gvisor hibernation image on disk, {tag}", hibernation_sizes))
    results.sizes.append((f"gvisor snapshot size_bytes, {tag}", snapshot_sizes))


def bwrap_freezer(server: Server, n: int, size: int, memory_mb: int, results: Results) -> None:
    tag = f"{size // MiB} MiB"
    pause: list[float] = []
    resume: list[float] = []
    resume_first: list[float] = []
    with stateful_sandbox(server, size, memory_mb) as (sid, ctx):
        for _ in range(n):
            took, body = server.post(f"/v1/sandboxes/{sid}/pause", 200)
            pause.append(took)
            if body.get("status") != "paused":
                raise BenchError(f"pause answered {json.dumps(body)[:1000]}")
            started = time.perf_counter()
            server.post(f"/v1/sandboxes/{sid}/resume", 200)
            resume.append(elapsed_ms(started))
            server.execute(sid, READ_STATE, str(size), ctx)
            resume_first.append(elapsed_ms(started))
    results.add("bwrap", f"pause (freezer), {tag}", pause)
    results.add("bwrap", f"resume (freezer), {tag}", resume)
    results.add("bwrap", f"resume → first result, {tag}", resume_first)


@contextmanager
def step(name: str) -> Iterator[None]:
    started = time.perf_counter()
    print(f"… {name}", flush=True)
    yield
    print(f"  done in {elapsed_ms(started) / 1000:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument(
        "--image-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for a gvisor server's template image",
    )
    args = parser.parse_args()
    n: int = args.iterations
    if not (templates_dir() / "python" / "manifest.json").exists():
        raise SystemExit(f"the python template is not built in {templates_dir()}")

    run_started = time.perf_counter()
    results = Results()
    scratch = Path(tempfile.mkdtemp(prefix="sc-bench-snap-"))
    quiet = {"SANDCASTLE_RECONCILE_INTERVAL_S": "2"}
    specs = {
        "bwrap-cold": {"SANDCASTLE_RUNTIME": "bwrap", "SANDCASTLE_WARM_POOL": "{}"},
        "gvisor-cold": {"SANDCASTLE_RUNTIME": "gvisor", "SANDCASTLE_WARM_POOL": "{}"},
        "gvisor-noimage": {"SANDCASTLE_RUNTIME": "gvisor", "SANDCASTLE_WARM_POOL": "{}"},
        "bwrap-pool": {"SANDCASTLE_RUNTIME": "bwrap", "SANDCASTLE_WARM_POOL": '{"python": 1}'},
        "gvisor-pool": {"SANDCASTLE_RUNTIME": "gvisor", "SANDCASTLE_WARM_POOL": '{"python": 1}'},
    }
    servers: dict[str, Server] = {}
    try:
        print(f"… baseline: bare jupyter_client kernel, {n} iterations", flush=True)
        starts, trips = host_baselines("python3", n, scratch)
        for label, env in specs.items():
            server = Server(label, ServerProcess(scratch / label, env={**quiet, **env}))
            servers[label] = server
            if label == "gvisor-noimage":
                server.proc.data_dir.mkdir(parents=True)
                (server.proc.data_dir / "template-images").write_text("no template images here\n")
            server.proc.start()
            runtime = check(server.api.get("/v1/health"), 200)["runtime"]
            if runtime != env["SANDCASTLE_RUNTIME"]:
                raise BenchError(f"{label}: server runs {runtime}, not {env['SANDCASTLE_RUNTIME']}")
        print(f"  5 servers up in {elapsed_ms(run_started) / 1000:.1f} s", flush=True)

        with step("waiting for the gvisor template images and the warm pools"):
            size = servers["gvisor-cold"].template_image(args.image_timeout)
            results.sizes.append(("gvisor template image (python) on disk", [size]))
            servers["gvisor-pool"].template_image(args.image_timeout)
            servers["gvisor-pool"].wait_pool(1)
            servers["bwrap-pool"].wait_pool(1)
            servers["gvisor-noimage"].wait_log("could not prepare template", args.image_timeout)
            if not (servers["gvisor-noimage"].proc.data_dir / "template-images").is_file():
                raise BenchError("gvisor-noimage prepared a template image after all")
        cold = (
            ("bwrap-cold", "bwrap", "create → first result, cold"),
            ("gvisor-cold", "gvisor", "create → first result, cold, template image"),
            ("gvisor-noimage", "gvisor", "create → first result, cold, no template image"),
        )
        for label, backend, row in cold:
            with step(f"cold creates, {label}"):
                results.add(backend, row, cold_creates(servers[label], n))
        for backend in ("bwrap", "gvisor"):
            with step(f"warm-pool creates, {backend}"):
                hits = warm_creates(servers[f"{backend}-pool"], n, results)
                results.add(backend, "create → first result, warm-pool hit", hits)
        for size, memory_mb in STATES:
            with step(f"bwrap freezer pause/resume, {size // MiB} MiB"):
                bwrap_freezer(servers["bwrap-cold"], n, size, memory_mb, results)
            with step(f"gvisor hibernate/resume/snapshot/fork, {size // MiB} MiB"):
                gvisor_memory(servers["gvisor-cold"], n, size, memory_mb, results)
        results.add("host", "baseline: kernel start until ready", starts)
        results.add("host", "baseline: execute_interactive 1+1", trips)
    finally:
        for server in servers.values():
            server.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)
        results.print()
        print(
            f"\niterations: {n}; p95 is nearest rank (with n=5 it is the maximum); "
            f"total {elapsed_ms(run_started) / 1000:.0f} s"
        )


if __name__ == "__main__":
    main()
