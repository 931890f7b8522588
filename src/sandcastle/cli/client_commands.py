"""Commands that talk to a running server: ``info``, ``sandbox create|list|get|kill``, ``exec``.

They read ``SANDCASTLE_URL`` and ``SANDCASTLE_API_KEY`` (``info`` needs no key) and exit non-zero
with one clear line on error.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.table import Table

out = Console()
err = Console(stderr=True)
sandbox_app = typer.Typer(help="Create, list and destroy sandboxes.", no_args_is_help=True)

UrlOpt = Annotated[str, typer.Option(envvar="SANDCASTLE_URL", help="Server URL.")]
KeyOpt = Annotated[
    str, typer.Option(envvar="SANDCASTLE_API_KEY", help="API key.", show_default=False)
]
DEFAULT_URL = "http://127.0.0.1:8321"


def _fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/] {message}")
    raise typer.Exit(1)


def _request(method: str, url: str, key: str, path: str, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=300) as c:
            response = c.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {url}: {exc}")
    if response.status_code >= 400:
        _fail(describe(response))
    return response.json()


def describe(response: httpx.Response) -> str:
    """One line for an error answer: status, detail, and the first field error if any."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code}: {response.text}"
    detail = str(body.get("detail") or body.get("message") or response.text)
    errors = body.get("errors") or []
    if errors and isinstance(errors[0], dict):
        where = ".".join(str(part) for part in errors[0].get("loc", []))
        detail += f" ({where}: {errors[0].get('msg')})" if where else f" ({errors[0].get('msg')})"
    return f"{response.status_code}: {detail}"


def info(url: UrlOpt = DEFAULT_URL) -> None:
    """Show the server's version, runtime backend (and why) and warm pools; needs no key."""
    health = _request("GET", url, "", "/v1/health")
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("server", url)
    summary.add_row("version", health["version"])
    runtime = health["runtime"]
    if health.get("runtime_reason"):
        runtime += f"  [dim]({health['runtime_reason']})[/]"
    summary.add_row("runtime", runtime)
    others = [name for name in health.get("runtimes", []) if name != health["runtime"]]
    if others:
        summary.add_row("also", f"{', '.join(others)}  [dim](for templates pinned to it)[/]")
    out.print(summary)
    pools = health.get("warm_pools") or {}
    if not pools:
        out.print("[dim]no warm pools[/]")
        return
    table = Table("warm pool", "ready", "target")
    for template, pool in sorted(pools.items()):
        ready, target = pool["ready"], pool["target"]
        colour = "green" if ready >= target else "yellow"
        table.add_row(template, f"[{colour}]{ready}[/]", str(target))
    out.print(table)


@sandbox_app.command("create")
def create(
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
    template: Annotated[str, typer.Option(help="Template name.")] = "python",
    timeout_ms: Annotated[int | None, typer.Option(help="Lifetime in milliseconds.")] = None,
    memory_mb: Annotated[int | None, typer.Option(help="Memory limit.")] = None,
    vcpus: Annotated[int | None, typer.Option(help="CPU limit.")] = None,
) -> None:
    """Create a sandbox and print its id."""
    body: dict[str, Any] = {"template": template}
    for name, value in (("timeout_ms", timeout_ms), ("memory_mb", memory_mb), ("vcpus", vcpus)):
        if value is not None:
            body[name] = value
    with err.status("creating sandbox…"):
        sandbox = _request("POST", url, key, "/v1/sandboxes", json=body)
    out.print(sandbox["id"])


@sandbox_app.command("list")
def list_(url: UrlOpt = DEFAULT_URL, key: KeyOpt = "", limit: int = 50) -> None:
    """List sandboxes, newest first."""
    page = _request("GET", url, key, "/v1/sandboxes", params={"limit": limit})
    table = Table("id", "status", "template", "created_at", "expires_at")
    for s in page["items"]:
        table.add_row(
            s["id"], s["status"], s["template"], s["created_at"], s.get("expires_at") or ""
        )
    out.print(table)


@sandbox_app.command("get")
def get(sandbox_id: str, url: UrlOpt = DEFAULT_URL, key: KeyOpt = "") -> None:
    """Print one sandbox as JSON."""
    out.print_json(json.dumps(_request("GET", url, key, f"/v1/sandboxes/{sandbox_id}")))


@sandbox_app.command("kill")
def kill(sandbox_id: str, url: UrlOpt = DEFAULT_URL, key: KeyOpt = "") -> None:
    """Destroy a sandbox."""
    sandbox = _request("DELETE", url, key, f"/v1/sandboxes/{sandbox_id}")
    out.print(f"{sandbox['id']} {sandbox['status']}")


def exec_code(
    sandbox_id: str,
    code: Annotated[str, typer.Argument(help="Code to run; '-' reads standard input.")],
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
    context: Annotated[str | None, typer.Option("--context", help="Context id to reuse.")] = None,
    language: Annotated[str, typer.Option(help="Language of the code.")] = "python",
) -> None:
    """Run code in a sandbox and print its output; exits 1 if the code raised."""
    if code == "-":
        code = typer.get_text_stream("stdin").read()
    body: dict[str, Any] = {"code": code, "language": language}
    if context:
        body["context_id"] = context
    result = _request("POST", url, key, f"/v1/sandboxes/{sandbox_id}/execute", json=body)
    for line in result["logs"]["stdout"]:
        out.out(line, end="")
    for line in result["logs"]["stderr"]:
        err.out(line, end="")
    for item in result["items"]:
        if item.get("is_primary") and item.get("text") is not None:
            out.out(item["text"])
    err.print(f"[dim]context {result['context_id']}[/]")
    if result.get("error"):
        e = result["error"]
        err.print(f"[red]{e['name']}[/]: {e['value']}")
        raise typer.Exit(1)
