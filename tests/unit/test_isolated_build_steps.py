"""What a Dockerfile's untrusted ``RUN`` step is given in its gVisor sandbox: the build's rootfs
as its root and nothing of the host but the pip set-up, read-only; root's capabilities only when
the step runs as root; the step's own environment, directory and user."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandcastle.runtime.templates.buildenv import BuildSandbox
from sandcastle.runtime.templates.isolated import ROOT_CAPABILITIES, BuildLimits, IsolatedSteps
from sandcastle.runtime.templates.recipes import Run


def spec_of(tmp_path: Path, step: Run) -> dict[str, Any]:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("numpy<2\n")
    base = BuildSandbox(
        rootfs,
        pip_conf=None,
        forwarded_env={"PIP_CONSTRAINT": str(constraints)},
        binds=[(str(constraints), str(constraints))],
    )
    steps = IsolatedSteps(base, BuildLimits(pids_max=300), run_dir=tmp_path, runsc_path="runsc")
    return steps._oci_spec(step, tmp_path / "resolv.conf")


def test_a_root_step_gets_dockers_capabilities_in_its_sandbox_and_the_build_rootfs(
    tmp_path: Path,
) -> None:
    step = Run("line 3: RUN apt-get update", ("/bin/sh", "-c", "apt-get update"), {"A": "1"})

    spec = spec_of(tmp_path, step)

    assert spec["root"] == {"path": str(tmp_path / "rootfs"), "readonly": False}
    process = spec["process"]
    assert process["user"] == {"uid": 0, "gid": 0}
    assert process["args"] == ["/bin/sh", "-c", "apt-get update"]
    assert process["capabilities"]["effective"] == ROOT_CAPABILITIES
    assert "CAP_SYS_ADMIN" not in ROOT_CAPABILITIES
    assert process["capabilities"]["ambient"] == []
    env = dict(item.split("=", 1) for item in process["env"])
    assert env["A"] == "1" and env["PIP_CONSTRAINT"] == str(tmp_path / "constraints.txt")
    assert {"type": "RLIMIT_NPROC", "hard": 300, "soft": 300} in process["rlimits"]
    # Its own network namespace comes from outside (nsenter); the others are new.
    assert {n["type"] for n in spec["linux"]["namespaces"]} == {"pid", "ipc", "uts", "mount"}
    assert spec["linux"]["seccomp"]["syscalls"]


def test_only_the_pip_set_up_of_the_host_is_bound_and_only_read_only(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, Run("run", ("true",)))

    binds = [m for m in spec["mounts"] if m["type"] == "bind"]
    assert {(m["source"], m["destination"]) for m in binds} == {
        (str(tmp_path / "resolv.conf"), "/etc/resolv.conf"),
        (str(tmp_path / "constraints.txt"), str(tmp_path / "constraints.txt")),
    }
    assert all("ro" in m["options"] for m in binds)
    tmp = next(m for m in spec["mounts"] if m["destination"] == "/tmp")
    assert tmp["type"] == "tmpfs"


def test_a_step_as_the_sandbox_user_holds_no_capability(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, Run("run", ("id",), uid=61000, gid=61000, cwd="/home/user"))

    process = spec["process"]
    assert process["user"] == {"uid": 61000, "gid": 61000}
    assert process["cwd"] == "/home/user"
    assert all(caps == [] for caps in process["capabilities"].values())
