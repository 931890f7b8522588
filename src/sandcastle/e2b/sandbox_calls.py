"""What every E2B sandbox-side call needs before it runs: the sandbox its token opens, within
the rate limit (per sandbox), and the sandbox's activity recorded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from connectrpc.request import RequestContext
from fastapi import Depends, Request

from sandcastle.api.deps import get_services
from sandcastle.api.ratelimit import RateLimiter
from sandcastle.e2b.access import ENVD_PORT, INTERPRETER_PORT, SandboxCall, authorise
from sandcastle.e2b.users import check_basic_user
from sandcastle.wiring import Services


async def admit(
    services: Services, ratelimit: RateLimiter, headers: Mapping[str, str], port: int
) -> SandboxCall:
    call = await authorise(services.sandboxes, headers, port)
    settings = services.settings
    ratelimit.check(call.principal.key_id, settings.rate_limit_per_s, settings.rate_limit_burst)
    services.activity.touch(call.sandbox_id)
    return call


async def envd_call(request: Request) -> SandboxCall:
    return await admit(
        get_services(request), request.app.state.ratelimit, request.headers, ENVD_PORT
    )


async def interpreter_call(request: Request) -> SandboxCall:
    return await admit(
        get_services(request), request.app.state.ratelimit, request.headers, INTERPRETER_PORT
    )


EnvdCall = Annotated[SandboxCall, Depends(envd_call)]
InterpreterCall = Annotated[SandboxCall, Depends(interpreter_call)]


class EnvdRpc:
    """What the calls of envd's Connect services share: admission (the user a call names must
    be the sandbox's one user). Each call runs under ``errors.connect_errors``."""

    def __init__(self, services: Services, ratelimit: RateLimiter) -> None:
        self._services = services
        self._ratelimit = ratelimit

    async def _call(self, ctx: RequestContext[Any, Any]) -> SandboxCall:
        check_basic_user(ctx.request_headers.get("authorization"))
        return await admit(self._services, self._ratelimit, ctx.request_headers, ENVD_PORT)
