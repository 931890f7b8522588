"""Isolation between tenants on E2B's surface (``docs/E2B.md``), swept over its route tables.

Every control-plane route with a sandbox in its path is called with org A's key and org B's
sandbox: the answer must be the 404 of a sandbox that exists nowhere. Every sandbox-side route
(envd's HTTP routes, each method of its two Connect services, the code interpreter's routes) is
called for B's sandbox with A's own sandbox token, and with none: not found, and unauthenticated.
A route added to any of those tables is swept without being listed here.
"""

from __future__ import annotations

import json
import re
import struct
from typing import Any

import httpx
from e2b.envd.filesystem import filesystem_connect
from e2b.envd.process import process_connect
from fastapi.routing import APIRoute

from sandcastle.e2b import control, envd_http, interpreter
from tests.api.conftest import Harness
from tests.api.test_e2b_api import assert_e2b_error, create, e2b_client

UNKNOWN = "sb_0000beef"
#: Bodies the control plane's routes need to get past validation.
BODIES: dict[str, dict[str, Any]] = {"timeout": {"timeout": 60}}
#: Control-plane routes without a sandbox in the path: what each shows of another org is
#: checked by ``test_tenant_free_e2b_routes_show_nothing_of_other_orgs``.
TENANT_FREE = {
    ("POST", "/sandboxes"),
    ("POST", "/v2/sandboxes"),
    ("GET", "/sandboxes"),
    ("GET", "/v2/sandboxes"),
    ("GET", "/sandboxes/metrics"),
}
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


def routes(router_routes: list[Any]) -> list[tuple[str, str]]:
    return sorted(
        (method, route.path)
        for route in router_routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    )


def connect_methods() -> list[tuple[str, str]]:
    """Every Connect method of envd's two services, as ``(path, kind)``."""
    found = []
    for service in (filesystem_connect.Filesystem, process_connect.Process):
        desc = service.desc()
        for method in desc.methods:
            found.append((f"/{desc.type_name}/{method.name}", str(method.method_kind)))
    return found


async def connect_call(
    client: httpx.AsyncClient, path: str, kind: str, headers: dict[str, str]
) -> str:
    """The Connect error code of a call (unary: the JSON body; streams: the end frame)."""
    if kind == "unary":
        response = await client.post(
            path, json={}, headers={**headers, "Connect-Protocol-Version": "1"}
        )
        assert response.status_code != 200, response.text
        return str(response.json()["code"])
    frame = b"\x00" + struct.pack(">I", 2) + b"{}"
    response = await client.post(
        path,
        content=frame,
        headers={**headers, "Content-Type": "application/connect+json"},
    )
    data, end = response.content, None
    while data:
        flags, size = data[0], struct.unpack(">I", data[1:5])[0]
        if flags & 0x02:
            end = json.loads(data[5 : 5 + size])
        data = data[5 + size :]
    assert end is not None and "error" in end, response.content
    return str(end["error"]["code"])


async def test_every_e2b_sandbox_route_hides_other_orgs_sandboxes(harness: Harness) -> None:
    async with e2b_client(harness) as a:
        mine = await create(a)
    _, other_key = await harness.add_org("other")
    async with e2b_client(harness, key=other_key) as b:
        theirs = (await create(b))["sandboxID"]
    swept = 0
    async with e2b_client(harness) as attacker:
        for method, path in routes(control.router.routes):
            if (method, path) in TENANT_FREE:
                continue
            assert _PARAM.findall(path) == ["sandbox_id"], f"{method} {path}: add it to the sweep"
            body = BODIES.get(path.rsplit("/", 1)[-1], {}) if method == "POST" else None
            hidden = await attacker.request(method, path.format(sandbox_id=theirs), json=body)
            absent = await attacker.request(method, path.format(sandbox_id=UNKNOWN), json=body)
            message = assert_e2b_error(hidden, 404)
            assert message.replace(theirs, "ID") == assert_e2b_error(absent, 404).replace(
                UNKNOWN, "ID"
            ), f"{method} {path}"
            swept += 1

    sandbox_side = [
        *((m, p, "49983") for m, p in routes(envd_http.router.routes)),
        *((m, p, "49999") for m, p in routes(interpreter.router.routes)),
    ]
    async with e2b_client(harness, key="") as anon:
        for method, path, port in sandbox_side:
            concrete = path.format(context_id="ctx_0000")
            headers = {"E2b-Sandbox-Id": theirs, "E2b-Sandbox-Port": port}
            with_my_token = {**headers, "X-Access-Token": mine["envdAccessToken"]}
            body = {"code": "1"} if path == "/execute" else {}
            json_body = body if method == "POST" else None
            assert_e2b_error(
                await anon.request(method, concrete, headers=with_my_token, json=json_body), 404
            )
            assert_e2b_error(
                await anon.request(method, concrete, headers=headers, json=json_body), 401
            )
            swept += 1
        for path, kind in connect_methods():
            headers = {"E2b-Sandbox-Id": theirs, "E2b-Sandbox-Port": "49983"}
            mine_token = {**headers, "X-Access-Token": mine["envdAccessToken"]}
            assert await connect_call(anon, path, kind, mine_token) == "not_found", path
            assert await connect_call(anon, path, kind, headers) == "unauthenticated", path
            swept += 1
    assert swept >= 30


async def test_tenant_free_e2b_routes_show_nothing_of_other_orgs(harness: Harness) -> None:
    _, other_key = await harness.add_org("other")
    async with e2b_client(harness, key=other_key) as b:
        theirs = (await create(b))["sandboxID"]
    async with e2b_client(harness) as a:
        mine = (await create(a))["sandboxID"]
        for path in ("/sandboxes", "/v2/sandboxes"):
            assert [s["sandboxID"] for s in (await a.get(path)).json()] == [mine]
        assert_e2b_error(await a.get("/sandboxes/metrics", params={"sandbox_ids": theirs}), 404)
