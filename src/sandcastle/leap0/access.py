"""Who a Leap0 call is, and which of its sandboxes it names.

Leap0's SDK sends ``authorization: Bearer <key>`` to both hosts, so a Leap0 call is
authenticated by one of our API keys, within its rate limit, with our tenancy: another org's
sandbox, an ended one, and an id that is none of ours are all the same 404, so a caller learns
nothing about sandboxes that are not its own. The id is taken in the ``sb-…`` form this surface
hands out, or in ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from sandcastle.api.deps import ServicesDep, principal_for_key
from sandcastle.domain.sandbox import Sandbox
from sandcastle.errors import NotFoundError
from sandcastle.leap0.mapping import Leap0State, internal_id, leap0_state
from sandcastle.services.auth import Principal


async def leap0_principal(request: Request) -> Principal:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    key = value.strip() if scheme.lower() == "bearer" else None
    return await principal_for_key(request, key)


PrincipalDep = Annotated[Principal, Depends(leap0_principal)]


@dataclass(frozen=True)
class SandboxCall:
    """A call by ``principal`` about one of its live sandboxes."""

    principal: Principal
    sandbox: Sandbox
    state: Leap0State

    @property
    def sandbox_id(self) -> str:
        """Our form of the id, the one every service takes."""
        return self.sandbox.id


async def named_sandbox(
    sandbox_id: str, principal: PrincipalDep, services: ServicesDep
) -> SandboxCall:
    """The live sandbox ``sandbox_id`` names, if it is the caller's; else 404."""
    internal = internal_id(sandbox_id)
    if internal is None:
        raise NotFoundError(f"sandbox {sandbox_id} not found")
    try:
        sandbox = await services.sandboxes.get(principal, internal)
    except NotFoundError as exc:
        # Re-worded so an absent id and another org's read the same, in the caller's spelling.
        raise NotFoundError(f"sandbox {sandbox_id} not found") from exc
    state = leap0_state(sandbox.status)
    if state is None:
        raise NotFoundError(f"sandbox {sandbox_id} not found")
    return SandboxCall(principal, sandbox, state)


async def working_sandbox(
    call: Annotated[SandboxCall, Depends(named_sandbox)], services: ServicesDep
) -> SandboxCall:
    """A call that works in the sandbox (files, contexts): it counts as the sandbox's activity,
    as the same calls on our own API do; reading or deleting the record does not."""
    services.activity.touch(call.sandbox_id)
    return call


SandboxDep = Annotated[SandboxCall, Depends(named_sandbox)]
WorkDep = Annotated[SandboxCall, Depends(working_sandbox)]
