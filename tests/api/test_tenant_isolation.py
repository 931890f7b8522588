"""Isolation between tenants, swept over the app's route table.

Every route is either *tenant-free* (listed below, with a check that it shows nothing of another
org) or it has path parameters, which are filled with org B's real ids (its sandbox, context,
run, artifact, snapshot, project, workspace, member, key, slug) and called with org A's key: the answer
must be a 404 indistinguishable from the 404 for an id that exists nowhere. A route with a
parameter this file cannot fill, or a required body field or query parameter it has no sample
for, fails the sweep: a new route cannot be forgotten.

Also swept: A's own sandbox (or org) with B's child ids (context, run, artifact; project,
workspace, member, key), the operator's key (an owner of the first org, who may reach other orgs'
limits and credits but no sandbox of theirs), and the per-sandbox hosts
(``Host: {id}.sandbox.localhost``).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel

from sandcastle.domain.clock import utcnow
from sandcastle.runtime.templates import records
from sandcastle.runtime.templates.catalogue import org_key
from sandcastle.runtime.templates.records import BuildRecord, BuildStatus
from tests.api.conftest import Harness, assert_envelope, write_template
from tests.fakes import SnapshottingFakeRuntime

#: Routes that name no tenant resource; each is checked to show nothing of org B.
TENANT_FREE = {
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("HEAD", "/openapi.json"),
    ("HEAD", "/docs"),
    ("HEAD", "/docs/oauth2-redirect"),
    ("HEAD", "/redoc"),
    ("GET", "/v1/health"),
    ("GET", "/v1/sandboxes"),
    ("POST", "/v1/sandboxes"),
    ("GET", "/v1/orgs"),
    ("POST", "/v1/orgs"),
    ("GET", "/v1/snapshots"),
    ("GET", "/v1/templates"),
    # Builds into the caller's own org (tests/api/test_template_builds_api.py).
    ("POST", "/v1/templates"),
}
#: Org routes an operator may use on any org (docs/TENANCY.md).
OPERATOR_REACH = {
    ("GET", "/v1/orgs/{org}"),
    ("PATCH", "/v1/orgs/{org}/limits"),
    ("GET", "/v1/orgs/{org}/credits"),
    ("POST", "/v1/orgs/{org}/credits"),
}
#: Path parameters that are not tenant resources: a file path and a process id inside the
#: sandbox, and a template's name (templates are the server's; the sweep checks an absent one
#: is a 404).
PLAIN_PARAMS = {"path": "hello.txt", "name": "no-such-template", "pid": "1"}
#: Values for required body fields and query parameters, by name.
SAMPLES: dict[str, Any] = {
    "code": "1",
    "path": "/home/user/hello.txt",
    "from": "/home/user/hello.txt",
    "to": "/home/user/moved.txt",
    "timeout_ms": 60_000,
    "slug": "zz-sweep",
    "key": "zz-sweep",
    "email": "sweep@example.com",
    "role": "member",
    "amount": 1,
    "language": "python",
    "cols": 80,
    "rows": 24,
}
#: Bodies whose fields are all optional but which need one of several (a model's own rule).
MODEL_SAMPLES: dict[str, dict[str, Any]] = {
    "StartProcessBody": {"cmd": "true"},
    "StdinBody": {"text": "x"},
}
#: Routes that read their body themselves (no body model): what to send them.
RAW_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/sandboxes/{sandbox_id}/files/upload"): {
        "files": {"file": ("hello.txt", b"hi")},
    },
    ("PUT", "/v1/sandboxes/{sandbox_id}/files/content"): {"content": b"hi"},
    ("POST", "/v1/sandboxes/{sandbox_id}/agent/execute"): {"json": {"code": "1"}},
    ("POST", "/v1/sandboxes/{sandbox_id}/agent/files/upload/-/{path:path}"): {"content": b"hi"},
}
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


#: A backend with memory snapshots, so there are snapshots to hide.
FAKE_RUNTIME = SnapshottingFakeRuntime


@dataclass
class Tenant:
    slug: str
    key: str
    ids: dict[str, str]
    org_id: str = ""


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    route: APIRoute | None

    @property
    def params(self) -> list[str]:
        return _PARAM.findall(self.path)


def endpoints(h: Harness) -> Iterator[Endpoint]:
    for context in iter_route_contexts(h.app.routes):
        route = context.original_route
        for method in sorted(context.methods or ()):
            yield Endpoint(
                method, str(context.path), route if isinstance(route, APIRoute) else None
            )


def fill(path: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        return values[match.group(1)]

    return _PARAM.sub(one, path)


def request_parts(endpoint: Endpoint) -> dict[str, Any]:
    """Query and body a route needs to get past validation, from :data:`SAMPLES`."""
    route = endpoint.route
    parts: dict[str, Any] = dict(RAW_BODIES.get((endpoint.method, endpoint.path), {}))
    if route is None:
        return parts
    missing: list[str] = []
    params = {}
    for query in route.dependant.query_params:
        if query.field_info.is_required():
            if query.name not in SAMPLES:
                missing.append(f"query {query.name}")
            params[query.name] = SAMPLES.get(query.name)
    if params:
        parts["params"] = params
    if route.body_field is not None:
        model = route.body_field.field_info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel), endpoint
        body = {}
        for name, field in model.model_fields.items():
            wire = field.alias or name
            if field.is_required():
                if wire not in SAMPLES:
                    missing.append(f"body field {wire}")
                body[wire] = SAMPLES.get(wire)
        parts["json"] = {**body, **MODEL_SAMPLES.get(model.__name__, {})}
    assert not missing, (
        f"{endpoint.method} {endpoint.path}: add samples for {missing} to SAMPLES in "
        "tests/api/test_tenant_isolation.py"
    )
    return parts


async def until_finished(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    for _ in range(2000):
        run: dict[str, Any] = (await client.get(url)).json()
        if run["status"] in {"succeeded", "failed", "cancelled"}:
            return run
        await asyncio.sleep(0.005)
    raise AssertionError(f"run never finished: {url}")


async def populate(h: Harness, slug: str) -> Tenant:
    """An org with one of everything: project, workspace, member, key, a running sandbox with
    a context, a file, a finished run and its artifact, a snapshot."""
    org, key = await h.add_org(slug)
    ids: dict[str, str] = {"org": slug}
    async with h.as_key(key) as c:
        base = f"/v1/orgs/{slug}"
        project = (await c.post(f"{base}/projects", json={"key": "proj"})).json()
        workspace = (
            await c.post(f"{base}/workspaces", json={"key": "ws", "project_id": project["id"]})
        ).json()
        member = (await c.post(f"{base}/members", json={"email": f"m@{slug}.test"})).json()
        extra_key = (await c.post(f"{base}/keys", json={"name": "extra"})).json()
        created = await c.post(
            "/v1/sandboxes", json={"project_id": project["id"], "workspace_id": workspace["id"]}
        )
        assert created.status_code == 201, created.text
        sandbox_id = created.json()["id"]
        executed = await c.post(
            f"/v1/sandboxes/{sandbox_id}/execute", json={"code": "write_file('hello.txt', 'hi')"}
        )
        context_id = executed.json()["context_id"]
        runs = f"/v1/sandboxes/{sandbox_id}/code/runs"
        submitted = await c.post(
            runs, json={"code": "write_file('art.txt', 'x')", "context_id": context_id}
        )
        assert submitted.status_code == 202, submitted.text
        run = await until_finished(c, f"{runs}/{submitted.json()['id']}")
        (artifact,) = run["execution"]["artifacts"]
        snapshot = await c.post(f"/v1/sandboxes/{sandbox_id}/snapshots")
        assert snapshot.status_code == 201, snapshot.text
    # A template of its own, and its build's record (building one takes the real runtime).
    templates = h.settings.resolved_templates_dir
    write_template(templates, org_key("tool", org["id"]))
    build = BuildRecord(
        str(uuid.uuid4()), org_key("tool", org["id"]), org["id"], BuildStatus.READY, utcnow()
    )
    records.save(templates, build)
    ids.update(
        build_id=build.build_id,
        snapshot_id=snapshot.json()["id"],
        sandbox_id=sandbox_id,
        context_id=context_id,
        run_id=run["id"],
        artifact_id=artifact["id"],
        project_id=project["id"],
        workspace_id=workspace["id"],
        member_id=member["id"],
        key_id=extra_key["id"],
    )
    assert org["slug"] == slug
    return Tenant(slug, key, ids, org["id"])


@pytest.fixture
async def tenants(harness: Harness) -> AsyncIterator[tuple[Tenant, Tenant]]:
    a = await populate(harness, "alpha")
    b = await populate(harness, "beta")
    yield a, b


def nowhere(values: dict[str, str]) -> dict[str, str]:
    """Ids of the same shapes that exist in no org."""
    fake = {
        "sandbox_id": "sb_00000000",
        "context_id": "ctx_0000000000000000",
        "run_id": "run_0000000000000000",
        "artifact_id": "art_0000000000000000",
        "snapshot_id": "snap_0000000000000000",
        "build_id": "00000000-0000-0000-0000-000000000000",
        "org": "no-such-org",
    }
    return {k: fake.get(k, "00000000-0000-0000-0000-000000000000") for k in values}


def normalise(detail: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        if name not in PLAIN_PARAMS:
            detail = detail.replace(repr(value), f"<{name}>").replace(value, f"<{name}>")
    return detail


async def call(
    client: httpx.AsyncClient, endpoint: Endpoint, values: dict[str, str], **extra: Any
) -> httpx.Response:
    return await client.request(
        endpoint.method, fill(endpoint.path, values), **request_parts(endpoint), **extra
    )


async def assert_hidden(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    values: dict[str, str],
    *,
    keep: str | None = None,
    **extra: Any,
) -> None:
    """The route answers B's ids exactly as it answers ids that exist nowhere (``keep``: the
    caller's own parent, kept in that comparison): a 404."""
    response = await call(client, endpoint, values, **extra)
    what = f"{endpoint.method} {fill(endpoint.path, values)}"
    assert response.status_code == 404, f"{what} leaked: {response.status_code} {response.text}"
    body = assert_envelope(response, 404, "not_found_error")
    real = {k: v for k, v in values.items() if k in PLAIN_PARAMS or k == keep}
    absent_values = {**nowhere(values), **real}
    absent = await call(client, endpoint, absent_values, **extra)
    assert absent.status_code == 404, f"{what} with unknown ids: {absent.text}"
    assert normalise(body["detail"], values) == normalise(absent.json()["detail"], absent_values), (
        what
    )


async def test_every_route_is_tenant_free_or_hides_other_orgs(
    harness: Harness, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    covered = 0
    async with harness.as_key(a.key) as attacker:
        for endpoint in endpoints(harness):
            if (endpoint.method, endpoint.path) in TENANT_FREE:
                continue
            params = endpoint.params
            assert params, (
                f"{endpoint.method} {endpoint.path} names no resource: add it to TENANT_FREE "
                "(and check it shows nothing of another org) or give it a resource parameter"
            )
            unknown = [p for p in params if p not in b.ids and p not in PLAIN_PARAMS]
            assert not unknown, (
                f"{endpoint.method} {endpoint.path}: no org-B value for {unknown}; create one "
                "in populate() of tests/api/test_tenant_isolation.py"
            )
            values = {p: b.ids.get(p) or PLAIN_PARAMS[p] for p in params}
            await assert_hidden(attacker, endpoint, values)
            covered += 1
            # B's child resources under A's own sandbox or org are not found either.
            parent = "sandbox_id" if "sandbox_id" in params else "org"
            if len([p for p in params if p not in PLAIN_PARAMS]) > 1:
                mixed = {**values, parent: a.ids[parent]}
                await assert_hidden(attacker, endpoint, mixed, keep=parent)
    assert covered > 30


async def test_the_operator_reaches_other_orgs_limits_and_credits_but_no_sandbox(
    harness: Harness, tenants: tuple[Tenant, Tenant]
) -> None:
    _a, b = tenants
    for endpoint in endpoints(harness):
        key = (endpoint.method, endpoint.path)
        if key in TENANT_FREE or key in OPERATOR_REACH:
            continue
        values = {p: b.ids.get(p) or PLAIN_PARAMS[p] for p in endpoint.params}
        await assert_hidden(harness.client, endpoint, values)
    got = await harness.client.get(f"/v1/orgs/{b.slug}")
    assert got.status_code == 200 and got.json()["role"] is None


async def test_sandbox_hosts_hide_other_orgs_sandboxes(
    harness: Harness, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    host = b.ids["sandbox_id"].replace("_", "-") + ".sandbox.localhost"
    prefix = "/v1/sandboxes/{sandbox_id}/agent"
    async with harness.as_key(a.key) as attacker:
        swept = 0
        for endpoint in endpoints(harness):
            if not endpoint.path.startswith(prefix):
                continue
            path = fill(endpoint.path[len(prefix) :] or "/", PLAIN_PARAMS)
            response = await attacker.request(
                endpoint.method, path, headers={"Host": host}, **request_parts(endpoint)
            )
            assert_envelope(response, 404, "not_found_error")
            swept += 1
        assert swept >= 4
    # The owner reaches the same host: the 404 above is about the tenant, not the host.
    async with harness.as_key(b.key) as owner:
        assert (await owner.get("/", headers={"Host": host})).status_code == 200


async def test_tenant_free_routes_show_nothing_of_other_orgs(
    harness: Harness, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    async with harness.as_key(a.key) as attacker:
        listed = (await attacker.get("/v1/sandboxes", params={"limit": 200})).json()
        assert b.ids["sandbox_id"] not in {s["id"] for s in listed["items"]}
        assert [o["slug"] for o in (await attacker.get("/v1/orgs")).json()["items"]] == [a.slug]
        # A cannot create into B's project or workspace, nor from B's snapshot: they do not
        # exist for A.
        for field in ("project_id", "workspace_id", "snapshot_id"):
            response = await attacker.post("/v1/sandboxes", json={field: b.ids[field]})
            assert_envelope(response, 404, "not_found_error")
        snapshots = (await attacker.get("/v1/snapshots", params={"limit": 200})).json()
        assert [s["id"] for s in snapshots["items"]] == [a.ids["snapshot_id"]]
        # Templates are the server's, but the snapshot counts are A's own.
        listed = {t["name"]: t for t in (await attacker.get("/v1/templates")).json()["items"]}
        assert (listed["python"]["snapshots"], listed["python"]["public"]) == (1, True)
        assert listed["tool"]["template_id"] == org_key("tool", a.org_id)  # A's own, not B's
        # Nor use B's own template, by its key; nor see its build under either name.
        b_tool = org_key("tool", b.org_id)
        response = await attacker.post("/v1/sandboxes", json={"template": b_tool})
        assert_envelope(response, 404, "not_found_error")
        for name in ("tool", b_tool):
            response = await attacker.get(f"/v1/templates/{name}/builds/{b.ids['build_id']}")
            assert_envelope(response, 404, "not_found_error")
        response = await attacker.delete(f"/v1/templates/{b_tool}")
        assert_envelope(response, 404, "not_found_error")
        # Nor make a key for B's member, nor one scoped to B's project.
        for body in ({"member_id": b.ids["member_id"]}, {"project_id": b.ids["project_id"]}):
            response = await attacker.post(f"/v1/orgs/{a.slug}/keys", json=body)
            assert_envelope(response, 404, "not_found_error")
        for path in ("/v1/health", "/openapi.json"):
            text = (await attacker.get(path)).text
            assert b.ids["sandbox_id"] not in text and b.slug not in text
