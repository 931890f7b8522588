"""Every error the API gives is the envelope ``{code, detail, type, errors?}``, FastAPI's own too."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import update

from sandcastle.store.models import ApiKeyRow
from tests.api.conftest import AppFactory, Harness, assert_envelope

ROUTES = [
    ("GET", "/v1/sandboxes"),
    ("POST", "/v1/sandboxes"),
    ("GET", "/v1/sandboxes/sb_00000000"),
    ("DELETE", "/v1/sandboxes/sb_00000000"),
    ("POST", "/v1/sandboxes/sb_00000000/execute"),
]


# --- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer sc_wrong", "Bearer ", "Basic dXNlcjpwYXNz", "sc_no_scheme"],
)
async def test_missing_or_wrong_key_is_401_with_www_authenticate(
    harness: Harness, method: str, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await harness.anon.request(method, path, headers=headers, json={"code": "1"})
    body = assert_envelope(response, 401, "authentication_error")
    assert body["detail"].startswith("Authentication failed")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_the_admin_key_works_and_is_written_privately(harness: Harness) -> None:
    assert harness.key.startswith("sc_")
    assert harness.settings.admin_key_path.stat().st_mode & 0o777 == 0o600
    response = await harness.anon.get(
        "/v1/sandboxes", headers={"Authorization": f"Bearer {harness.key}"}
    )
    assert response.status_code == 200


async def test_revoked_key_is_401(harness: Harness) -> None:
    async with harness.db.session() as session:
        await session.execute(update(ApiKeyRow).values(revoked_at=datetime.now(UTC)))
    response = await harness.client.get("/v1/sandboxes")
    body = assert_envelope(response, 401, "authentication_error")
    assert "revoked" in body["detail"]


@pytest.mark.parametrize(("cache_s", "status"), [(3600.0, 200), (0.0, 401)])
async def test_a_key_revoked_behind_the_servers_back_works_at_most_the_cache_time(
    start_app: AppFactory, cache_s: float, status: int
) -> None:
    """Another server process sharing the store revoked it: this one cannot know until its
    cached principal expires (``principal_cache_s``); with 0 it reads the key every time."""
    async with start_app(principal_cache_s=cache_s) as h:
        assert (await h.client.get("/v1/sandboxes")).status_code == 200
        async with h.db.session() as session:
            await session.execute(update(ApiKeyRow).values(revoked_at=datetime.now(UTC)))
        assert (await h.client.get("/v1/sandboxes")).status_code == status


async def test_a_change_through_the_server_applies_to_cached_keys_at_once(
    harness: Harness,
) -> None:
    """Any change to orgs, members or keys made here drops every cached principal: a key
    just used is refused at its next request once it is revoked."""
    created = await harness.client.post("/v1/orgs/default/keys", json={"name": "ci"})
    assert created.status_code == 201, created.text
    async with harness.as_key(created.json()["key"]) as ci:
        for _ in range(3):
            assert (await ci.get("/v1/sandboxes")).status_code == 200
        revoked = await harness.client.delete(f"/v1/orgs/default/keys/{created.json()['id']}")
        assert revoked.status_code == 204
        assert_envelope(await ci.get("/v1/sandboxes"), 401, "authentication_error")


async def test_authentication_comes_before_validation(harness: Harness) -> None:
    """Without a key, a bad body says nothing about the schema."""
    response = await harness.anon.post("/v1/sandboxes", json={"memory_mb": "lots"})
    assert_envelope(response, 401, "authentication_error")
    response = await harness.anon.get("/v1/sandboxes", params={"limit": 0})
    assert_envelope(response, 401, "authentication_error")


# --- FastAPI's own errors, in the envelope ----------------------------------------------------


async def test_unknown_route_is_404_envelope(harness: Harness) -> None:
    response = await harness.client.get("/v1/nothing-here")
    assert assert_envelope(response, 404, "not_found_error") == {
        "code": 404,
        "detail": "no route GET /v1/nothing-here",
        "type": "not_found_error",
    }
    deeper = await harness.client.post("/v1/sandboxes/sb_00000000/nope", json={})
    assert_envelope(deeper, 404, "not_found_error")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/sandboxes"),
        ("PATCH", "/v1/sandboxes/sb_00000000"),
        ("GET", "/v1/sandboxes/sb_00000000/execute"),
        ("POST", "/v1/health"),
    ],
)
async def test_wrong_method_is_405_envelope(harness: Harness, method: str, path: str) -> None:
    response = await harness.client.request(method, path)
    body = assert_envelope(response, 405, "invalid_error")
    assert body["detail"] == "Method Not Allowed"


async def test_405_names_the_allowed_methods(harness: Harness) -> None:
    response = await harness.client.put("/v1/sandboxes")
    assert response.status_code == 405
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


async def test_malformed_json_is_a_422_envelope(harness: Harness) -> None:
    response = await harness.client.post(
        "/v1/sandboxes", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    body = assert_envelope(response, 422, "validation_error")
    [error] = body["errors"]
    assert error["loc"][0] == "body"
    assert error["type"] == "json_invalid"


async def test_wrong_field_type_is_a_422_envelope_with_locations(harness: Harness) -> None:
    response = await harness.client.post(
        "/v1/sandboxes", json={"memory_mb": "lots", "vcpus": 0, "metadata": {"kept": True}}
    )
    body = assert_envelope(response, 422, "validation_error")
    assert body["detail"] == "Validation error"
    by_loc = {tuple(e["loc"]): e["type"] for e in body["errors"]}
    assert by_loc == {("body", "memory_mb"): "int_type", ("body", "vcpus"): "greater_than_equal"}


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        # Lax parsing took these: a boolean topped up one credit and turned rate limiting off.
        ("POST", "/v1/orgs/default/credits", {"amount": True}, "amount"),
        ("PATCH", "/v1/orgs/default/limits", {"rate_limit_per_s": False}, "rate_limit_per_s"),
        ("POST", "/v1/sandboxes", {"vcpus": "2"}, "vcpus"),
        ("POST", "/v1/sandboxes", {"timeout_ms": 1.5}, "timeout_ms"),
        ("POST", "/v1/orgs/default/credits", {"amount": "5"}, "amount"),
        ("POST", "/v1/sandboxes", {"network": {"internet": "yes"}}, "internet"),
        ("POST", "/v1/sandboxes", {"auto_resume": 1}, "auto_resume"),
    ],
)
async def test_numbers_and_booleans_are_taken_only_as_themselves(
    harness: Harness, method: str, path: str, body: dict[str, object], field: str
) -> None:
    before = (await harness.client.get("/v1/orgs/default")).json()
    response = await harness.client.request(method, path, json=body)
    errors = assert_envelope(response, 422, "validation_error")["errors"]
    assert [e["loc"][-1] for e in errors] == [field], errors
    assert (await harness.client.get("/v1/orgs/default")).json() == before


async def test_body_that_is_not_an_object_is_a_422_envelope(harness: Harness) -> None:
    response = await harness.client.post("/v1/sandboxes", json=["template", "python"])
    body = assert_envelope(response, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["body"]


async def test_query_validation_is_a_422_envelope(harness: Harness) -> None:
    response = await harness.client.get("/v1/sandboxes", params={"limit": 0})
    body = assert_envelope(response, 422, "validation_error")
    assert body["errors"] == [
        {
            "loc": ["query", "limit"],
            "msg": "Input should be greater than or equal to 1",
            "type": "greater_than_equal",
        }
    ]


# --- server-side failures -------------------------------------------------------------------


async def test_unexpected_exception_is_a_500_envelope_that_leaks_nothing(
    harness: Harness,
) -> None:
    harness.runtime.fail_launch = ValueError("secret internal detail")
    response = await harness.client.post("/v1/sandboxes", json={})
    body = assert_envelope(response, 500, "server_error")
    assert body["detail"] == "Internal server error"
    assert "secret" not in response.text


async def test_agent_failure_is_a_502_envelope(harness: Harness) -> None:
    sandbox_id = (await harness.create())["id"]
    harness.runtime.agent(sandbox_id).fail_next = RuntimeError("kernel manager exploded")
    response = await harness.client.post(f"/v1/sandboxes/{sandbox_id}/execute", json={"code": "1"})
    body = assert_envelope(response, 502, "bad_gateway_error")
    assert "kernel manager exploded" in body["detail"]
    # The agent lives on: the next request works.
    assert (await harness.execute(sandbox_id, code="1"))["items"] == [
        {"is_primary": True, "text": "1"}
    ]


# --- OpenAPI --------------------------------------------------------------------------------


async def test_openapi_documents_every_error_in_the_shape_it_is_sent(harness: Harness) -> None:
    spec = (await harness.anon.get("/openapi.json")).json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            errors = {int(s): r for s, r in operation["responses"].items() if int(s) >= 400}
            assert 500 in errors, (method, path)
            if operation.get("security"):
                assert {401, 403, 429} <= set(errors), (method, path)
            if "{" in path:
                assert 404 in errors, (method, path)
            for status, response in errors.items():
                schema = response["content"]["application/json"]["schema"]
                if path.endswith("/agent/execute") and status == 422:
                    continue  # either shape, by the body (below)
                execute_doc = path.endswith(("/execute", "/execute/stream")) and status == 422
                expected = "ExecuteValidationError" if execute_doc else "Error"
                assert schema == {"$ref": f"#/components/schemas/{expected}"}, (method, path)
    # Both answers of the agent API's execute validate: no $ref beside the oneOf.
    agent_execute = spec["paths"]["/v1/sandboxes/{sandbox_id}/agent/execute"]["post"]
    [ok] = agent_execute["responses"]["200"]["content"].values()
    assert set(ok["schema"]) == {"oneOf"}
    [invalid] = agent_execute["responses"]["422"]["content"].values()
    assert invalid["schema"]["oneOf"] == [
        {"$ref": "#/components/schemas/Error"},
        {"$ref": "#/components/schemas/ExecuteValidationError"},
    ]


def _keys(node: object) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for value in node.values() for k in _keys(value)}
    if isinstance(node, list):
        return {k for value in node for k in _keys(value)}
    return set()


async def test_openapi_states_the_limits_the_server_enforces(start_app: AppFactory) -> None:
    async with start_app(max_vcpus=2, max_memory_mb=1024, max_timeout_ms=600_000) as h:
        spec = (await h.anon.get("/openapi.json")).json()
        schemas = spec["components"]["schemas"]
        create = schemas["SandboxCreateBody"]["properties"]
        [vcpus] = [b for b in create["vcpus"]["anyOf"] if b.get("type") == "integer"]
        [memory] = [b for b in create["memory_mb"]["anyOf"] if b.get("type") == "integer"]
        assert (vcpus["minimum"], vcpus["maximum"]) == (1, 2)
        assert memory["maximum"] == 1024
        assert schemas["TimeoutBody"]["properties"]["timeout_ms"]["maximum"] == 600_000
        # Just past the documented bound is refused; at it is taken.
        over = await h.client.post("/v1/sandboxes", json={"vcpus": 3})
        assert_envelope(over, 422, "validation_error")
        assert (await h.client.post("/v1/sandboxes", json={"vcpus": 2})).status_code == 201
        # Pydantic writes a bound it cannot place as "ge"/"le", which JSON Schema ignores.
        assert not _keys(spec) & {"ge", "le", "gt", "lt"}
        files = spec["paths"]["/v1/sandboxes/{sandbox_id}/files/stat"]["get"]
        [path] = [p for p in files["parameters"] if p["name"] == "path"]
        assert path["schema"]["maxLength"] == 4096
        assert set(files["responses"]["400"]["content"]) == {"application/json", "text/plain"}


async def test_a_validation_error_matches_the_documented_envelope(harness: Harness) -> None:
    spec = (await harness.anon.get("/openapi.json")).json()
    envelope = spec["components"]["schemas"]["Error"]
    body = (await harness.client.post("/v1/sandboxes", json={"vcpus": "x"})).json()
    assert set(body) <= set(envelope["properties"]) and set(envelope["required"]) <= set(body)
    assert body["type"] in envelope["properties"]["type"]["enum"]


async def test_openapi_lists_the_routes(harness: Harness) -> None:
    response = await harness.anon.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["info"]["title"] == "Sandcastle"
    routes = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    # The documented core; features add routes of their own.
    assert routes >= {
        ("GET", "/v1/health"),
        ("GET", "/v1/sandboxes"),
        ("POST", "/v1/sandboxes"),
        ("GET", "/v1/sandboxes/{sandbox_id}"),
        ("DELETE", "/v1/sandboxes/{sandbox_id}"),
        ("POST", "/v1/sandboxes/{sandbox_id}/pause"),
        ("POST", "/v1/sandboxes/{sandbox_id}/resume"),
        ("POST", "/v1/sandboxes/{sandbox_id}/timeout"),
        ("POST", "/v1/sandboxes/{sandbox_id}/execute"),
    }
    schemes = spec["components"]["securitySchemes"]
    assert [s["scheme"] for s in schemes.values()] == ["bearer"]
    schemas = spec["components"]["schemas"]
    assert schemas["ExecuteBody"]["required"] == ["code"]
    assert set(schemas["SandboxStatus"]["enum"]) == {
        "creating",
        "running",
        "paused",
        "destroyed",
        "error",
    }
    list_params = {p["name"]: p for p in spec["paths"]["/v1/sandboxes"]["get"]["parameters"]}
    assert list_params["limit"]["schema"]["minimum"] == 1
    assert list_params["limit"]["schema"]["maximum"] == 200


async def test_an_integer_written_with_a_zero_fraction_is_an_integer(harness: Harness) -> None:
    # JSON Schema's integer: Python's json module writes 5.0 for a float that holds 5.
    before = (await harness.client.get("/v1/orgs/default")).json()["credit_balance"]
    response = await harness.client.post("/v1/orgs/default/credits", json={"amount": 5.0})
    assert response.status_code == 200, response.text
    assert (await harness.client.get("/v1/orgs/default")).json()["credit_balance"] == before + 5
