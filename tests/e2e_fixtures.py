"""End-to-end fixtures (a pytest plugin): one real server per test session, real sandboxes.

Shared by ``tests/e2e`` and ``tests/security``; loaded from ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import httpx
import pytest

from tests import pgcluster
from tests.serverproc import ServerProcess, templates_dir

#: In the environment of every session server: nothing of it may ever be seen inside a sandbox.
HOST_ENV_MARKER = ("SERVER_ONLY_SECRET", "host-env-" + os.urandom(8).hex())


#: The modules that run on bubblewrap + PostgreSQL too: those whose outcome the store decides
#: (status changes and their compare-and-sets, recovery after a restart, the run queue,
#: snapshots, the pool, tenancy and quotas). The others exercise the sandbox itself, which the
#: store never touches; they run on each backend, on SQLite.
STORE_MODULES = frozenset(
    {
        "test_sandbox_lifecycle.py",
        "test_lifecycle_ops.py",
        "test_work_in_flight.py",
        "test_restart.py",
        "test_code_runs.py",
        "test_snapshots.py",
        "test_pool_and_network.py",
        "test_purge.py",
        "test_template_pins.py",
        "test_tenancy.py",
        "test_org_quotas.py",
        "test_roles.py",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        if "tests/e2e" in str(item.fspath) or "tests/security" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
        if "tests/security" in str(item.fspath):
            item.add_marker(pytest.mark.security)
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and str(callspec.params.get("deployment", "")).endswith(
            "+postgresql"
        )
        if on_postgres and item.path.name not in STORE_MODULES:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def backends() -> list[str]:
    """The runtime backends the shared suites run against (``SANDCASTLE_TEST_BACKENDS``)."""
    return os.environ.get("SANDCASTLE_TEST_BACKENDS", "bwrap,gvisor").split(",")


def deployments() -> list[str]:
    """Each backend on SQLite (the default store), and bubblewrap, the quicker one, once more
    on PostgreSQL: the store is independent of the backend, so one pairing covers it."""
    names = backends()
    return [*names, "bwrap+postgresql"] if "bwrap" in names else names


@pytest.fixture(scope="session", params=deployments())
def deployment(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def backend(deployment: str) -> str:
    return deployment.split("+")[0]


StoreFactory = Callable[[], dict[str, str]]


@pytest.fixture(scope="session")
def new_store(request: pytest.FixtureRequest, deployment: str) -> StoreFactory:
    """The server environment for a store of its own: SQLite in the data directory, or a new
    database on the run's PostgreSQL (two servers never share one)."""
    if not deployment.endswith("+postgresql"):
        return dict
    cluster: str = request.getfixturevalue("postgres_url")

    def make() -> dict[str, str]:
        name = f"e2e_{uuid.uuid4().hex[:12]}"
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            url = thread.submit(asyncio.run, pgcluster.create_database(cluster, name)).result()
        return {"SANDCASTLE_DATABASE_URL": url}

    return make


#: How much of a session server's log a failing test's report shows.
LOG_TAIL_CHARS = 6000


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing end-to-end test's report shows the end of its server's log: in a CI run it is
    the only record of what the server saw (an agent that disconnected, a sandbox that died)."""
    report: pytest.TestReport = yield
    server = getattr(item, "funcargs", {}).get("server")
    if report.failed and isinstance(server, ServerProcess) and server.log_path.exists():
        with open(server.log_path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - LOG_TAIL_CHARS))
            tail = log.read().decode(errors="replace")
        report.sections.append((f"server log (last {LOG_TAIL_CHARS} bytes)", tail))
    return report


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, deployment: str, backend: str, new_store: StoreFactory
) -> Iterator[ServerProcess]:
    """One real server per deployment; every e2e and security test runs against each."""
    if not (templates_dir() / "python" / "manifest.json").exists():
        pytest.fail(f"the python template is not built in {templates_dir()}: run `make test`")
    data_dir = Path(tmp_path_factory.mktemp(f"server-{deployment}"))
    with running_server(data_dir, backend, **new_store()) as proc:
        yield proc


@contextlib.contextmanager
def running_server(data_dir: Path, backend: str, **env: str) -> Iterator[ServerProcess]:
    """A real server on ``backend`` (with ``env`` on top of the shared one), ended with every
    sandbox destroyed and purged."""
    proc = ServerProcess(
        data_dir,
        env={"SANDCASTLE_RUNTIME": backend, HOST_ENV_MARKER[0]: HOST_ENV_MARKER[1], **env},
    )
    proc.start()
    try:
        yield proc
    finally:
        try:
            proc.destroy_all()
        finally:
            proc.purge()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture
def sandbox(api: httpx.Client) -> Iterator[dict[str, object]]:
    response = api.post("/v1/sandboxes", json={"template": "python", "timeout_ms": 600_000})
    assert response.status_code == 201, response.text
    body = response.json()
    yield body
    api.delete(f"/v1/sandboxes/{body['id']}")
