"""Backends by name, and the choice of one at start-up (``SANDCASTLE_RUNTIME=auto|gvisor|bwrap``).

``auto`` prefers gVisor, whose sandboxes run on a user-space kernel, and falls back to bubblewrap
when a real probe sandbox does not start (``probe.runsc_problem``); an explicit ``gvisor`` that
does not work is a configuration error, never a silent fallback to weaker isolation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sandcastle.config import Settings
from sandcastle.errors import ConfigurationError
from sandcastle.runtime.base import Runtime
from sandcastle.runtime.bwrap import BwrapRuntime, instance_name
from sandcastle.runtime.gvisor import GvisorRuntime
from sandcastle.runtime.probe import runsc_problem, runsc_version


def _bwrap(settings: Settings) -> Runtime:
    return BwrapRuntime(settings.sandboxes_dir, instance=instance_name(settings.data_dir))


def _gvisor(settings: Settings) -> Runtime:
    return GvisorRuntime(
        settings.sandboxes_dir,
        instance=instance_name(settings.data_dir),
        runsc_path=settings.runsc_path,
        pids_max=settings.pids_max,
    )


#: Every backend by name, most specific first: purge destroys in this order, so a backend that
#: recognises its own sandboxes cleans them up before a generic one sees their leftovers.
_BACKENDS: dict[str, Callable[[Settings], Runtime]] = {"gvisor": _gvisor, "bwrap": _bwrap}


@dataclass(frozen=True)
class RuntimeChoice:
    """The backend the server runs on, and why it was chosen (for the log and ``/v1/health``)."""

    runtime: Runtime
    reason: str


def create_runtime(settings: Settings, backend: str | None = None) -> Runtime:
    """Instantiate ``backend`` (default: ``settings.runtime``) without probing anything.

    ``auto`` cannot be decided without a probe: use :func:`select_runtime` for it.
    """
    name = backend if backend is not None else settings.runtime
    try:
        factory = _BACKENDS[name]
    except KeyError:
        raise ConfigurationError(f"unknown runtime backend {name!r}") from None
    return factory(settings)


async def select_runtime(settings: Settings) -> RuntimeChoice:
    """The backend ``settings.runtime`` asks for; for ``gvisor`` and ``auto``, probe runsc first.

    Raises :class:`ConfigurationError` when ``gvisor`` is asked for and does not work here.
    """
    if settings.runtime == "bwrap":
        return RuntimeChoice(create_runtime(settings, "bwrap"), "SANDCASTLE_RUNTIME=bwrap")
    runsc = settings.runsc_path or "runsc"
    problem = await runsc_problem(runsc, settings.data_dir)
    if problem is None:
        version = await runsc_version(runsc)
        works = f"runsc {version} works" if version else "runsc works"
        return RuntimeChoice(create_runtime(settings, "gvisor"), works)
    if settings.runtime == "gvisor":
        raise ConfigurationError(
            f"SANDCASTLE_RUNTIME=gvisor, but gVisor does not work on this host: {problem} "
            "(run scripts/ensure-runsc as root, or set SANDCASTLE_RUNTIME=bwrap or auto)"
        )
    return RuntimeChoice(create_runtime(settings, "bwrap"), f"gvisor unavailable: {problem}")


def all_runtimes(settings: Settings) -> list[Runtime]:
    """One instance of every backend for this data directory (for ``sandcastle purge``)."""
    return [factory(settings) for factory in _BACKENDS.values()]
