"""``/v1/templates``: the built templates an org may use; deleting one nothing needs any more."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from sandcastle.api.deps import PrincipalDep, ServicesDep
from sandcastle.api.schemas import rfc3339

router = APIRouter(prefix="/v1/templates", tags=["templates"])


class TemplateOut(BaseModel):
    name: str
    template_id: str = Field(
        description="What its sandboxes record as their `template`: the name, with `+<org id>` "
        "for an org's own template."
    )
    public: bool = Field(description="Every org's (the server's), or the caller's org's own.")
    defaults: dict[str, int] = Field(
        description="What its sandboxes get when they ask for none: `vcpus`, `memory_mb`, "
        "`disk_mb` (those it sets)."
    )
    build_id: str
    built_at: str
    size_bytes: int
    snapshots: int = Field(description="Snapshots of the caller's org made on this template.")
    runtime: str | None = Field(
        description="The backend its sandboxes run on if the template pins one (`gvisor`, "
        "`bwrap`); null: the server's default (`GET /v1/health`)."
    )


class TemplateListOut(BaseModel):
    items: list[TemplateOut]


@router.get("", response_model=TemplateListOut)
async def list_templates(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """The server's public templates and the caller's org's own, by name."""
    templates = await services.templates.list(principal)
    return {
        "items": [
            {
                "name": t.name,
                "template_id": t.key,
                "public": t.public,
                "defaults": dict(t.defaults),
                "build_id": t.build_id,
                "built_at": rfc3339(t.built_at),
                "size_bytes": t.size_bytes,
                "snapshots": t.snapshots,
                "runtime": t.runtime,
            }
            for t in templates
        ]
    }


@router.delete("/{name}", status_code=204)
async def delete_template(name: str, principal: PrincipalDep, services: ServicesDep) -> Response:
    """Remove a built template: the org's own (its owners and admins), or a public one (the
    server's operators only: owners of its first org). 409 while any snapshot or live sandbox
    uses it."""
    await services.templates.delete(principal, name)
    return Response(status_code=204)
