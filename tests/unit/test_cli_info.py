"""``sandcastle info`` against a stand-in server answering ``GET /v1/health``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from typer.testing import CliRunner

from sandcastle.cli.main import app

HEALTH = {
    "status": "ok",
    "version": "1.2.3",
    "runtime": "bwrap",
    "runtime_reason": "gvisor unavailable: runsc not found (runsc)",
    "warm_pools": {"python": {"target": 2, "ready": 1}},
}


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A server that answers every GET with ``HEALTH`` and records the requests it saw."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"path": self.path, "authorization": self.headers.get("Authorization")})
            body = json.dumps(HEALTH).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_info_shows_version_runtime_and_pools_without_a_key(
    server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, seen = server
    result = CliRunner().invoke(app, ["info", "--url", url], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert seen == [{"path": "/v1/health", "authorization": None}]
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    assert "version 1.2.3" in lines
    assert "runtime bwrap (gvisor unavailable: runsc not found (runsc))" in lines
    assert any(line.startswith("│ python │ 1 │ 2 │") for line in lines), result.output


def test_info_on_an_unreachable_server_is_one_clear_error() -> None:
    result = CliRunner().invoke(app, ["info", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach http://127.0.0.1:9" in result.output
