"""``/v1/sandboxes/{id}/code/runs``: asynchronous code runs (``code-runs-list.txt``).

Control-plane routes: errors use the envelope. Every run carries every field of the document,
``null`` where it does not apply yet (``started_at`` of a queued run, ``execution`` of a run that
has not run, ``failure_reason`` of one that did not fail).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from sandcastle.api.bounded import EnvVars
from sandcastle.api.deps import PrincipalDep, ServicesDep
from sandcastle.api.request_body import Language, PositiveInteger, RequestBody
from sandcastle.api.schemas import ErrorOut, LogsOut, rfc3339
from sandcastle.domain.execution import MIME_FIELDS
from sandcastle.domain.runs import Artifact, Run, RunStatus
from sandcastle.services.artifacts import previewable
from sandcastle.services.runs import SubmitRun

router = APIRouter(prefix="/v1/sandboxes", tags=["code runs"])


class RunCreateBody(RequestBody):
    #: Bounded so any request fits one agent-channel frame, whatever its escaping.
    code: str = Field(max_length=2_000_000)
    language: Language | None = Field(
        default=None,
        description="Any spelling `execute` accepts; defaults to the context's language, or "
        "python for a new context.",
    )
    context_id: str | None = Field(
        default=None, description="Run in this context, after its earlier runs; else a new one."
    )
    env_vars: EnvVars = None
    timeout_secs: PositiveInteger | None = Field(
        default=None, description="Defaults to the server's run_default_timeout_secs."
    )


class RunResultOut(BaseModel):
    text: str | None
    html: str | None
    markdown: str | None
    svg: str | None
    png: str | None
    jpeg: str | None
    pdf: str | None
    latex: str | None
    json_: Any = Field(alias="json")
    javascript: str | None
    data: dict[str, Any] = Field(description="The raw MIME bundle.")
    is_main_result: bool


class ArtifactOut(BaseModel):
    id: str
    context_id: str
    mime_type: str
    name: str = Field(description="Path relative to the context's working directory.")
    size_bytes: int
    sha256: str | None = Field(description="Null when the file was not kept (see metadata).")
    created_at: str
    execution_count: int | None
    expires_at: str
    preview_url: str | None
    download_url: str | None
    metadata: dict[str, Any]


class RunExecutionOut(BaseModel):
    results: list[RunResultOut]
    artifacts: list[ArtifactOut]
    logs: LogsOut
    error: ErrorOut | None
    execution_count: int | None


class RunOut(BaseModel):
    id: str
    sandbox_id: str
    context_id: str | None = Field(description="Null until a run without one gets its context.")
    status: RunStatus
    timeout_secs: int
    created_at: str
    expires_at: str
    started_at: str | None
    completed_at: str | None
    cancel_requested_at: str | None
    execution: RunExecutionOut | None
    failure_reason: str | None


class RunListOut(BaseModel):
    items: list[RunOut]
    next_cursor: str | None


def artifact_out(request: Request, artifact: Artifact) -> dict[str, Any]:
    urls: dict[str, str | None] = {"download_url": None, "preview_url": None}
    if artifact.stored:
        params = {"sandbox_id": artifact.sandbox_id, "artifact_id": artifact.id}
        urls["download_url"] = str(request.url_for("download_artifact", **params))
        if previewable(artifact.mime_type):
            urls["preview_url"] = str(request.url_for("preview_artifact", **params))
    return {
        "id": artifact.id,
        "context_id": artifact.context_id,
        "mime_type": artifact.mime_type,
        "name": artifact.name,
        "size_bytes": artifact.size_bytes,
        "sha256": artifact.sha256,
        "created_at": rfc3339(artifact.created_at),
        "execution_count": artifact.execution_count,
        "expires_at": rfc3339(artifact.expires_at),
        **urls,
        "metadata": artifact.metadata,
    }


def run_out(request: Request, run: Run) -> dict[str, Any]:
    execution = None
    if run.execution is not None:
        execution = {
            "results": [
                {
                    **dict.fromkeys(MIME_FIELDS.values()),
                    **result.fields(),
                    "data": result.data,
                    "is_main_result": result.is_main_result,
                }
                for result in run.execution.results
            ],
            "artifacts": [artifact_out(request, a) for a in run.artifacts],
            "logs": {"stdout": run.execution.stdout, "stderr": run.execution.stderr},
            "error": run.execution.error,
            "execution_count": run.execution.execution_count,
        }
    return {
        "id": run.id,
        "sandbox_id": run.sandbox_id,
        "context_id": run.context_id,
        "status": run.status.value,
        "timeout_secs": run.timeout_secs,
        "created_at": rfc3339(run.created_at),
        "expires_at": rfc3339(run.expires_at),
        "started_at": rfc3339(run.started_at),
        "completed_at": rfc3339(run.completed_at),
        "cancel_requested_at": rfc3339(run.cancel_requested_at),
        "execution": execution,
        "failure_reason": run.failure_reason,
    }


@router.post(
    "/{sandbox_id}/code/runs", status_code=202, response_model=RunOut, response_model_by_alias=True
)
async def submit_run(
    sandbox_id: str,
    body: RunCreateBody,
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
) -> dict[str, Any]:
    """Queue code to run in the background; poll the run (or the list) for its outcome.

    Runs on one context execute one at a time in submission order; runs on different contexts
    run concurrently, up to the server's per-sandbox limit. Without ``context_id`` the run gets
    a new context when it starts. A paused sandbox's runs wait until it resumes.
    """
    run = await services.runs.submit(
        principal,
        sandbox_id,
        SubmitRun(
            code=body.code,
            language=body.language,
            context_id=body.context_id,
            env_vars=body.env_vars,
            timeout_secs=body.timeout_secs,
        ),
    )
    return run_out(request, run)


@router.get("/{sandbox_id}/code/runs", response_model=RunListOut, response_model_by_alias=True)
async def list_runs(
    sandbox_id: str,
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    status: Annotated[RunStatus | None, Query()] = None,
    context_id: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    """The sandbox's runs, newest first; ``next_cursor`` is null on the last page."""
    runs, next_cursor = await services.runs.list(
        principal, sandbox_id, status=status, context_id=context_id, limit=limit, cursor=cursor
    )
    return {"items": [run_out(request, run) for run in runs], "next_cursor": next_cursor}


@router.get("/{sandbox_id}/code/runs/{run_id}", response_model=RunOut, response_model_by_alias=True)
async def get_run(
    sandbox_id: str, run_id: str, request: Request, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    return run_out(request, await services.runs.get(principal, sandbox_id, run_id))


@router.post(
    "/{sandbox_id}/code/runs/{run_id}/cancel",
    status_code=202,
    response_model=RunOut,
    response_model_by_alias=True,
)
async def cancel_run(
    sandbox_id: str, run_id: str, request: Request, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Cancel a run: a queued one never starts (``cancelled`` at once); a running one is
    interrupted and ends ``cancelled`` shortly after. A finished run is a 409."""
    return run_out(request, await services.runs.cancel(principal, sandbox_id, run_id))
