"""Who may reach a sandbox through E2B's sandbox-side APIs, and as whom.

E2B's clients reach a sandbox's daemon (envd, port 49983) with the sandbox's
``envdAccessToken`` in ``X-Access-Token``, and its code interpreter (port 49999) with the
``trafficAccessToken`` in ``E2B-Traffic-Access-Token`` (``/execute`` sends both). No API key
comes with them, so the token is the credential: knowing a sandbox's id is never enough. A
missing token is 401; a token that is not this sandbox's is 404, as if there were no such
sandbox, so a caller learns nothing about sandboxes that are not its own.

A call that passes acts as an admin of the sandbox's org, confined by construction to that one
sandbox: every handler behind this module is given the resolved sandbox's id, never one from
the request.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from sandcastle.domain.roles import Role
from sandcastle.domain.sandbox import Sandbox, SandboxStatus
from sandcastle.errors import AgentUnavailableError, AuthenticationError, NotFoundError
from sandcastle.services.auth import Principal
from sandcastle.services.sandboxes import SandboxService

ENVD_PORT = 49983
INTERPRETER_PORT = 49999
SANDBOX_ID_HEADER = "e2b-sandbox-id"
SANDBOX_PORT_HEADER = "e2b-sandbox-port"
ACCESS_TOKEN_HEADER = "x-access-token"
TRAFFIC_TOKEN_HEADER = "e2b-traffic-access-token"


@dataclass(frozen=True)
class SandboxCall:
    """A call that proved its right to one sandbox."""

    sandbox: Sandbox
    principal: Principal

    @property
    def sandbox_id(self) -> str:
        return self.sandbox.id


def _matches(presented: str | None, expected: str | None) -> bool:
    return (
        presented is not None
        and expected is not None
        and hmac.compare_digest(presented.encode(), expected.encode())
    )


def token_principal(sandbox: Sandbox) -> Principal:
    return Principal(
        key_id=f"sandbox-token:{sandbox.id}",
        org_id=sandbox.org_id,
        project_id=sandbox.project_id or None,
        role=Role.ADMIN,
    )


async def authorise(
    sandboxes: SandboxService, headers: Mapping[str, str], port: int
) -> SandboxCall:
    """The sandbox a call names (``E2b-Sandbox-Id``) if its token opens it on ``port``.

    ``headers`` looks names up in lower case (Starlette's and connectrpc's both do)."""
    sandbox_id = headers.get(SANDBOX_ID_HEADER, "")
    access = headers.get(ACCESS_TOKEN_HEADER)
    traffic = headers.get(TRAFFIC_TOKEN_HEADER) if port == INTERPRETER_PORT else None
    if access is None and traffic is None:
        header = "X-Access-Token" if port == ENVD_PORT else "E2B-Traffic-Access-Token"
        raise AuthenticationError(f"missing {header}: the sandbox's access token is required")
    sandbox = await sandboxes.find_by_id(sandbox_id) if sandbox_id else None
    if sandbox is None or not (
        _matches(access, sandbox.envd_access_token)
        or _matches(traffic, sandbox.traffic_access_token)
    ):
        raise NotFoundError(f"sandbox {sandbox_id} not found")
    if sandbox.status in (SandboxStatus.DESTROYED, SandboxStatus.ERROR):
        # What E2B's proxy answers for a sandbox that is gone: its clients read a 502 as "the
        # sandbox timed out or was killed".
        raise AgentUnavailableError(f"sandbox {sandbox_id} is {sandbox.status.value}")
    return SandboxCall(sandbox, token_principal(sandbox))
