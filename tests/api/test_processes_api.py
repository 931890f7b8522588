"""``/processes`` bodies and routes, before any agent is asked (docs/PROCESSES.md); the
processes themselves are tested end to end in tests/e2e/test_processes.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Harness, assert_envelope


@pytest.mark.parametrize(
    ("tail", "body"),
    [
        ("", {}),
        ("", {"cmd": "ls", "shell": "ls"}),
        ("", {"shell": "ls", "args": ["-l"]}),
        ("/run", {"cmd": "ls", "timeout_ms": -1}),
        ("/run", {"cmd": "ls", "timeout_ms": True}),
        ("", {"cmd": "bash", "pty": {"cols": 0, "rows": 24}}),
        ("", {"cmd": "ls", "cwd": "relative/dir"}),
        ("/7/stdin", {"text": "a", "data_b64": "YQ=="}),
        ("/7/stdin", {"data_b64": "not base64!"}),
        ("/7/stdin", {"data_b64": "b64 é"}),
        ("/7/signal", {"signal": "SIGFOO"}),
        ("/7/resize", {"cols": 80, "rows": 100_000}),
    ],
)
async def test_bad_bodies_are_a_422_in_the_envelope(
    harness: Harness, sandbox_id: str, tail: str, body: dict[str, Any]
) -> None:
    response = await harness.client.post(f"/v1/sandboxes/{sandbox_id}/processes{tail}", json=body)
    assert_envelope(response, 422, "validation_error")


async def test_run_and_stream_are_not_taken_for_a_pid(harness: Harness, sandbox_id: str) -> None:
    for tail in ("run", "stream"):
        response = await harness.client.options(f"/v1/sandboxes/{sandbox_id}/processes/{tail}")
        assert response.headers["allow"] == "POST", tail
    missing = await harness.client.get(f"/v1/sandboxes/{sandbox_id}/processes/run")
    assert missing.status_code == 405
