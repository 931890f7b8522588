"""A real Sandcastle server in a subprocess, for end-to-end tests and benchmarks."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]


def templates_dir() -> Path:
    return Path(os.environ.get("SANDCASTLE_TEST_TEMPLATES_DIR", REPO / "build" / "templates"))


def link_template(templates: Path, name: str) -> None:
    """The shared test template under another name: its manifest, renamed, and its rootfs."""
    source = templates_dir() / "python"
    manifest = json.loads((source / "manifest.json").read_text())
    (templates / name).mkdir(parents=True)
    (templates / name / "manifest.json").write_text(json.dumps({**manifest, "name": name}))
    (templates / name / "rootfs").symlink_to(source / "rootfs")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Tls:
    """What a server serves HTTPS with, and the CA its clients trust it by."""

    cert: Path
    key: Path
    ca: Path


class ServerProcess:
    """``sandcastle serve`` on a free port with its own data directory (over HTTPS with
    ``tls``, whose certificate must name 127.0.0.1)."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
        tls: Tls | None = None,
    ):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(tls.ca)) if tls else True
        )
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            {
                "SANDCASTLE_TEMPLATES_DIR": str(templates_dir()),
                "SANDCASTLE_RECONCILE_INTERVAL_S": "0.5",
                **self.extra_env,
            }
        )
        log = open(self.log_path, "ab")  # owned by the process
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "sandcastle", "serve",
                "--port", str(self.port), "--data-dir", str(self.data_dir),
                *(["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
                  if self.tls else []),
            ],
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                health = httpx.get(self.url + "/v1/health", timeout=1, verify=self.verify)
                if health.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log_path.read_text()[-3000:]}")

    @property
    def database_url(self) -> str:
        """The store this server uses (its data directory's SQLite unless told otherwise)."""
        default = f"sqlite+aiosqlite:///{self.data_dir / 'sandcastle.db'}"
        return self.extra_env.get("SANDCASTLE_DATABASE_URL", default)

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()

    def client(self, key: str | None = None, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key or self.admin_key}"},
            timeout=timeout,
            verify=self.verify,
        )

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def purge(self) -> None:
        """Destroy every sandbox of this data dir, warm-pool entries included."""
        self.stop()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "sandcastle",
                "purge",
                "--yes",
                "--data-dir",
                str(self.data_dir),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def destroy_all(self) -> None:
        """Destroy every sandbox this server knows, so no test leaves processes behind."""
        with self.client() as c:
            cursor: Any = None
            while True:
                page = c.get(
                    "/v1/sandboxes", params={"limit": 200, **({"cursor": cursor} if cursor else {})}
                ).json()
                for s in page["items"]:
                    if s["status"] != "destroyed":
                        c.delete(f"/v1/sandboxes/{s['id']}")
                cursor = page["next_cursor"]
                if not cursor:
                    break
