"""Commands that talk to a running server: ``info``, ``sandbox create|list|get|kill``, ``exec``.

They read ``SANDCASTLE_URL`` and ``SANDCASTLE_API_KEY`` (``info`` needs no key) and exit non-zero
with one clear line on error.
"""

from __future__ import annotations

import sys
import typing
from typing import Annotated

import typer
from rich.table import Table

from sandcastle.cli.connection import DEFAULT_URL, KeyOpt, UrlOpt, connected, err, out
from sandcastle_sdk import Sandbox

sandbox_app = typer.Typer(help="Create, list and destroy sandboxes.", no_args_is_help=True)


def info(url: UrlOpt = DEFAULT_URL) -> None:
    """Show the server's version, runtime backend (and why) and warm pools; needs no key."""
    with connected(url, "") as client:
        health = client.health()
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("server", url)
    summary.add_row("version", health.version)
    runtime = health.runtime
    if health.runtime_reason:
        runtime += f"  [dim]({health.runtime_reason})[/]"
    summary.add_row("runtime", runtime)
    others = [name for name in health.runtimes if name != health.runtime]
    if others:
        summary.add_row("also", f"{', '.join(others)}  [dim](for templates pinned to it)[/]")
    out.print(summary)
    pools = health.warm_pools
    if not pools:
        out.print("[dim]no warm pools[/]")
        return
    table = Table("warm pool", "ready", "target")
    for template, pool in sorted(pools.items()):
        ready, target = pool.ready, pool.target
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
    timeout = None if timeout_ms is None else timeout_ms / 1000
    with connected(url, key) as client, err.status("creating sandbox…"):
        sandbox = Sandbox.create(
            template, timeout=timeout, memory_mb=memory_mb, vcpus=vcpus, client=client
        )
    out.print(sandbox.id)


@sandbox_app.command("list")
def list_(url: UrlOpt = DEFAULT_URL, key: KeyOpt = "", limit: int = 50) -> None:
    """List sandboxes, newest first."""
    table = Table("id", "status", "template", "created_at", "expires_at")
    with connected(url, key) as client:
        for count, sandbox in enumerate(Sandbox.list(client=client, page_size=limit)):
            if count == limit:
                break
            s = sandbox.info
            expires = "" if s.expires_at is None else s.expires_at.isoformat()
            table.add_row(s.id, s.status, s.template, s.created_at.isoformat(), expires)
    out.print(table)


@sandbox_app.command("get")
def get(sandbox_id: str, url: UrlOpt = DEFAULT_URL, key: KeyOpt = "") -> None:
    """Print one sandbox as JSON."""
    with connected(url, key) as client:
        sandbox = Sandbox.connect(sandbox_id, client=client)
    out.print_json(sandbox.info.model_dump_json(exclude_none=True))


@sandbox_app.command("kill")
def kill(sandbox_id: str, url: UrlOpt = DEFAULT_URL, key: KeyOpt = "") -> None:
    """Destroy a sandbox."""
    with connected(url, key) as client:
        info = Sandbox.connect(sandbox_id, client=client).kill()
    out.print(f"{info.id} {info.status}")


def exec_code(
    sandbox_id: str,
    code: Annotated[str, typer.Argument(help="Code to run; '-' reads standard input.")],
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
    context: Annotated[str | None, typer.Option("--context", help="Context id to reuse.")] = None,
    language: Annotated[str, typer.Option(help="Language of the code.")] = "python",
) -> None:
    """Run code in a sandbox, its output as it comes; exits 1 if the code raised."""
    if code == "-":
        code = typer.get_text_stream("stdin").read()
    with connected(url, key) as client:
        sandbox = Sandbox.connect(sandbox_id, client=client)
        result = sandbox.run_code(
            code,
            language=language,
            context=context,
            on_stdout=lambda text: _write(sys.stdout, text),
            on_stderr=lambda text: _write(sys.stderr, text),
        )
    if result.text is not None:
        out.out(result.text)
    err.print(f"[dim]context {result.context_id}[/]")
    if result.error is not None:
        err.print(f"[red]{result.error.name}[/]: {result.error.value}", highlight=False)
        raise typer.Exit(1)


def _write(stream: typing.TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()
