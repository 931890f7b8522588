"""The seccomp filter every sandboxed process runs under.

Default allow, with a deny list of system calls untrusted code has no business making: they
manipulate the kernel, mounts, other processes' memory, or namespaces (a new user namespace is
the usual first step of a local privilege escalation). Denied calls fail with ``EPERM`` so code
sees a clean error; ``clone3`` fails with ``ENOSYS`` because its flags cannot be inspected, which
makes the C library fall back to ``clone``, whose flags we can.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

import pyseccomp as seccomp

DENIED_SYSCALLS = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "keyctl",
    "add_key",
    "request_key",
    "unshare",
    "setns",
    "perf_event_open",
    "userfaultfd",
    "open_by_handle_at",
    "name_to_handle_at",
    "reboot",
    "swapon",
    "swapoff",
    "syslog",
    "acct",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "iopl",
    "ioperm",
    "quotactl",
    "lookup_dcookie",
    "vhangup",
    # Beyond Docker's default profile: io_uring bypasses this filter for what it submits
    # and has been the kernel's busiest source of privilege escalations; the rest reach into
    # other processes (pidfd_getfd, process_madvise, kcmp, move_pages, migrate_pages) or
    # the kernel's rarely used corners (modify_ldt, memfd_secret, uselib).
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "pidfd_getfd",
    "process_madvise",
    "kcmp",
    "move_pages",
    "migrate_pages",
    "modify_ldt",
    "memfd_secret",
    "uselib",
)

_NAMESPACE_FLAGS = (
    0x10000000,  # CLONE_NEWUSER
    0x00020000,  # CLONE_NEWNS
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
    0x08000000,  # CLONE_NEWIPC
    0x04000000,  # CLONE_NEWUTS
    0x02000000,  # CLONE_NEWCGROUP
)

#: Socket families a sandbox may open: unix, IPv4, IPv6, and netlink for routing information
#: only (Python's and glibc's interface listing). Every other family (vsock, which no network
#: namespace confines; AF_ALG, AF_KEY, TIPC, RDS…, all long sources of kernel bugs) fails with
#: EAFNOSUPPORT, as on a kernel built without it.
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
NETLINK_ROUTE = 0
_DENIED_FAMILIES = tuple(
    f for f in range(AF_NETLINK + 1) if f not in (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK)
)


@dataclass(frozen=True)
class Cond:
    """Argument ``index`` compared with ``value``: ``op`` is eq, ne, ge or masked_eq (``mask``)."""

    index: int
    op: str
    value: int
    mask: int = 0


@dataclass(frozen=True)
class Rule:
    """Fail ``syscall`` with ``errno`` when every condition holds (always, without any)."""

    syscall: str
    errno: int
    conds: tuple[Cond, ...] = ()


def rules(*, clone3: bool = True) -> list[Rule]:
    """Every rule of the filter, for both the BPF (bwrap) and the OCI profile (gVisor)."""
    table = [Rule(name, errno.EPERM) for name in DENIED_SYSCALLS]
    # One rule per flag: a clone asking for any new namespace is refused.
    table += [Rule("clone", errno.EPERM, (Cond(0, "masked_eq", f, f),)) for f in _NAMESPACE_FLAGS]
    table += [Rule("socket", errno.EAFNOSUPPORT, (Cond(0, "eq", f),)) for f in _DENIED_FAMILIES]
    table.append(Rule("socket", errno.EAFNOSUPPORT, (Cond(0, "ge", AF_NETLINK + 1),)))
    netlink_other = (Cond(0, "eq", AF_NETLINK), Cond(2, "ne", NETLINK_ROUTE))
    table.append(Rule("socket", errno.EPROTONOSUPPORT, netlink_other))
    if clone3:
        table.append(Rule("clone3", errno.ENOSYS))
    return table


_LIBSECCOMP_OPS = {
    "eq": seccomp.EQ,
    "ne": seccomp.NE,
    "ge": seccomp.GE,
    "masked_eq": seccomp.MASKED_EQ,
}
_OCI_OPS = {
    "eq": "SCMP_CMP_EQ",
    "ne": "SCMP_CMP_NE",
    "ge": "SCMP_CMP_GE",
    "masked_eq": "SCMP_CMP_MASKED_EQ",
}


def build_filter() -> seccomp.SyscallFilter:
    flt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for rule in rules():
        args = []
        for cond in rule.conds:
            # libseccomp's masked_eq takes (mask, value); the others one value.
            values = (cond.mask, cond.value) if cond.op == "masked_eq" else (cond.value,)
            args.append(seccomp.Arg(cond.index, _LIBSECCOMP_OPS[cond.op], *values))
        try:
            flt.add_rule(seccomp.ERRNO(rule.errno), rule.syscall, *args)
        except (RuntimeError, ValueError):
            continue  # not a syscall on this architecture
    return flt


def bpf_fd() -> int:
    """A readable file descriptor holding the compiled filter, as ``bwrap --seccomp`` wants."""
    fd = os.memfd_create("sandcastle-seccomp")
    with os.fdopen(os.dup(fd), "wb") as out:
        build_filter().export_bpf(out)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def oci_profile() -> dict[str, object]:
    """The same rules as an OCI runtime spec's ``linux.seccomp`` (for ``runsc --oci-seccomp``).

    Without the ``clone3`` rule: under gVisor it made thread creation fail with ``EPERM``
    (the C library then does not fall back to ``clone``); ``clone3`` there cannot create
    namespaces the ``clone`` rules would miss, since gVisor's own ``clone3`` is ``ENOSYS``.
    """
    syscalls: list[dict[str, object]] = []
    for rule in rules(clone3=False):
        entry: dict[str, object] = {
            "names": [rule.syscall],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": rule.errno,
        }
        if rule.conds:
            entry["args"] = [
                {
                    "index": c.index,
                    "value": c.mask if c.op == "masked_eq" else c.value,
                    "valueTwo": c.value if c.op == "masked_eq" else 0,
                    "op": _OCI_OPS[c.op],
                }
                for c in rule.conds
            ]
        syscalls.append(entry)
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": syscalls,
    }
