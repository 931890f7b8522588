"""Fixtures of the attack suite."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


@pytest.fixture
def fresh(api: httpx.Client) -> Any:
    """A sandbox of its own for attacks that damage it."""
    created = []

    def make(**body: Any) -> str:
        response = api.post("/v1/sandboxes", json=body)
        assert response.status_code == 201, response.text
        created.append(response.json()["id"])
        return str(response.json()["id"])

    yield make
    for sid in created:
        api.delete(f"/v1/sandboxes/{sid}")
