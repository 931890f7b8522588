"""Bounded requests: an oversized body is refused with 413 before it is held, and the
user-supplied maps (metadata, env_vars) are bounded with 422s naming the field; nothing of a
refused request is stored. (Streamed uploads are exempt from the body limit: the e2e tests of
a 200 MB file both ways and of a 12 MiB upload through a sandbox host prove it against the real
agent.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sandcastle.domain import limits
from sandcastle.services.diskspace import free_bytes
from tests.api.conftest import AppFactory, Harness, assert_envelope


async def test_a_body_over_the_limit_is_413_and_creates_nothing(harness: Harness) -> None:
    big = "x" * (harness.settings.max_body_bytes + 1)
    response = await harness.client.post("/v1/sandboxes", json={"metadata": {"k": big}})
    body = assert_envelope(response, 413, "invalid_error")
    assert str(harness.settings.max_body_bytes) in body["detail"]
    assert (await harness.client.get("/v1/sandboxes")).json()["items"] == []


async def test_a_chunked_body_without_length_is_bounded_as_it_arrives(harness: Harness) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"metadata": {"k": "'
        for _ in range(64):
            sent += 1
            yield b"x" * (1 << 20)
        yield b'"}}'

    response = await harness.client.post(
        "/v1/sandboxes", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_envelope(response, 413, "invalid_error")
    # Refused once past the limit, not after the whole 64 MiB.
    assert sent <= harness.settings.max_body_bytes // (1 << 20) + 2


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        ({f"k{i}": "v" for i in range(limits.METADATA_MAX_KEYS + 1)}, "keys"),
        ({"k" * (limits.METADATA_MAX_KEY_CHARS + 1): "v"}, "characters"),
        ({"": "v"}, "characters"),
        ({"k": "v" * limits.METADATA_MAX_BYTES}, "bytes"),
    ],
)
async def test_metadata_beyond_its_bounds_is_a_422_naming_the_field(
    harness: Harness, metadata: dict[str, str], says: str
) -> None:
    response = await harness.client.post("/v1/sandboxes", json={"metadata": metadata})
    body = assert_envelope(response, 422, "validation_error")
    [error] = body["errors"]
    assert error["loc"] == ["body", "metadata"]
    assert says in error["msg"]


async def test_metadata_at_its_bounds_is_kept_whole(harness: Harness) -> None:
    metadata = {f"k{i:02}": "v" * 200 for i in range(limits.METADATA_MAX_KEYS)}
    created = await harness.create(metadata=metadata)
    fetched = await harness.client.get(f"/v1/sandboxes/{created['id']}")
    assert fetched.json()["metadata"] == metadata


@pytest.mark.parametrize(
    "env_vars",
    [
        {f"V{i}": "1" for i in range(limits.ENV_VARS_MAX_COUNT + 1)},
        {"A=B": "1"},
        {"": "1"},
        {"NUL": "a\0b"},
        {"BIG": "x" * limits.ENV_VARS_MAX_BYTES},
    ],
)
async def test_env_vars_beyond_their_bounds_are_refused_on_execute(
    harness: Harness, env_vars: dict[str, str]
) -> None:
    sandbox = await harness.create()
    response = await harness.client.post(
        f"/v1/sandboxes/{sandbox['id']}/execute", json={"code": "1", "env_vars": env_vars}
    )
    assert response.status_code == 422, response.text
    assert "env_vars" in response.text


async def test_env_vars_beyond_their_bounds_are_refused_on_runs(harness: Harness) -> None:
    sandbox = await harness.create()
    response = await harness.client.post(
        f"/v1/sandboxes/{sandbox['id']}/code/runs",
        json={"code": "1", "env_vars": {"A=B": "1"}},
    )
    assert response.status_code == 422, response.text
    assert "env_vars" in response.text


async def test_at_the_hosts_free_space_floor_creates_and_runs_are_refused(
    start_app: AppFactory, harness: Harness
) -> None:
    running = await harness.create()
    free_mb = free_bytes(harness.settings.data_dir) // 2**20
    async with start_app(min_free_disk_mb=free_mb + 1024) as starved:
        response = await starved.client.post("/v1/sandboxes", json={})
        body = assert_envelope(response, 500, "server_error")
        assert "min_free_disk_mb" in body["detail"]
        submitted = await starved.client.post(
            f"/v1/sandboxes/{running['id']}/code/runs", json={"code": "1"}
        )
        assert_envelope(submitted, 500, "server_error")
        # Reading and deleting what exists still works: that is how space is freed.
        assert (await starved.client.get(f"/v1/sandboxes/{running['id']}")).status_code == 200
        assert (await starved.client.delete(f"/v1/sandboxes/{running['id']}")).status_code in (
            200,
            204,
        )


async def test_the_limit_holds_on_sandbox_hosts_too(
    start_app: AppFactory,
) -> None:
    async with start_app(max_body_bytes=64 * 1024) as h:
        sandbox = await h.create()
        host = {"Host": sandbox["id"].replace("_", "-") + ".sandbox.localhost"}
        body = b"z" * (100 * 1024)
        execute = await h.client.post(
            "/execute", content=body, headers={**host, "Content-Type": "application/json"}
        )
        assert execute.status_code == 413, execute.text
