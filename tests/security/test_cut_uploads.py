"""An upload cut by a crash of the server leaves nothing half-written in the sandbox."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.e2e.executing import run
from tests.e2e_fixtures import StoreFactory, running_server
from tests.security.test_attacks import value

_PARTS = (
    "import os\n"
    "sorted(n for _, _, names in os.walk('/home/user') for n in names"
    " if n.endswith('.sandcastle-part'))"
)


def _parts(api: httpx.Client, sandbox_id: str) -> list[str]:
    return list(value(run(api, sandbox_id, code=_PARTS)))


def test_an_upload_cut_by_a_server_crash_leaves_no_partial_file(
    tmp_path: Path, backend: str, new_store: StoreFactory
) -> None:
    release = threading.Event()
    with running_server(tmp_path / "data", backend, **new_store()) as server:
        try:
            with server.client() as api:
                sid = api.post("/v1/sandboxes", json={"timeout_ms": 600_000}).json()["id"]

                def body() -> Iterator[bytes]:
                    yield b"x" * (1 << 20)
                    release.wait(60)  # the server dies meanwhile

                def upload() -> None:
                    with server.client() as uploader:
                        try:
                            uploader.put(
                                f"/v1/sandboxes/{sid}/files/content",
                                params={"path": "/home/user/data/big.bin"},
                                content=body(),
                            )
                        except httpx.HTTPError:
                            pass  # cut, as intended

                uploading = threading.Thread(target=upload)
                uploading.start()
                deadline = time.monotonic() + 30
                while not _parts(api, sid):
                    assert time.monotonic() < deadline, "the upload never started"
                    time.sleep(0.1)
            server.kill9()
            release.set()
            uploading.join(30)
            server.start()
            with server.client() as api:
                deadline = time.monotonic() + 30
                while (left := _parts(api, sid)) and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert left == []
                assert (
                    api.get(
                        f"/v1/sandboxes/{sid}/files/content",
                        params={"path": "/home/user/data/big.bin"},
                    ).status_code
                    == 404
                )
        finally:
            release.set()
