"""Options ``template build`` (on this machine) and ``template push`` (on a server) share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ContextArg = Annotated[
    Path | None,
    typer.Argument(help="Build context of the Dockerfile's COPY (default: its directory)."),
]
BuildArgOpt = Annotated[
    list[str] | None, typer.Option("--build-arg", help="NAME=VALUE for an ARG; repeatable.")
]
VcpusOpt = Annotated[
    int | None, typer.Option(help="vCPUs its sandboxes get when they ask for none.")
]
MemoryOpt = Annotated[
    int | None, typer.Option(help="Memory (MB) its sandboxes get when they ask for none.")
]
DiskOpt = Annotated[
    int | None, typer.Option(help="Disk (MB) its sandboxes get when they ask for none.")
]


def build_args(given: list[str] | None) -> dict[str, str]:
    """``NAME=VALUE`` options as ARG values."""
    return dict(arg.partition("=")[::2] for arg in given or [])


def defaults(vcpus: int | None, memory_mb: int | None, disk_mb: int | None) -> dict[str, int]:
    """The resource defaults given, by their API names."""
    given = {"vcpus": vcpus, "memory_mb": memory_mb, "disk_mb": disk_mb}
    return {key: value for key, value in given.items() if value is not None}
