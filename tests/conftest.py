"""Shared fixtures: a clean environment for every test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.e2e_fixtures"]

#: Variables the test harness itself sets; everything else SANDCASTLE_* is removed per test.
_KEEP = {"SANDCASTLE_TEST_TEMPLATES_DIR"}


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
