"""Backends by name."""

from __future__ import annotations

from collections.abc import Callable

from sandcastle.config import Settings
from sandcastle.errors import ConfigurationError
from sandcastle.runtime.base import Runtime
from sandcastle.runtime.bwrap import BwrapRuntime, instance_name

_BACKENDS: dict[str, Callable[[Settings], Runtime]] = {
    "bwrap": lambda settings: BwrapRuntime(
        settings.sandboxes_dir, instance=instance_name(settings.data_dir)
    ),
}


def create_runtime(settings: Settings) -> Runtime:
    try:
        factory = _BACKENDS[settings.runtime]
    except KeyError:
        raise ConfigurationError(f"unknown runtime backend {settings.runtime!r}") from None
    return factory(settings)
