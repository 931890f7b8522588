"""Backends by name, and the choice of one at start-up (``SANDCASTLE_RUNTIME=auto|gvisor|bwrap``).

``auto`` prefers gVisor, whose sandboxes run on a user-space kernel, and falls back to bubblewrap
when a real probe sandbox does not start (``probe.runsc_problem``); an explicit ``gvisor`` that
does not work is a configuration error, never a silent fallback to weaker isolation.

The runtime the server gets routes between backends (``routing.py``): a template may pin one.
Besides the default, bubblewrap is always there; gVisor only where its probe passed, and not
when the operator chose ``bwrap`` (then a template pinned to it is refused, saying so).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sandcastle.config import Settings
from sandcastle.errors import ConfigurationError
from sandcastle.runtime.base import Runtime
from sandcastle.runtime.bwrap import BwrapRuntime, instance_name
from sandcastle.runtime.gvisor import GvisorRuntime
from sandcastle.runtime.hostuid import UidRange
from sandcastle.runtime.local import recorded_backend
from sandcastle.runtime.probe import runsc_problem, runsc_version
from sandcastle.runtime.routing import RoutedRuntime


def _bwrap(settings: Settings) -> Runtime:
    return BwrapRuntime(
        settings.sandboxes_dir,
        instance=instance_name(settings.data_dir),
        uids=UidRange.parse(settings.sandbox_uid_range),
    )


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
BACKEND_NAMES = tuple(_BACKENDS)


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
    """The backend ``settings.runtime`` asks for as the default (for ``gvisor`` and ``auto``,
    probing runsc first), routed with the other backends this host can run.

    Raises :class:`ConfigurationError` when ``gvisor`` is asked for and does not work here.
    """
    if settings.runtime == "bwrap":
        unavailable = {"gvisor": "the server runs with SANDCASTLE_RUNTIME=bwrap"}
        return RuntimeChoice(_routed(settings, "bwrap", unavailable), "SANDCASTLE_RUNTIME=bwrap")
    runsc = settings.runsc_path or "runsc"
    problem = await runsc_problem(runsc, settings.data_dir)
    if problem is None:
        version = await runsc_version(runsc)
        works = f"runsc {version} works" if version else "runsc works"
        return RuntimeChoice(_routed(settings, "gvisor", {}), works)
    if settings.runtime == "gvisor":
        raise ConfigurationError(
            f"SANDCASTLE_RUNTIME=gvisor, but gVisor does not work on this host: {problem} "
            "(run scripts/ensure-runsc as root, or set SANDCASTLE_RUNTIME=bwrap or auto)"
        )
    unavailable = {"gvisor": f"it does not work on this host: {problem}"}
    return RuntimeChoice(_routed(settings, "bwrap", unavailable), f"gvisor unavailable: {problem}")


def _routed(settings: Settings, default: str, unavailable: dict[str, str]) -> RoutedRuntime:
    others = {
        name: create_runtime(settings, name)
        for name in _BACKENDS
        if name != default and name not in unavailable
    }
    return RoutedRuntime(
        create_runtime(settings, default),
        others,
        locate=lambda sandbox_id: recorded_backend(settings.sandboxes_dir, sandbox_id),
        unavailable=unavailable,
    )


def all_runtimes(settings: Settings) -> list[Runtime]:
    """One instance of every backend for this data directory (for ``sandcastle purge``)."""
    return [factory(settings) for factory in _BACKENDS.values()]
