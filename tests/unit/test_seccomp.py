"""The seccomp filter: it builds, exports BPF, denies what it must, and allows the rest."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

import pyseccomp
import pytest

from sandcastle.runtime import seccomp

MUST_DENY = ("ptrace", "mount", "kexec_load", "bpf", "keyctl", "unshare", "setns")


def pseudo_filter_code() -> str:
    with tempfile.TemporaryFile() as out:
        seccomp.build_filter().export_pfc(out)
        out.seek(0)
        return out.read().decode()


def actions_by_syscall(pfc: str) -> dict[str, list[str]]:
    """``{syscall: [action, ...]}`` from libseccomp's pseudo filter code."""
    actions: dict[str, list[str]] = {}
    current = None
    for line in pfc.splitlines():
        named = re.search(r'# filter for syscall "(\w+)"', line)
        if named:
            current = named.group(1)
            continue
        if line.strip().startswith("#"):  # the default and invalid-architecture actions
            current = None
        action = re.search(r"action (\w+(?:\(\d+\))?);", line)
        if action and current is not None:
            actions.setdefault(current, []).append(action.group(1))
    return actions


def test_denied_list_includes_the_dangerous_calls() -> None:
    assert set(MUST_DENY) <= set(seccomp.DENIED_SYSCALLS)
    assert len(set(seccomp.DENIED_SYSCALLS)) == len(seccomp.DENIED_SYSCALLS)


def test_filter_exports_non_empty_bpf() -> None:
    with tempfile.TemporaryFile() as out:
        seccomp.build_filter().export_bpf(out)
        out.seek(0)
        program = out.read()
    assert len(program) > 0
    assert len(program) % 8 == 0  # a sequence of 8-byte sock_filter instructions


def test_bpf_fd_is_readable_from_the_start() -> None:
    fd = seccomp.bpf_fd()
    try:
        program = os.read(fd, 1 << 20)
    finally:
        os.close(fd)
    assert len(program) > 0 and len(program) % 8 == 0


def test_the_filter_denies_every_listed_call_with_eperm() -> None:
    pfc = pseudo_filter_code()
    actions = actions_by_syscall(pfc)
    for name in MUST_DENY:
        assert actions.get(name) == [f"ERRNO({errno.EPERM})"], name
    assert "clone3" not in actions  # the default: ENOSYS
    # clone is allowed without namespace flags, refused with any: one conditional rule per flag.
    assert sorted(actions["clone"]) == ["ALLOW"] + [f"ERRNO({errno.EPERM})"] * 7
    masks = {int(m, 16) for m in re.findall(r"\$a0\.lo32 & (0x[0-9a-f]+) ==", pfc)}
    assert masks - {0x7E020000, 0xFFFFFFFF} == {
        0x10000000,  # CLONE_NEWUSER
        0x00020000,  # CLONE_NEWNS
        0x20000000,  # CLONE_NEWPID
        0x40000000,  # CLONE_NEWNET
        0x08000000,  # CLONE_NEWIPC
        0x04000000,  # CLONE_NEWUTS
        0x02000000,  # CLONE_NEWCGROUP
    }
    assert actions["read"] == actions["write"] == ["ALLOW"]


def test_every_listed_call_that_exists_here_is_in_the_filter() -> None:
    """The builder skips names unknown on this architecture, and only those."""
    arch = pyseccomp.system_arch()
    actions = actions_by_syscall(pseudo_filter_code())
    known = [n for n in seccomp.DENIED_SYSCALLS if pyseccomp.resolve_syscall(arch, n) >= 0]
    assert set(MUST_DENY) <= set(known)
    assert {n for n in known if actions.get(n) == [f"ERRNO({errno.EPERM})"]} == set(known)


def test_a_call_no_rule_allows_fails_as_if_the_kernel_lacked_it() -> None:
    lines = [line.strip() for line in pseudo_filter_code().splitlines() if line.strip()]
    assert "# default action" in lines
    assert lines[lines.index("# default action") + 1] == f"action ERRNO({errno.ENOSYS});"


def test_the_allowlist_and_the_deny_list_do_not_overlap() -> None:
    assert not set(seccomp.ALLOWED_SYSCALLS) & set(seccomp.DENIED_SYSCALLS)
    assert len(set(seccomp.ALLOWED_SYSCALLS)) == len(seccomp.ALLOWED_SYSCALLS)


_ENFORCE = """
import ctypes, json, os, pyseccomp
from sandcastle.runtime.seccomp import build_filter

libc = ctypes.CDLL(None, use_errno=True)
arch = pyseccomp.system_arch()
CLONE_NEWUSER, SIGCHLD = 0x10000000, 17
build_filter().load()
results = {}
for name, call in [
    ("unshare", lambda: libc.unshare(CLONE_NEWUSER)),
    ("ptrace", lambda: libc.ptrace(16, os.getppid(), None, None)),
    ("clone_newuser", lambda: libc.syscall(
        pyseccomp.resolve_syscall(arch, "clone"), CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)),
    ("clone3", lambda: libc.syscall(pyseccomp.resolve_syscall(arch, "clone3"), 0, 0)),
    ("chroot", lambda: libc.chroot(b"/")),
    ("personality_query", lambda: libc.personality(0xFFFFFFFF)),
    ("personality_exec", lambda: libc.personality(0x0400000)),  # READ_IMPLIES_EXEC
    ("getpid", lambda: libc.getpid()),
]:
    ctypes.set_errno(0)
    rc = call()
    if rc == 0 and name.startswith("clone"):
        os._exit(0)  # the filter let a clone through: we are the child
    results[name] = [rc, ctypes.get_errno()]
print(json.dumps(results))
"""


def under_the_filter(code: str) -> dict[str, Any]:
    """Run ``code`` (which loads the filter) in a child process; the JSON it prints."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    if done.returncode != 0 and "seccomp" in done.stderr.lower():
        pytest.skip(f"cannot load a seccomp filter here: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr
    results: dict[str, Any] = json.loads(done.stdout)
    return results


def test_the_loaded_filter_refuses_the_calls() -> None:
    """In a child process: load the filter, then try what it must refuse."""
    results = under_the_filter(_ENFORCE)
    assert results["unshare"] == [-1, errno.EPERM]
    assert results["ptrace"] == [-1, errno.EPERM]
    assert results["clone_newuser"] == [-1, errno.EPERM]
    assert results["clone3"] == [-1, errno.ENOSYS]
    assert results["chroot"] == [-1, errno.ENOSYS]  # on no list: "not in this kernel"
    assert results["personality_query"][0] >= 0
    assert results["personality_exec"] == [-1, errno.ENOSYS]
    assert results["getpid"][0] > 0 and results["getpid"][1] == 0


_SOCKETS = """
import ctypes, json, os, pyseccomp, socket
from sandcastle.runtime.seccomp import build_filter

libc = ctypes.CDLL(None, use_errno=True)
arch = pyseccomp.system_arch()
build_filter().load()
results = {}
for name, family, kind, proto in [
    ("unix", 1, socket.SOCK_STREAM, 0),
    ("inet", 2, socket.SOCK_STREAM, 0),
    ("inet6", 10, socket.SOCK_DGRAM, 0),
    ("netlink_route", 16, socket.SOCK_RAW, 0),
    ("netlink_audit", 16, socket.SOCK_RAW, 9),
    ("netlink_uevent", 16, socket.SOCK_RAW, 15),
    ("vsock", 40, socket.SOCK_STREAM, 0),
    ("alg", 38, socket.SOCK_SEQPACKET, 0),
    ("key", 15, socket.SOCK_RAW, 2),
    ("unspec", 0, socket.SOCK_STREAM, 0),
    ("future_family", 60, socket.SOCK_STREAM, 0),
]:
    ctypes.set_errno(0)
    fd = libc.socket(family, kind, proto)
    results[name] = 0 if fd >= 0 else ctypes.get_errno()
for name in ("io_uring_setup", "modify_ldt", "memfd_secret", "pidfd_getfd", "process_madvise"):
    ctypes.set_errno(0)
    rc = libc.syscall(pyseccomp.resolve_syscall(arch, name), 0, 0, 0, 0)
    results[name] = 0 if rc >= 0 else ctypes.get_errno()
print(json.dumps(results))
"""


def test_socket_families_beyond_unix_inet_and_route_netlink_are_refused() -> None:
    results = under_the_filter(_SOCKETS)
    allowed = {"unix", "inet", "inet6", "netlink_route"}
    assert {name: results[name] for name in allowed} == dict.fromkeys(allowed, 0)
    assert results["netlink_audit"] == results["netlink_uevent"] == errno.EPROTONOSUPPORT
    for name in ("vsock", "alg", "key", "unspec", "future_family"):
        assert results[name] == errno.EAFNOSUPPORT, name
    for name in ("io_uring_setup", "modify_ldt", "memfd_secret", "pidfd_getfd", "process_madvise"):
        assert results[name] == errno.EPERM, name


def test_the_oci_profile_carries_the_same_rules_as_the_filter() -> None:
    profile = seccomp.oci_profile()
    syscalls = profile["syscalls"]
    assert isinstance(syscalls, list)
    expected = seccomp.rules(clone3=False)
    assert len(syscalls) == len(expected)
    by_name: dict[str, list[dict[str, object]]] = {}
    for entry in syscalls:
        (name,) = entry["names"]
        by_name.setdefault(name, []).append(entry)
    assert len(by_name["socket"]) == len([r for r in expected if r.syscall == "socket"])
    netlink = [e for e in by_name["socket"] if e.get("errnoRet") == errno.EPROTONOSUPPORT]
    assert netlink[0]["args"] == [
        {"index": 0, "value": 16, "valueTwo": 0, "op": "SCMP_CMP_EQ"},
        {"index": 2, "value": 0, "valueTwo": 0, "op": "SCMP_CMP_NE"},
    ]
    assert by_name["clone3"] == [{"names": ["clone3"], "action": "SCMP_ACT_ALLOW"}]
    assert by_name["read"] == [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]
    assert (profile["defaultAction"], profile["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", 38)
