"""``sandcastle template push``: build a template on a server, as the caller's org's own.

Unlike ``template build`` (which builds on this machine, as the server's operator), this sends the
Dockerfile and its context to a server through the SDK and follows the build: each log line as
it comes, the current step beside a spinner, and one line at the end.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from sandcastle.cli.connection import DEFAULT_URL, KeyOpt, UrlOpt, connected, err, out
from sandcastle.cli.template_options import (
    BuildArgOpt,
    ContextArg,
    DiskOpt,
    MemoryOpt,
    VcpusOpt,
    build_args,
    defaults,
)

#: The builder's step header in a log: ``=== [3/9] line 4: RUN pip install …``.
_STEP = re.compile(r"^=== \[(\d+)/(\d+)\] (.+)$")


def push(
    name: Annotated[str, typer.Argument(help="The template's name.")],
    context: ContextArg = None,
    dockerfile: Annotated[
        Path,
        typer.Option("--file", "-f", exists=True, dir_okay=False, help="The Dockerfile."),
    ] = Path("Dockerfile"),
    build_arg: BuildArgOpt = None,
    vcpus: VcpusOpt = None,
    memory_mb: MemoryOpt = None,
    disk_mb: DiskOpt = None,
    public: Annotated[
        bool, typer.Option(help="The server's template, every org's (operators only).")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="Show the steps only, not the log.")] = False,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
) -> None:
    """Build a template on a server from a Dockerfile, following its log."""
    with connected(url, key) as client, err.status(f"{name}: sending the build…") as status:

        def on_log(line: str) -> None:
            step = _STEP.match(line)
            if step is not None:
                index, count, label = step.groups()
                status.update(f"{name}: step {index}/{count} · {label}")
            if not quiet or step is not None:
                err.print(Text(line, style="dim"), soft_wrap=True)

        build = client.templates.build(
            name,
            dockerfile,
            context if context is not None else dockerfile.parent,
            build_args=build_args(build_arg),
            public=public,
            on_log=on_log,
            **defaults(vcpus, memory_mb, disk_mb),
        )
    size = (build.size_bytes or 0) / 1e6
    out.print(f"template [bold]{build.name}[/] ready: build {build.build_id}, {size:.0f} MB")
