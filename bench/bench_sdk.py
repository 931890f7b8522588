"""What our Python SDK costs over plain HTTP: the SDK beside the same calls made with httpx, in
one run, and a 100 MB file both ways beside a host ``cp``.

Run by hand from the repository root (as root, with the python template built)::

    SANDCASTLE_TEST_TEMPLATES_DIR=build/templates .venv/bin/python -m bench.bench_sdk [--iterations 30]

For each backend, one server (no warm pool), one sandbox, and in it, each pair taken in turn:

- ``1+1``: ``sandbox.run_code`` in a warm context beside ``POST …/execute`` with httpx;
- ``1+1 streamed``: ``run_code(on_stdout=…)`` (``/execute/stream``, NDJSON parsed into events);
- ``true``: ``sandbox.commands.run(["true"])`` beside ``POST …/processes/run``;
- ``1 MiB write``/``read``: ``sandbox.files.write``/``read`` beside ``PUT``/``GET …/files/content``;
- ``100 MB upload``/``download``: ``files.upload``/``download`` with a progress callback beside
  httpx streaming the same file (fewer rounds), and a host ``cp`` of it as the floor.

Prints medians and p95 (nearest rank) in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.common import p95, pair, timed
from sandcastle_sdk import Sandbox, Sandcastle
from tests.serverproc import ServerProcess

Figures = dict[str, tuple[list[float], list[float]]]


def measure(backend: str, iterations: int, scratch: Path) -> Figures:
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-sdk-{backend}-"))
    server = ServerProcess(
        data_dir, env={"SANDCASTLE_RUNTIME": backend, "SANDCASTLE_WARM_POOL": "{}"}
    )
    server.start(timeout=300)
    big = scratch / "big.bin"
    figures: Figures = {}
    try:
        with Sandcastle(server.url, server.admin_key) as client, server.client() as api:
            sandbox = Sandbox.create(timeout=900, client=client)
            base = f"/v1/sandboxes/{sandbox.id}"
            context = sandbox.contexts.create().id

            def raw_execute() -> None:
                body = {"code": "1+1", "context_id": context}
                assert api.post(f"{base}/execute", json=body).json()["items"][0]["text"] == "2"

            figures["1+1"] = pair(
                lambda: sandbox.run_code("1+1", context=context), raw_execute, iterations
            )
            figures["1+1 streamed"] = pair(
                lambda: sandbox.run_code("1+1", context=context, on_stdout=lambda _: None),
                raw_execute,
                iterations,
            )

            def raw_true() -> None:
                done = api.post(f"{base}/processes/run", json={"cmd": "true"})
                assert done.json()["process"]["exit_code"] == 0

            figures["true"] = pair(lambda: sandbox.commands.run(["true"]), raw_true, iterations)
            payload = os.urandom(1 << 20)
            content = f"{base}/files/content"
            figures["1 MiB write"] = pair(
                lambda: sandbox.files.write("/home/user/sdk.bin", payload),
                lambda: api.put(content, params={"path": "/home/user/raw.bin"}, content=payload),
                iterations,
            )
            figures["1 MiB read"] = pair(
                lambda: sandbox.files.read("/home/user/sdk.bin"),
                lambda: api.get(content, params={"path": "/home/user/raw.bin"}).content,
                iterations,
            )
            with open(big, "wb") as f:
                for _ in range(100):
                    f.write(os.urandom(1 << 20))
            rounds = max(3, iterations // 10)

            def raw_upload() -> None:
                with open(big, "rb") as f:
                    params = {"path": "/home/user/raw-big.bin"}
                    api.put(content, params=params, content=f).raise_for_status()

            def raw_download() -> None:
                params = {"path": "/home/user/raw-big.bin"}
                with (
                    api.stream("GET", content, params=params) as response,
                    open(scratch / "raw-copy.bin", "wb") as f,
                ):
                    for chunk in response.iter_bytes(1 << 20):
                        f.write(chunk)

            def progress(done: int, total: int | None) -> None:
                pass

            figures["100 MB upload"] = pair(
                lambda: sandbox.files.upload(big, "/home/user/big.bin", progress=progress),
                raw_upload,
                rounds,
            )
            figures["100 MB download"] = pair(
                lambda: sandbox.files.download(
                    "/home/user/big.bin", scratch / "copy.bin", progress=progress
                ),
                raw_download,
                rounds,
            )
            figures["100 MB host cp"] = (
                [timed(lambda: shutil.copyfile(big, scratch / "cp.bin")) for _ in range(rounds)],
                [],
            )
            sandbox.kill()
    finally:
        server.destroy_all()
        server.purge()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--backends", default="gvisor,bwrap")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        results = {b: measure(b, args.iterations, Path(scratch)) for b in args.backends.split(",")}
    print(f"{'ms':<18}{'SDK median':>12}{'p95':>9}{'httpx median':>14}{'p95':>9}")
    for backend, figures in results.items():
        print(f"--- {backend}")
        for name, (sdk, raw) in figures.items():
            theirs = f"{statistics.median(raw):>14.1f}{p95(raw):>9.1f}" if raw else ""
            print(f"{name:<18}{statistics.median(sdk):>12.1f}{p95(sdk):>9.1f}{theirs}")


if __name__ == "__main__":
    main()
