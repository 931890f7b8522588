"""``registry``: backends by name, and the start-up choice between them (no real probe here:
``tests/runtime/test_probe.py`` has that)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandcastle.config import Settings
from sandcastle.errors import ConfigurationError, LimitExceededError
from sandcastle.runtime.registry import all_runtimes, create_runtime, select_runtime

MISSING = "/nonexistent/runsc"


def test_backends_by_name(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert create_runtime(settings, "bwrap").name == "bwrap"
    assert create_runtime(settings, "gvisor").name == "gvisor"
    assert create_runtime(Settings(data_dir=tmp_path, runtime="bwrap")).name == "bwrap"


@pytest.mark.parametrize("name", ["auto", "docker"])
def test_no_backend_without_a_probe_or_by_an_unknown_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigurationError, match=f"unknown runtime backend '{name}'"):
        create_runtime(Settings(data_dir=tmp_path), name)


def test_purge_sees_every_backend_most_specific_first(tmp_path: Path) -> None:
    assert [r.name for r in all_runtimes(Settings(data_dir=tmp_path))] == ["gvisor", "bwrap"]


async def test_bwrap_asked_for_is_bwrap_without_probing(tmp_path: Path) -> None:
    choice = await select_runtime(Settings(data_dir=tmp_path, runtime="bwrap", runsc_path=MISSING))
    assert (choice.runtime.name, choice.reason) == ("bwrap", "SANDCASTLE_RUNTIME=bwrap")


async def test_auto_falls_back_to_bwrap_and_says_why(tmp_path: Path) -> None:
    choice = await select_runtime(Settings(data_dir=tmp_path, runsc_path=MISSING))
    assert choice.runtime.name == "bwrap"
    assert choice.reason == f"gvisor unavailable: runsc not found ({MISSING})"


async def test_gvisor_asked_for_but_broken_is_a_configuration_error(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, runtime="gvisor", runsc_path=MISSING)
    with pytest.raises(ConfigurationError, match="SANDCASTLE_RUNTIME=gvisor, but gVisor does not"):
        await select_runtime(settings)


async def test_without_gvisor_the_server_routes_to_bwrap_only_and_says_why(
    tmp_path: Path,
) -> None:
    choice = await select_runtime(Settings(data_dir=tmp_path, runsc_path=MISSING))
    assert choice.runtime.available == ["bwrap"]
    with pytest.raises(LimitExceededError, match=r"gvisor backend is not available.*not found"):
        choice.runtime.backend("gvisor")
    chosen = await select_runtime(Settings(data_dir=tmp_path, runtime="bwrap"))
    with pytest.raises(LimitExceededError, match="SANDCASTLE_RUNTIME=bwrap"):
        chosen.runtime.backend("gvisor")
