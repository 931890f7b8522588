"""File transfer throughput: a 200 MB file up and down through the server, beside baselines.

Run by hand from the repository root (as root, with the python template built)::

    SANDCASTLE_TEST_TEMPLATES_DIR=build/templates .venv/bin/python -m bench.bench_files [--mb 200] [--runs 3]

Prints the median MB/s of each way for:

- ``host disk``: ``cp`` of the file and a plain read of it on the host (the ceiling);
- ``agent link``: the same chunked, windowed protocol the server uses, straight into an agent
  running on the host (no HTTP, no sandbox): what the channel and agent cost;
- ``server``: ``PUT``/``GET /v1/sandboxes/{id}/files/content`` into a real sandbox over HTTP;

and the server process's peak memory growth (``VmHWM``) over the HTTP runs.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from sandcastle.services.files import CHUNK_BYTES, WINDOW, FileDownload, FileInfo, call, push_file
from tests.agent.conftest import start_agent
from tests.serverproc import ServerProcess

MB = 1024 * 1024


def make_file(path: Path, size_mb: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for _ in range(size_mb):
            block = os.urandom(MB)
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def median_rate(size_mb: int, seconds: list[float]) -> str:
    rates = [size_mb / s for s in seconds]
    return f"{statistics.median(rates):7.1f} MB/s  (runs: {', '.join(f'{r:.0f}' for r in rates)})"


def file_chunks(path: Path, size: int = 256 * 1024) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while block := f.read(size):
            yield block


def high_water_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def bench_host(source: Path, work: Path, runs: int) -> tuple[list[float], list[float]]:
    ups, downs = [], []
    target = work / "host-copy.bin"
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(["cp", str(source), str(target)], check=True)
        ups.append(time.perf_counter() - started)
        started = time.perf_counter()
        for _ in file_chunks(target, MB):
            pass
        downs.append(time.perf_counter() - started)
        target.unlink()
    return ups, downs


async def bench_agent_link(source: Path, digest: str, runs: int) -> tuple[list[float], list[float]]:
    async def body() -> AsyncIterator[bytes]:
        for block in file_chunks(source):
            yield block

    ups, downs = [], []
    async with start_agent("sb_benchfiles") as agent:
        target = str(agent.root / "home" / "big.bin")
        for _ in range(runs):
            started = time.perf_counter()
            opened = await call(agent.link, "file.write.open", {"path": target})
            await push_file(agent.link, str(opened["handle"]), body())
            ups.append(time.perf_counter() - started)

            started = time.perf_counter()
            reply = await call(agent.link, "file.read.open", {"path": target})
            download = FileDownload(
                agent.link, str(reply["handle"]), FileInfo.from_agent(reply["info"])
            )
            back = hashlib.sha256()
            async for block in download.chunks():
                back.update(block)
            downs.append(time.perf_counter() - started)
            assert back.hexdigest() == digest, "agent link round trip corrupted the file"
    return ups, downs


def bench_server(
    server: ServerProcess, source: Path, digest: str, runs: int
) -> tuple[list[float], list[float], int]:
    assert server.proc is not None
    with server.client(timeout=600) as api:
        created = api.post("/v1/sandboxes", json={"template": "python", "disk_mb": 2048})
        created.raise_for_status()
        sandbox_id = created.json()["id"]
        url = f"/v1/sandboxes/{sandbox_id}/files/content"
        before_kb = high_water_kb(server.proc.pid)
        ups, downs = [], []
        try:
            for _ in range(runs):
                started = time.perf_counter()
                r = api.put(url, params={"path": "big.bin"}, content=file_chunks(source))
                r.raise_for_status()
                ups.append(time.perf_counter() - started)
                started = time.perf_counter()
                back = hashlib.sha256()
                with api.stream("GET", url, params={"path": "big.bin"}) as r:
                    r.raise_for_status()
                    for block in r.iter_bytes():
                        back.update(block)
                downs.append(time.perf_counter() - started)
                assert back.hexdigest() == digest, "server round trip corrupted the file"
        finally:
            api.delete(f"/v1/sandboxes/{sandbox_id}")
        growth_kb = high_water_kb(server.proc.pid) - before_kb
    return ups, downs, growth_kb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="file size in MB")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-files-"))
    # No warm pool: every sandbox this benchmark starts is one it destroys.
    server = ServerProcess(work / "server", env={"SANDCASTLE_WARM_POOL": "{}"})
    try:
        source = work / "big.bin"
        digest = make_file(source, args.mb)
        print(f"file: {args.mb} MB random; chunk {CHUNK_BYTES // 1024} KiB, window {WINDOW}")
        print(f"{os.cpu_count()} CPUs; median of {args.runs} runs each\n")

        host_up, host_down = bench_host(source, work, args.runs)
        print(f"host disk   cp     {median_rate(args.mb, host_up)}")
        print(f"host disk   read   {median_rate(args.mb, host_down)}")

        link_up, link_down = asyncio.run(bench_agent_link(source, digest, args.runs))
        print(f"agent link  write  {median_rate(args.mb, link_up)}")
        print(f"agent link  read   {median_rate(args.mb, link_down)}")

        server.start()
        up, down, growth_kb = bench_server(server, source, digest, args.runs)
        print(f"server      PUT    {median_rate(args.mb, up)}")
        print(f"server      GET    {median_rate(args.mb, down)}")
        print(f"\nserver peak memory growth over the HTTP runs: {growth_kb / 1024:.0f} MB")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
