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


def build_filter() -> seccomp.SyscallFilter:
    flt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            flt.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (RuntimeError, ValueError):
            continue  # not a syscall on this architecture
    for flag in _NAMESPACE_FLAGS:
        # One rule per flag: a clone asking for any new namespace is refused.
        flt.add_rule(
            seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag)
        )
    flt.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    return flt


def bpf_fd() -> int:
    """A readable file descriptor holding the compiled filter, as ``bwrap --seccomp`` wants."""
    fd = os.memfd_create("sandcastle-seccomp")
    with os.fdopen(os.dup(fd), "wb") as out:
        build_filter().export_bpf(out)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def oci_profile() -> dict[str, object]:
    """The deny-list as an OCI runtime spec's ``linux.seccomp`` (for ``runsc --oci-seccomp``).

    Without the ``clone3`` rule: under gVisor it made thread creation fail with ``EPERM``
    (the C library then does not fall back to ``clone``); ``clone3`` there cannot create
    namespaces the ``clone`` rules would miss, since gVisor's own ``clone3`` is ``ENOSYS``.
    """
    rules: list[dict[str, object]] = [
        {"names": list(DENIED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
    ]
    rules += [
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": errno.EPERM,
            "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
        }
        for flag in _NAMESPACE_FLAGS
    ]
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": rules,
    }
