"""``RoutedRuntime``: each sandbox on the backend that started it, new ones where asked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandcastle.errors import LimitExceededError
from sandcastle.runtime.base import LaunchSpec
from sandcastle.runtime.local import BACKEND_FILE, recorded_backend
from sandcastle.runtime.routing import RoutedRuntime
from tests.fakes import FakeRuntime


class Other(FakeRuntime):
    name = "other"


@pytest.fixture
async def backends() -> AsyncIterator[tuple[FakeRuntime, Other]]:
    default, other = FakeRuntime(), Other()
    yield default, other
    await default.shutdown()
    await other.shutdown()


def spec(tmp_path: Path, sandbox_id: str, backend: str | None) -> LaunchSpec:
    (tmp_path / "rootfs").mkdir(exist_ok=True)
    return LaunchSpec(
        sandbox_id=sandbox_id,
        rootfs=tmp_path / "rootfs",
        vcpus=1,
        memory_mb=256,
        disk_mb=256,
        pids_max=64,
        cwd="/home/user",
        backend=backend,
    )


async def test_launches_go_where_asked_and_later_calls_follow_the_sandbox(
    tmp_path: Path, backends: tuple[FakeRuntime, Other]
) -> None:
    default, other = backends
    routed = RoutedRuntime(default, {"other": other}, locate=lambda _: None)
    await routed.launch(spec(tmp_path, "sb_a", None))
    await routed.launch(spec(tmp_path, "sb_b", "other"))
    assert [s.sandbox_id for s in default.launched] == ["sb_a"]
    assert [s.sandbox_id for s in other.launched] == ["sb_b"]
    assert routed.link("sb_b") is other.link("sb_b") is not None
    assert (await routed.poll("sb_b")).alive and (await routed.poll("sb_a")).alive
    assert await routed.list_sandboxes() == ["sb_a", "sb_b"]
    await routed.destroy("sb_b")
    assert (other.destroyed, default.destroyed) == (["sb_b"], [])


async def test_a_new_process_routes_by_what_the_backends_recorded(
    tmp_path: Path, backends: tuple[FakeRuntime, Other]
) -> None:
    default, other = backends
    await other.launch(spec(tmp_path, "sb_b", "other"))  # started by an earlier server
    (tmp_path / "sb_b").mkdir()
    (tmp_path / "sb_b" / BACKEND_FILE).write_text("other\n")
    assert recorded_backend(tmp_path, "sb_b") == "other"
    assert recorded_backend(tmp_path, "sb_none") is None
    routed = RoutedRuntime(
        default, {"other": other}, locate=lambda i: recorded_backend(tmp_path, i)
    )
    assert (await routed.poll("sb_b")).alive
    assert not (await routed.poll("sb_none")).alive  # no record: the default answers
    await routed.destroy("sb_b")
    assert other.destroyed == ["sb_b"]


async def test_an_unavailable_backend_is_refused_with_the_reason(
    tmp_path: Path, backends: tuple[FakeRuntime, Other]
) -> None:
    default, _ = backends
    routed = RoutedRuntime(default, {}, locate=lambda _: None, unavailable={"gvisor": "no runsc"})
    assert routed.backend(None) is routed.backend("fake") is default
    with pytest.raises(LimitExceededError, match=r"gvisor backend is not available.*no runsc"):
        await routed.launch(spec(tmp_path, "sb_c", "gvisor"))
    assert default.launched == []
