"""Leap0's sandbox calls (``/v1/sandbox…``, singular) over our sandbox service.

Each answers exactly the status Leap0's SDK expects (it accepts no other, not even another 2xx,
and follows no redirect): create 201, get 200, delete 204. Both spellings of a path, with and
without the trailing slash the SDK puts on get and delete, are served as they are.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from sandcastle.api.deps import ServicesDep
from sandcastle.domain.sandbox import TimeoutAction
from sandcastle.leap0.access import PrincipalDep, SandboxDep
from sandcastle.leap0.mapping import leap0_state, sandbox_out, template_for
from sandcastle.leap0.schemas import CreateSandboxBody
from sandcastle.services.executions import check_env_vars
from sandcastle.services.provisioning import CreateSandbox

router = APIRouter(tags=["leap0"])


@router.post("/v1/sandbox", status_code=201)
@router.post("/v1/sandbox/", status_code=201, include_in_schema=False)
async def create(
    body: CreateSandboxBody, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Create a sandbox; it is running when this answers (the SDK does not wait for it)."""
    env = dict(body.env_vars or {})
    check_env_vars(env)
    policy = body.network_policy
    request = CreateSandbox(
        template=template_for(services.settings, body.template_name),
        vcpus=body.vcpu,
        memory_mb=body.memory,
        timeout_ms=None if body.timeout is None else body.timeout * 1000,
        timeout_action=TimeoutAction.HIBERNATE if body.auto_pause else TimeoutAction.DESTROY,
        # Leap0's own default is the open internet; ours is none unless asked for, as on every
        # surface of this server (docs/SECURITY.md).
        internet=policy is not None and policy.mode == "allow-all",
        env=env,
    )
    sandbox = await services.sandboxes.create(principal, request)
    return sandbox_out(sandbox, leap0_state(sandbox.status) or "starting")


@router.get("/v1/sandbox/{sandbox_id}/")
@router.get("/v1/sandbox/{sandbox_id}", include_in_schema=False)
async def get(call: SandboxDep) -> dict[str, Any]:
    return sandbox_out(call.sandbox, call.state)


@router.delete("/v1/sandbox/{sandbox_id}/", status_code=204)
@router.delete("/v1/sandbox/{sandbox_id}", status_code=204, include_in_schema=False)
async def delete(call: SandboxDep, services: ServicesDep) -> Response:
    await services.sandboxes.destroy(call.principal, call.sandbox_id)
    return Response(status_code=204)
