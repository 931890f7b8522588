"""How the client commands reach a server: through the SDK, with its errors as one line.

Every command that talks to a server opens :func:`connected` and calls the SDK inside it; any
error of the SDK (unreachable server, an error answer, a cut stream) ends the command with one
clear line on standard error and exit status 1, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from sandcastle_sdk import Sandcastle, errors

out = Console()
err = Console(stderr=True)

UrlOpt = Annotated[str, typer.Option(envvar="SANDCASTLE_URL", help="Server URL.")]
KeyOpt = Annotated[
    str, typer.Option(envvar="SANDCASTLE_API_KEY", help="API key.", show_default=False)
]
DEFAULT_URL = "http://127.0.0.1:8321"


def fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/] {message}", highlight=False)
    raise typer.Exit(1)


def describe(error: errors.SandcastleError) -> str:
    """One line for an error: the status and the server's detail for an error answer."""
    if isinstance(error, errors.APIError):
        return f"{error.status}: {error.detail}"
    return str(error)


@contextmanager
def connected(url: str, key: str) -> Iterator[Sandcastle]:
    """A client of ``url``; an SDK error inside the block ends the command (exit 1)."""
    try:
        # The key as given, "" included: typer read SANDCASTLE_API_KEY already, and `info`
        # asks for no key (None would make the SDK read the environment again).
        with Sandcastle(url, key) as client:
            yield client
    except errors.TransportError as exc:
        fail(f"cannot reach {url}: {exc}")
    except errors.SandcastleError as exc:
        fail(describe(exc))
