"""``/v1/sandboxes/{id}/artifacts/{artifact_id}``: a run's artifact, downloaded, previewed or
deleted (stored artifacts count against the org's ``org_max_artifact_mb``).

Artifacts are files user code wrote: untrusted content served from the API's own origin. Every
response therefore carries ``Content-Security-Policy: default-src 'none'; sandbox`` (no script,
no subresource, a unique origin even if the document is HTML) and ``X-Content-Type-Options:
nosniff`` (the browser never second-guesses the type towards something executable). Downloads
are attachments; previews render inline: images as themselves, CSV as an HTML table built here
with every cell escaped, HTML as it is (defused by the policy), other text as ``text/plain``.
"""

from __future__ import annotations

import asyncio
import csv
import html
import io
import posixpath
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from sandcastle.api.deps import PrincipalDep, ServicesDep
from sandcastle.domain.runs import Artifact
from sandcastle.errors import NotFoundError
from sandcastle.services.artifacts import previewable

router = APIRouter(prefix="/v1/sandboxes", tags=["artifacts"])

#: On every artifact response; see the module docstring.
SAFE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, no-cache",
}
#: A CSV preview reads at most this much of the file and shows at most this many rows.
CSV_PREVIEW_BYTES = 2 * 1024 * 1024
CSV_PREVIEW_ROWS = 1000
_CSV_TYPES = frozenset({"text/csv", "text/tab-separated-values"})


def _disposition(kind: str, name: str) -> str:
    return f"{kind}; filename*=UTF-8''{quote(posixpath.basename(name), safe='')}"


def _headers(artifact: Artifact, kind: str) -> dict[str, str]:
    return {
        **SAFE_HEADERS,
        "Content-Disposition": _disposition(kind, artifact.name),
        "ETag": f'"{artifact.sha256}"',
    }


@router.get("/{sandbox_id}/artifacts/{artifact_id}", name="download_artifact")
async def download_artifact(
    sandbox_id: str, artifact_id: str, principal: PrincipalDep, services: ServicesDep
) -> StreamingResponse:
    """The artifact's bytes as the run left them (its ``sha256`` is the ``ETag``)."""
    artifact = await services.artifacts.get(principal, sandbox_id, artifact_id)
    headers = {**_headers(artifact, "attachment"), "Content-Length": str(artifact.size_bytes)}
    return StreamingResponse(
        services.artifacts.read(artifact), media_type=artifact.mime_type, headers=headers
    )


@router.delete("/{sandbox_id}/artifacts/{artifact_id}", status_code=204)
async def delete_artifact(
    sandbox_id: str, artifact_id: str, principal: PrincipalDep, services: ServicesDep
) -> Response:
    """Delete the artifact's bytes and forget it (its run lists it no more), freeing its share
    of the org's artifact quota. Also for skipped artifacts, which hold no bytes."""
    await services.artifacts.delete(principal, sandbox_id, artifact_id)
    return Response(status_code=204)


@router.get(
    "/{sandbox_id}/artifacts/{artifact_id}/preview", name="preview_artifact", response_model=None
)
async def preview_artifact(
    sandbox_id: str, artifact_id: str, principal: PrincipalDep, services: ServicesDep
) -> StreamingResponse | HTMLResponse:
    """The artifact rendered for a browser: images, text, CSV as a table, HTML (sandboxed)."""
    artifact = await services.artifacts.get(principal, sandbox_id, artifact_id)
    mime = artifact.mime_type
    if not previewable(mime):
        raise NotFoundError(f"artifact {artifact_id} ({mime}) has no preview; download it")
    headers = _headers(artifact, "inline")
    if mime in _CSV_TYPES:
        raw = b"".join(
            [chunk async for chunk in services.artifacts.read(artifact, CSV_PREVIEW_BYTES)]
        )
        truncated = artifact.size_bytes > CSV_PREVIEW_BYTES
        delimiter = "\t" if mime == "text/tab-separated-values" else ","
        page = await asyncio.to_thread(
            csv_table, raw, artifact.name, delimiter=delimiter, truncated=truncated
        )
        return HTMLResponse(page, headers=headers)
    if mime.startswith("image/") or mime == "text/html":
        media_type = mime
    else:
        media_type = "text/plain; charset=utf-8"
    headers["Content-Length"] = str(artifact.size_bytes)
    return StreamingResponse(
        services.artifacts.read(artifact), media_type=media_type, headers=headers
    )


def csv_table(raw: bytes, title: str, *, delimiter: str = ",", truncated: bool = False) -> str:
    """A self-contained HTML page with the CSV as a table; every cell is escaped."""
    text = raw.decode("utf-8-sig", errors="replace")
    if truncated and "\n" in text:
        text = text[: text.rindex("\n")]  # never show half a row
    rows: list[list[str]] = []
    try:
        for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
            if len(rows) > CSV_PREVIEW_ROWS:
                truncated = True
                break
            rows.append(row)
    except csv.Error:
        truncated = True  # a malformed tail: show what parsed
    head, body = (rows[0], rows[1:]) if rows else ([], [])
    out = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title></head><body>",
        "<table border=1>",
        "<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr></thead>",
        "<tbody>",
    ]
    out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body]
    out.append("</tbody></table>")
    if truncated:
        out.append("<p>Preview truncated: download the artifact for all of it.</p>")
    out.append("</body></html>")
    return "\n".join(out)
