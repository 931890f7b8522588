"""The seccomp filter every sandboxed process runs under.

An allowlist in the spirit of Docker's default profile: the calls ordinary programs make are
allowed (``ALLOWED_SYSCALLS``, some only with harmless arguments); every other call fails with
``ENOSYS``, as on a kernel that lacks it, so programs that probe for a new call fall back. The
calls untrusted code has no business making (``DENIED_SYSCALLS``: they manipulate the kernel,
mounts, other processes' memory, or namespaces, a new user namespace being the usual first step
of a local privilege escalation) fail with ``EPERM``, a clean "not allowed". ``clone3`` fails
with ``ENOSYS`` because its flags cannot be inspected, which makes the C library fall back to
``clone``, whose flags we can.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

import pyseccomp as seccomp

#: What ordinary programs need, ours included (the agent, ipykernel, numpy, Deno), grouped by
#: what it is for. ``clone``, ``socket`` and ``personality`` are allowed with some arguments only
#: (``rules``). Names this architecture lacks are skipped.
ALLOWED_SYSCALLS = (
    # processes, threads, scheduling
    "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid",
    "getpid", "getppid", "gettid", "getpgid", "setpgid", "getpgrp", "getsid", "setsid",
    "set_tid_address", "set_robust_list", "get_robust_list", "rseq", "prctl", "arch_prctl",
    "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam",
    "sched_setparam", "sched_getscheduler", "sched_setscheduler", "sched_getattr",
    "sched_setattr", "sched_get_priority_max", "sched_get_priority_min",
    "sched_rr_get_interval", "getpriority", "setpriority", "ioprio_get", "ioprio_set",
    "getrlimit", "setrlimit", "prlimit64", "getrusage", "times", "uname", "sysinfo", "getcpu",
    "capget", "capset", "seccomp", "landlock_create_ruleset", "landlock_add_rule",
    "landlock_restrict_self", "pidfd_open", "pidfd_send_signal", "process_mrelease",
    "restart_syscall", "membarrier", "futex", "futex_waitv", "futex_wake", "futex_wait",
    "futex_requeue",
    # users and groups (without capabilities, only to what the process already is)
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups", "setuid",
    "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups", "setfsuid",
    "setfsgid",
    # signals
    "kill", "tkill", "tgkill", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn",
    "rt_sigpending", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigqueueinfo",
    "rt_tgsigqueueinfo", "sigaltstack", "signalfd", "signalfd4", "pause", "alarm",
    # time
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
    "getitimer", "setitimer", "timer_create", "timer_delete", "timer_getoverrun",
    "timer_gettime", "timer_settime", "timerfd_create", "timerfd_gettime", "timerfd_settime",
    # memory
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync", "mlock",
    "mlock2", "munlock", "mlockall", "munlockall", "memfd_create", "remap_file_pages",
    "pkey_alloc", "pkey_free", "pkey_mprotect", "map_shadow_stack", "mseal",
    # descriptors and files
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
    "pwritev2", "open", "openat", "openat2", "creat", "close", "close_range", "dup", "dup2",
    "dup3", "lseek", "fcntl", "flock", "fsync", "fdatasync", "sync", "syncfs",
    "sync_file_range", "truncate", "ftruncate", "fallocate", "fadvise64", "readahead",
    "sendfile", "splice", "tee", "vmsplice", "copy_file_range", "ioctl", "pipe", "pipe2",
    "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs", "access",
    "faccessat", "faccessat2", "getdents", "getdents64", "getcwd", "chdir", "fchdir", "mkdir",
    "mkdirat", "rmdir", "rename", "renameat", "renameat2", "link", "linkat", "unlink",
    "unlinkat", "symlink", "symlinkat", "readlink", "readlinkat", "chmod", "fchmod",
    "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat", "umask", "utime",
    "utimes", "utimensat", "futimesat", "mknod", "mknodat", "cachestat",
    "getxattr", "lgetxattr", "fgetxattr", "getxattrat", "setxattr", "lsetxattr", "fsetxattr",
    "setxattrat", "listxattr", "llistxattr", "flistxattr", "listxattrat", "removexattr",
    "lremovexattr", "fremovexattr", "removexattrat",
    # waiting on descriptors; asynchronous I/O (the old interface: io_uring is denied)
    "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "inotify_init",
    "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "io_setup", "io_destroy",
    "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
    # sockets (``socket`` for some families only, ``socketpair`` for unix ones)
    "bind", "connect", "listen", "accept", "accept4", "getsockname",
    "getpeername", "getsockopt", "setsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg",
    "sendmmsg", "recvmmsg", "shutdown",
    # System V and POSIX inter-process communication, within the sandbox's IPC namespace
    "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop", "semctl",
    "shmget", "shmat", "shmdt", "shmctl", "mq_open", "mq_unlink", "mq_timedsend",
    "mq_timedreceive", "mq_notify", "mq_getsetattr",
    # randomness
    "getrandom",
)  # fmt: skip

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
    """Fail ``syscall`` with ``errno`` when every condition holds (always, without any); with
    ``errno`` None, allow it then. A call no rule matches fails with :data:`DEFAULT_ERRNO`."""

    syscall: str
    errno: int | None
    conds: tuple[Cond, ...] = ()


#: What a call no rule allows fails with: "this kernel does not have it".
DEFAULT_ERRNO = errno.ENOSYS
#: ``personality`` values allowed (as in Docker's profile): the default, the query, and the
#: 2.6-uname and 32-bit-address variants some old programs ask for. Any other (notably
#: READ_IMPLIES_EXEC and ADDR_NO_RANDOMIZE, which weaken the process's own protections) fails.
_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
_ALL_NAMESPACE_FLAGS = sum(_NAMESPACE_FLAGS)


def rules(*, clone3: bool = True) -> list[Rule]:
    """Every rule of the filter, for both the BPF (bwrap) and the OCI profile (gVisor).

    ``clone3=False`` allows ``clone3`` instead of failing it with ``ENOSYS``: gVisor's own
    ``clone3`` is ``ENOSYS`` already, and its seccomp answered our ``ENOSYS`` with ``EPERM``,
    which the C library does not take as a cue to fall back to ``clone``.
    """
    denied = set(DENIED_SYSCALLS)
    table = [Rule(name, None) for name in ALLOWED_SYSCALLS if name not in denied]
    table += [Rule(name, errno.EPERM) for name in DENIED_SYSCALLS]
    # clone without namespace flags is allowed; with any of them (one rule per flag) refused.
    table.append(Rule("clone", None, (Cond(0, "masked_eq", 0, _ALL_NAMESPACE_FLAGS),)))
    table += [Rule("clone", errno.EPERM, (Cond(0, "masked_eq", f, f),)) for f in _NAMESPACE_FLAGS]
    table += [Rule("socket", None, (Cond(0, "eq", f),)) for f in (AF_UNIX, AF_INET, AF_INET6)]
    table.append(Rule("socket", None, (Cond(0, "eq", AF_NETLINK), Cond(2, "eq", NETLINK_ROUTE))))
    # socketpair creates its sockets (loading a family's module) before it can fail: unix only.
    table.append(Rule("socketpair", None, (Cond(0, "eq", AF_UNIX),)))
    table.append(Rule("socketpair", errno.EAFNOSUPPORT, (Cond(0, "ne", AF_UNIX),)))
    table += [Rule("socket", errno.EAFNOSUPPORT, (Cond(0, "eq", f),)) for f in _DENIED_FAMILIES]
    table.append(Rule("socket", errno.EAFNOSUPPORT, (Cond(0, "ge", AF_NETLINK + 1),)))
    netlink_other = (Cond(0, "eq", AF_NETLINK), Cond(2, "ne", NETLINK_ROUTE))
    table.append(Rule("socket", errno.EPROTONOSUPPORT, netlink_other))
    # The kernel reads personality's argument as 32 bits; callers may leave the upper half set.
    table += [
        Rule("personality", None, (Cond(0, "masked_eq", p, 0xFFFFFFFF),)) for p in _PERSONALITIES
    ]
    table.append(Rule("clone3", errno.ENOSYS if clone3 else None))
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
    flt = seccomp.SyscallFilter(defaction=seccomp.ERRNO(DEFAULT_ERRNO))
    arch = seccomp.system_arch()
    for rule in rules():
        if rule.errno == DEFAULT_ERRNO and not rule.conds:
            continue  # what the default does anyway (libseccomp refuses such a rule)
        if seccomp.resolve_syscall(arch, rule.syscall) < 0:
            continue  # not a syscall of this architecture (or newer than this libseccomp)
        args = []
        for cond in rule.conds:
            # libseccomp's masked_eq takes (mask, value); the others one value.
            values = (cond.mask, cond.value) if cond.op == "masked_eq" else (cond.value,)
            args.append(seccomp.Arg(cond.index, _LIBSECCOMP_OPS[cond.op], *values))
        action = seccomp.ALLOW if rule.errno is None else seccomp.ERRNO(rule.errno)
        flt.add_rule(action, rule.syscall, *args)
    return flt


def bpf_fd() -> int:
    """A readable file descriptor holding the compiled filter, as ``bwrap --seccomp`` wants."""
    fd = os.memfd_create("sandcastle-seccomp")
    with os.fdopen(os.dup(fd), "wb") as out:
        build_filter().export_bpf(out)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def oci_profile() -> dict[str, object]:
    """The same rules as an OCI runtime spec's ``linux.seccomp`` (for ``runsc --oci-seccomp``),
    with ``clone3`` left to gVisor (``rules``)."""
    syscalls: list[dict[str, object]] = []
    for rule in rules(clone3=False):
        entry: dict[str, object] = {"names": [rule.syscall]}
        if rule.errno is None:
            entry["action"] = "SCMP_ACT_ALLOW"
        else:
            entry.update(action="SCMP_ACT_ERRNO", errnoRet=rule.errno)
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
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": DEFAULT_ERRNO,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": syscalls,
    }
