"""A throw-away PostgreSQL cluster for the test run: Debian's server binaries, a data
directory under ``build/``, a Unix socket only, stopped when the run ends.

The controlling pytest process starts it and publishes its URL in ``SANDCASTLE_TEST_POSTGRES``
(xdist workers inherit the variable); each test that runs on PostgreSQL gets a database of its
own, cloned from a migrated template database, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

#: Where the controlling process publishes the cluster's URL for the workers.
URL_VARIABLE = "SANDCASTLE_TEST_POSTGRES"
#: Set by ``make test``: a missing PostgreSQL fails the run instead of skipping its tests.
REQUIRE_VARIABLE = "SANDCASTLE_TEST_REQUIRE_POSTGRES"
_USER = "sandcastle"


def bindir() -> Path | None:
    """The newest installed server's ``bin/`` (Debian keeps it off ``PATH``)."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


class Cluster:
    """``initdb`` + ``pg_ctl start`` in ``directory``; :meth:`stop` stops it and removes it."""

    def __init__(self, directory: Path, bin_dir: Path) -> None:
        self.directory = directory
        self.bin = bin_dir
        self.data = directory / "data"
        # The socket path must stay under the kernel's 108 bytes, whatever the clone's path.
        self.socket_dir = Path("/tmp") / f"sandcastle-pg-{uuid.uuid4().hex[:8]}"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{_USER}@/{{database}}?host={self.socket_dir}"

    def start(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        self.socket_dir.mkdir(mode=0o700)
        for path in (self.directory, self.socket_dir):
            self._own(path)
        self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", _USER, "-E", "UTF8", "--no-sync"
        )
        options = (
            f"-k {self.socket_dir} -c listen_addresses='' -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        log = str(self.directory / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root; Debian's package made this account for it.
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd="/")

    @staticmethod
    def _own(path: Path) -> None:
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(path, account.pw_uid, account.pw_gid)


def database_url(cluster_url: str, name: str) -> str:
    return cluster_url.replace("{database}", name)


async def create_database(cluster_url: str, name: str, template: str | None = None) -> str:
    """A new database (a copy of ``template`` when given); returns its URL."""
    suffix = f' TEMPLATE "{template}"' if template else ""
    await _admin(cluster_url, f'CREATE DATABASE "{name}"{suffix}')
    return database_url(cluster_url, name)


async def drop_database(cluster_url: str, name: str) -> None:
    await _admin(cluster_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _admin(cluster_url: str, statement: str) -> None:
    engine = create_async_engine(
        database_url(cluster_url, "postgres"), isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as connection:
            await connection.execute(sa.text(statement))
    finally:
        await engine.dispose()
