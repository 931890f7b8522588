"""Helpers for end-to-end tests of asynchronous code runs: submit, poll, gate."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.e2e.executing import run
from tests.helpers import eventually as wait_for

FINISHED = {"succeeded", "failed", "cancelled"}
RUN_FIELDS = {
    "id", "sandbox_id", "context_id", "status", "timeout_secs", "created_at", "expires_at",
    "started_at", "completed_at", "cancel_requested_at", "execution", "failure_reason",
}  # fmt: skip


def submit(api: httpx.Client, sandbox_id: object, **body: object) -> dict[str, Any]:
    while True:
        response = api.post(f"/v1/sandboxes/{sandbox_id}/code/runs", json=body)
        if response.status_code != 429:
            break
        # The per-key rate limit: the bulk tests submit faster than it allows.
        time.sleep(float(response.headers.get("retry-after", "1")))
    assert response.status_code == 202, response.text
    created: dict[str, Any] = response.json()
    assert created["status"] == "queued"
    return created


def get_run(api: httpx.Client, sandbox_id: object, run_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/sandboxes/{sandbox_id}/code/runs/{run_id}")
    assert response.status_code == 200, response.text
    got: dict[str, Any] = response.json()
    return got


def wait_status(
    api: httpx.Client, sandbox_id: object, run_id: str, statuses: set[str], timeout: float = 60
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        got = get_run(api, sandbox_id, run_id)
        return got if got["status"] in statuses else None

    found: dict[str, Any] = wait_for(check, timeout=timeout, interval=0.05)
    return found


def finished(
    api: httpx.Client, sandbox_id: object, run_id: str, timeout: float = 60
) -> dict[str, Any]:
    return wait_status(api, sandbox_id, run_id, FINISHED, timeout)


def gate_code(name: str, then: str = "None") -> str:
    """A cell that waits until ``/tmp/<name>`` exists, then evaluates ``then``."""
    return (
        f"import os, time\nwhile not os.path.exists('/tmp/{name}'):\n    time.sleep(0.02)\n{then}"
    )


def open_gate(api: httpx.Client, sandbox_id: object, name: str) -> None:
    run(api, sandbox_id, code=f"open('/tmp/{name}', 'w').close()")
