"""Dependencies: the services ``wiring.py`` built, and the authenticated principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sandcastle.api.ratelimit import RateLimiter
from sandcastle.services.auth import Principal
from sandcastle.services.principals import authenticate
from sandcastle.wiring import Services

__all__ = ["Services", "check_rate", "get_principal", "get_services", "principal_for_key"]


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


_bearer = HTTPBearer(auto_error=False, description="API key passed as Bearer token")


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return await principal_for_key(request, credentials.credentials if credentials else None)


async def principal_for_key(request: Request, key: str | None) -> Principal:
    """The principal of an API key, however it was presented, within its rate limit."""
    services = get_services(request)
    principal = await authenticate(services.tenancy_store, key, services.principals)
    check_rate(request, principal)
    return principal


def check_rate(request: Request, principal: Principal) -> None:
    settings = get_services(request).settings
    ratelimit: RateLimiter = request.app.state.ratelimit
    ratelimit.check(
        principal.key_id,
        settings.rate_limit_per_s
        if principal.rate_limit_per_s is None
        else principal.rate_limit_per_s,
        principal.rate_limit_burst or settings.rate_limit_burst,
    )


ServicesDep = Annotated[Services, Depends(get_services)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
