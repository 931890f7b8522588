"""Host uids claimed per sandbox: a range, claims no two servers share, given back at the end."""

from __future__ import annotations

import pwd
import shutil
from pathlib import Path

import pytest

from sandcastle.agent import layout
from sandcastle.errors import RuntimeBackendError
from sandcastle.runtime.hostuid import HostUids, UidRange


@pytest.mark.parametrize(
    "text",
    ["5", "10-5", "0-10", "a-b", f"{layout.HOST_UID - 1}-{layout.HOST_UID + 1}", "1-2147483647"],
)
def test_a_uid_range_that_is_empty_malformed_or_holds_the_sandbox_user_is_refused(
    text: str,
) -> None:
    with pytest.raises(ValueError):
        UidRange.parse(text)


def _server(tmp_path: Path, name: str, uids: UidRange) -> tuple[HostUids, Path]:
    """A server's claims (in the host-wide ``tmp_path/claims``) and its sandboxes directory."""
    sandboxes = tmp_path / name
    return HostUids(tmp_path / "claims", uids, sandboxes_dir=sandboxes), sandboxes


def _sandbox(sandboxes: Path, sandbox_id: str) -> str:
    (sandboxes / sandbox_id).mkdir(parents=True)
    return sandbox_id


def test_each_sandbox_gets_a_uid_of_its_own_and_keeps_it(tmp_path: Path) -> None:
    uids, sandboxes = _server(tmp_path, "a", UidRange(100, 199))
    one, two = _sandbox(sandboxes, "sb_1"), _sandbox(sandboxes, "sb_2")

    first, second = uids.claim(one), uids.claim(two)

    assert first != second
    assert {first, second} <= set(range(100, 200))
    assert uids.claim(one) == first


def test_two_servers_on_one_host_never_share_a_uid(tmp_path: Path) -> None:
    one, one_dir = _server(tmp_path, "one", UidRange(100, 101))
    other, other_dir = _server(tmp_path, "other", UidRange(100, 101))

    assert one.claim(_sandbox(one_dir, "sb_1")) != other.claim(_sandbox(other_dir, "sb_1"))
    with pytest.raises(RuntimeBackendError, match="100-101"):
        other.claim(_sandbox(other_dir, "sb_2"))


def test_a_released_uid_goes_to_the_next_sandbox(tmp_path: Path) -> None:
    uids, sandboxes = _server(tmp_path, "a", UidRange(100, 100))
    held = uids.claim(_sandbox(sandboxes, "sb_1"))

    uids.release("sb_1")

    assert uids.claim(_sandbox(sandboxes, "sb_2")) == held


def test_a_uid_whose_sandbox_is_gone_goes_to_the_next_however_the_sandbox_ended(
    tmp_path: Path,
) -> None:
    uids, sandboxes = _server(tmp_path, "a", UidRange(100, 100))
    held = uids.claim(_sandbox(sandboxes, "sb_1"))
    shutil.rmtree(sandboxes / "sb_1")  # destroyed by something that did not release it

    assert uids.claim(_sandbox(sandboxes, "sb_2")) == held


def test_a_restarted_server_finds_the_uids_its_sandboxes_hold(tmp_path: Path) -> None:
    uids, sandboxes = _server(tmp_path, "a", UidRange(100, 105))
    held = uids.claim(_sandbox(sandboxes, "sb_1"))
    restarted, _ = _server(tmp_path, "a", UidRange(100, 105))

    assert restarted.claim("sb_1") == held
    restarted.release("sb_1")
    assert not (tmp_path / "claims" / str(held)).exists()


def test_a_range_holding_a_host_account_is_refused() -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    with pytest.raises(RuntimeBackendError, match="nobody"):
        UidRange(nobody - 1, nobody + 1).check_unused()
    UidRange(1_000_000_000, 1_000_065_535).check_unused()
