"""Commands that run on the server machine: ``serve`` and ``template build``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from sandcastle.cli import template_options
from sandcastle.cli.template_options import BuildArgOpt, ContextArg, DiskOpt, MemoryOpt, VcpusOpt
from sandcastle.config import Settings
from sandcastle.errors import SandcastleError
from sandcastle.runtime.templates.builder import BuildProgress, build_template, pin_template
from sandcastle.runtime.templates.builtin import builtin_recipe
from sandcastle.runtime.templates.catalogue import built_templates, load_template
from sandcastle.runtime.templates.from_dockerfile import recipe_from_dockerfile
from sandcastle.runtime.templates.recipes import Recipe, digest
from sandcastle.services.diskspace import ensure_free
from sandcastle.services.template_builds import check_defaults

console = Console(stderr=True)
template_app = typer.Typer(help="Build and inspect templates.", no_args_is_help=True)

DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="State directory (default ~/.local/share/sandcastle)."),
]


def _settings(data_dir: Path | None, **overrides: object) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values)  # type: ignore[arg-type]


def template_is_current(name: str, settings: Settings) -> bool:
    """Built, and from the recipe this version of Sandcastle has."""
    info = load_template(name, settings.resolved_templates_dir)
    try:
        return info is not None and info.recipe_digest == digest(builtin_recipe(name))
    except KeyError:
        return info is not None


def _build(
    name: str,
    settings: Settings,
    *,
    force: bool,
    recipe: Recipe | None = None,
    defaults: dict[str, int] | None = None,
) -> None:
    ensure_free(settings, f"build template {name}", settings.resolved_templates_dir)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"template {name}", total=1.0)

        def on_progress(p: BuildProgress) -> None:
            overall = (p.step_index + p.fraction_within_step) / max(p.step_count, 1)
            progress.update(task, completed=overall, description=f"{name}: {p.step_label}")

        def on_warning(warning: str) -> None:
            progress.console.print(f"[yellow]warning:[/] {warning}")

        info = asyncio.run(
            build_template(
                name,
                settings.resolved_templates_dir,
                on_progress=on_progress,
                on_warning=on_warning,
                force=force,
                recipe=recipe,
                defaults=defaults,
            )
        )
        progress.update(task, completed=1.0, description=f"{name}: done")
    console.print(
        f"template [bold]{name}[/] ready: build {info.build_id}, {info.size_bytes / 1e6:.0f} MB"
    )


@template_app.command("build")
def template_build(
    name: Annotated[str, typer.Argument(help="Template to build, e.g. python.")] = "python",
    context: ContextArg = None,
    dockerfile: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            exists=True,
            dir_okay=False,
            help="Build from this Dockerfile (docs/TEMPLATES.md) instead of the built-in recipe.",
        ),
    ] = None,
    build_arg: BuildArgOpt = None,
    vcpus: VcpusOpt = None,
    memory_mb: MemoryOpt = None,
    disk_mb: DiskOpt = None,
    data_dir: DataDirOpt = None,
    if_missing: Annotated[bool, typer.Option(help="Only build when not built yet.")] = False,
) -> None:
    """Build (or rebuild) a template on this machine, as the server's operator (public: every
    org's); a failed build keeps the previous one."""
    settings = _settings(data_dir)
    defaults = template_options.defaults(vcpus, memory_mb, disk_mb)
    try:
        check_defaults(settings, defaults)
        recipe = None
        if dockerfile is not None:
            args = template_options.build_args(build_arg)
            recipe = recipe_from_dockerfile(
                name,
                dockerfile.read_text(),
                context if context is not None else dockerfile.parent,
                settings.resolved_templates_dir,
                args,
            )
        elif context is not None:
            raise typer.BadParameter("a build context goes with --file")
        current = load_template(name, settings.resolved_templates_dir)
        if if_missing and (
            template_is_current(name, settings)
            if recipe is None
            else current is not None and current.recipe_digest == digest(recipe)
        ):
            console.print(f"template [bold]{name}[/] is already built and up to date")
            return
        _build(name, settings, force=not if_missing, recipe=recipe, defaults=defaults)
    except (SandcastleError, KeyError, OSError, UnicodeDecodeError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc


@template_app.command("list")
def template_list(data_dir: DataDirOpt = None) -> None:
    """Show built templates."""
    settings = _settings(data_dir)
    built = built_templates(settings.resolved_templates_dir)
    for info in built:
        pin = f"  pinned to {info.runtime}" if info.runtime else ""
        console.print(f"{info.name}  build {info.build_id}  {info.size_bytes / 1e6:.0f} MB{pin}")
    if not built:
        console.print("no templates built")


@template_app.command("pin")
def template_pin(
    name: Annotated[str, typer.Argument(help="A built template, e.g. python.")],
    backend: Annotated[
        str, typer.Argument(help="gvisor or bwrap; 'none' lets the server's default run it.")
    ],
    data_dir: DataDirOpt = None,
) -> None:
    """Pin a template to a runtime backend: its new sandboxes run there, whatever the server's
    default. A running server applies it to the next create."""
    from sandcastle.runtime.registry import BACKEND_NAMES

    if backend != "none" and backend not in BACKEND_NAMES:
        console.print(f"[red]error:[/] backend must be one of {', '.join(BACKEND_NAMES)} or none")
        raise typer.Exit(2)
    settings = _settings(data_dir)
    try:
        pin_template(name, settings.resolved_templates_dir, None if backend == "none" else backend)
    except SandcastleError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    if backend == "none":
        console.print(f"template [bold]{name}[/] runs on the server's default backend")
    else:
        console.print(f"template [bold]{name}[/] is pinned to [bold]{backend}[/]")


def purge(
    data_dir: DataDirOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Destroy every sandbox process, mount and cgroup of this data directory, whichever backend
    started it, and what template preparations left (the server must be stopped). Records
    stay; running ones will be marked error at the next start."""
    from sandcastle.runtime.registry import all_runtimes

    settings = _settings(data_dir)

    async def run() -> tuple[int, list[str]]:
        # Every backend, not the one a probe would choose now: the server may have run on
        # another one (SANDCASTLE_RUNTIME changed, runsc installed or broken since).
        # Backends come most specific first, so what one fails to destroy the next still tries.
        destroyed: set[str] = set()
        failures: dict[str, str] = {}
        for runtime in all_runtimes(settings):
            try:
                leftovers = await runtime.list_sandboxes() + await runtime.list_template_boots()
                for sandbox_id in leftovers:
                    try:
                        await runtime.destroy(sandbox_id)
                    except (SandcastleError, OSError) as exc:
                        failures[sandbox_id] = f"{runtime.name}: {sandbox_id}: {exc}"
                    else:
                        destroyed.add(sandbox_id)
                        failures.pop(sandbox_id, None)
            except (SandcastleError, OSError) as exc:
                failures[runtime.name] = f"{runtime.name}: {exc}"
            finally:
                await runtime.aclose()
        return len(destroyed), list(failures.values())

    if not yes and not typer.confirm(f"destroy all sandboxes of {settings.data_dir}?"):
        raise typer.Exit(1)
    destroyed, failures = asyncio.run(run())
    console.print(f"destroyed {destroyed} sandboxes")
    for failure in failures:
        console.print(f"[red]error:[/] {failure}")
    if failures:
        raise typer.Exit(1)


def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    data_dir: DataDirOpt = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            "--tls-cert",
            exists=True,
            dir_okay=False,
            readable=True,
            help="Serve HTTPS with this PEM certificate (chain); with --tls-key. Leap0's SDK "
            "reaches sandboxes only over https (docs/LEAP0.md).",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(
            "--tls-key",
            exists=True,
            dir_okay=False,
            readable=True,
            help="The PEM private key of --tls-cert.",
        ),
    ] = None,
) -> None:
    """Run the server (building the default template first if it is missing)."""
    import uvicorn

    from sandcastle.api.app import create_app
    from sandcastle.runtime.registry import select_runtime
    from sandcastle.store.db import Database

    if (tls_cert is None) != (tls_key is None):
        console.print("[red]error:[/] --tls-cert and --tls-key go together")
        raise typer.Exit(2)
    settings = _settings(data_dir, host=host, port=port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Before the template build: a runtime that cannot work should not cost minutes first.
    try:
        choice = asyncio.run(select_runtime(settings))
    except SandcastleError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    if not template_is_current(settings.default_template, settings):
        console.print(
            f"template [bold]{settings.default_template}[/] is not built yet: building it"
        )
        try:
            _build(settings.default_template, settings, force=False)
        except SandcastleError as exc:
            console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from exc

    def show_key(key: str) -> None:
        console.print(
            f"\n[bold green]Admin API key[/] (shown once, also saved to {settings.admin_key_path}):"
            f"\n\n    {key}\n"
        )

    app = create_app(
        settings,
        Database(settings.resolved_database_url),
        choice.runtime,
        on_admin_key=show_key,
        runtime_reason=choice.reason,
    )
    scheme = "http" if tls_cert is None else "https"
    console.print(f"Sandcastle on {scheme}://{settings.host}:{settings.port}  (API docs at /docs)")
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        ssl_certfile=None if tls_cert is None else str(tls_cert),
        ssl_keyfile=None if tls_key is None else str(tls_key),
    )
