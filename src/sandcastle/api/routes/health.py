"""``GET /v1/health``: liveness, version and the active runtime backend. No key needed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from sandcastle import __version__
from sandcastle.api.deps import ServicesDep
from sandcastle.api.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/v1/health", response_model=HealthOut)
async def health(services: ServicesDep) -> dict[str, Any]:
    """Liveness, the runtime backend in use (and why), and each warm pool's fill."""
    return {
        "status": "ok",
        "version": __version__,
        "runtime": services.runtime.name,
        "runtime_reason": services.runtime_reason,
        "runtimes": services.runtime.available,
        "warm_pools": await services.pool.status(),
    }
