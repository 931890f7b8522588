"""Shared fixtures: a clean environment for every test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests import pgcluster
from tests.serverproc import REPO

pytest_plugins = ["tests.e2e_fixtures"]

#: Variables the test harness itself sets; everything else SANDCASTLE_* is removed per test.
_KEEP = {
    "SANDCASTLE_TEST_TEMPLATES_DIR",
    "SANDCASTLE_TEST_WRITE_SPEC",
    pgcluster.URL_VARIABLE,
    pgcluster.REQUIRE_VARIABLE,
}
_CLUSTER = pytest.StashKey[pgcluster.Cluster]()


def pytest_configure(config: pytest.Config) -> None:
    """The controlling process starts the run's PostgreSQL; xdist workers inherit its URL."""
    if hasattr(config, "workerinput") or os.environ.get(pgcluster.URL_VARIABLE):
        return
    bin_dir = pgcluster.bindir()
    if bin_dir is None:
        return  # the PostgreSQL tests skip, or fail under ``make test`` (``postgres_url``)
    # One directory per run: two runs at once (a checkout and a worktree) keep apart.
    cluster = pgcluster.Cluster(REPO / "build" / "postgres" / str(os.getpid()), bin_dir)
    cluster.start()
    config.stash[_CLUSTER] = cluster
    os.environ[pgcluster.URL_VARIABLE] = cluster.url


def pytest_unconfigure(config: pytest.Config) -> None:
    cluster = config.stash.get(_CLUSTER, None)
    if cluster is not None:
        cluster.stop()
        os.environ.pop(pgcluster.URL_VARIABLE, None)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The run's PostgreSQL cluster (a URL with a ``{database}`` placeholder)."""
    url = os.environ.get(pgcluster.URL_VARIABLE)
    if url:
        return url
    reason = "PostgreSQL's server is not installed (make test installs it)"
    if os.environ.get(pgcluster.REQUIRE_VARIABLE):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def clean_environ() -> Iterator[None]:
    """No test sees another's (or the developer's) SANDCASTLE_* settings."""
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith("SANDCASTLE_") and key not in _KEEP:
            del os.environ[key]
    yield
    os.environ.clear()
    os.environ.update(saved)
