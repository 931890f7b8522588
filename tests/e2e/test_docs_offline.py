"""``/docs`` and ``/redoc`` render their operation lists in a real browser (Debian's headless
Chromium) with every address but the server's own unreachable, as on a host without internet:
their scripts come from the server, not a CDN."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.serverproc import ServerProcess

#: Every request the browser makes elsewhere goes to a closed port.
OFFLINE = ["--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"]


def rendered(url: str) -> str:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is needed: run `make test` (make browser)")
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # as root, Chromium's own sandbox cannot start
            "--disable-gpu",
            *OFFLINE,
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture
def docs_server(server: ServerProcess, deployment: str) -> ServerProcess:
    if deployment != "bwrap":
        pytest.skip("the documents do not depend on the backend: checked once, on bwrap")
    return server


def test_swagger_ui_lists_the_operations_offline(docs_server: ServerProcess) -> None:
    page = rendered(docs_server.url + "/docs")
    paths = set(re.findall(r'data-path="([^"]+)"', page))
    assert {"/v1/sandboxes", "/v1/sandboxes/{sandbox_id}/execute"} <= paths, sorted(paths)[:20]


def test_redoc_lists_the_operations_offline(docs_server: ServerProcess) -> None:
    page = rendered(docs_server.url + "/redoc")
    operations = set(re.findall(r'href="#(?:tag/[^/"]+/)?operation/([A-Za-z0-9_]+)"', page))
    assert len(operations) > 40, sorted(operations)
