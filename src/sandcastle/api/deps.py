"""Dependencies: the services ``wiring.py`` built, and the authenticated principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sandcastle.api.ratelimit import RateLimiter
from sandcastle.services.auth import Principal, authenticate
from sandcastle.wiring import Services

__all__ = ["Services", "get_principal", "get_services"]


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


_bearer = HTTPBearer(auto_error=False, description="API key passed as Bearer token")


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    services = get_services(request)
    principal = await authenticate(
        services.tenancy_store, credentials.credentials if credentials else None
    )
    settings = services.settings
    ratelimit: RateLimiter = request.app.state.ratelimit
    ratelimit.check(
        principal.key_id,
        settings.rate_limit_per_s
        if principal.rate_limit_per_s is None
        else principal.rate_limit_per_s,
        principal.rate_limit_burst or settings.rate_limit_burst,
    )
    return principal


ServicesDep = Annotated[Services, Depends(get_services)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
