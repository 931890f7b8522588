"""What speaking E2B's API costs: E2B's unmodified Python SDK beside our own API, in one run.

Run by hand from the repository root (as root, with the python template built)::

    SANDCASTLE_TEST_TEMPLATES_DIR=build/templates .venv/bin/python -m bench.bench_e2b [--iterations 30]

For each backend, one server (no warm pool), one sandbox, and in it:

- ``1+1``: ``sandbox.run_code`` in the default context (E2B's ``/execute``, NDJSON) beside one
  ``POST /v1/sandboxes/{id}/execute`` in a warm context of our own;
- ``true``: ``sandbox.commands.run`` (Connect ``process.Process/Start``, a stream; the SDK runs
  ``/bin/bash -l -c true``) beside ``POST …/processes/run`` of the same login shell;
- ``1 MiB write`` and ``read``: ``sandbox.files`` (multipart ``POST /files``, ``GET /files``)
  beside ``PUT``/``GET …/files/content``;
- ``create``: ``Sandbox.create`` beside ``POST /v1/sandboxes`` (cold: no pool).

Each pair is taken in turn, one call of each per round. Prints medians and p95 (nearest rank)
in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from bench.common import p95, pair
from tests.serverproc import ServerProcess


def measure(backend: str, iterations: int) -> dict[str, tuple[list[float], list[float]]]:
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-e2b-{backend}-"))
    server = ServerProcess(
        data_dir, env={"SANDCASTLE_RUNTIME": backend, "SANDCASTLE_WARM_POOL": "{}"}
    )
    server.start(timeout=300)
    os.environ.update(
        E2B_API_URL=server.url, E2B_SANDBOX_URL=server.url, E2B_API_KEY=server.admin_key
    )
    from e2b_code_interpreter import Sandbox  # reads nothing at import; the environment is set

    payload = os.urandom(1 << 20)
    figures: dict[str, tuple[list[float], list[float]]] = {}
    try:
        with server.client() as api:
            sbx = Sandbox.create(timeout=900)
            sid = sbx.sandbox_id
            context = api.post(f"/v1/sandboxes/{sid}/contexts", json={}).json()["id"]

            def ours_execute() -> None:
                body = {"code": "1+1", "context_id": context}
                reply = api.post(f"/v1/sandboxes/{sid}/execute", json=body).json()
                assert reply["items"][0]["text"] == "2", reply

            def e2b_execute() -> None:
                assert sbx.run_code("1+1").text == "2"

            figures["1+1"] = pair(e2b_execute, ours_execute, iterations)

            def ours_true() -> None:
                # What E2B's SDK runs for a command: a login shell.
                body = {"cmd": "/bin/bash", "args": ["-l", "-c", "true"]}
                done = api.post(f"/v1/sandboxes/{sid}/processes/run", json=body)
                assert done.json()["process"]["exit_code"] == 0, done.text

            figures["true"] = pair(lambda: sbx.commands.run("true"), ours_true, iterations)

            def ours_write() -> None:
                url = f"/v1/sandboxes/{sid}/files/content"
                response = api.put(url, params={"path": "/home/user/ours.bin"}, content=payload)
                assert response.status_code in (200, 201), response.text

            def ours_read() -> None:
                url = f"/v1/sandboxes/{sid}/files/content"
                assert api.get(url, params={"path": "/home/user/ours.bin"}).content == payload

            figures["1 MiB write"] = pair(
                lambda: sbx.files.write("/home/user/e2b.bin", payload), ours_write, iterations
            )
            figures["1 MiB read"] = pair(
                lambda: sbx.files.read("/home/user/e2b.bin", format="bytes"),
                ours_read,
                iterations,
            )
            sbx.kill()

            def e2b_create() -> None:
                Sandbox.create(timeout=60).kill()

            def ours_create() -> None:
                created = api.post("/v1/sandboxes", json={"timeout_ms": 60_000}).json()
                api.delete(f"/v1/sandboxes/{created['id']}")

            creates = max(3, iterations // 5)
            figures["create (cold)"] = pair(e2b_create, ours_create, creates)
    finally:
        server.destroy_all()
        server.purge()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--backends", default="gvisor,bwrap")
    args = parser.parse_args()
    results = {b: measure(b, args.iterations) for b in args.backends.split(",")}
    print(f"{'ms':<18}{'E2B SDK median':>16}{'p95':>9}{'our API median':>16}{'p95':>9}")
    for backend, figures in results.items():
        print(f"--- {backend}")
        for name, (e2b, ours) in figures.items():
            print(
                f"{name:<18}{statistics.median(e2b):>16.1f}{p95(e2b):>9.1f}"
                f"{statistics.median(ours):>16.1f}{p95(ours):>9.1f}"
            )


if __name__ == "__main__":
    main()
