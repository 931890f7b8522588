"""The template recipes as data, their digest, and their host-side steps applied to a fake rootfs."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from sandcastle.agent import layout
from sandcastle.runtime.templates.builtin import builtin_names, builtin_recipe
from sandcastle.runtime.templates.recipes import (
    RECIPES,
    AddUser,
    Chown,
    Clean,
    File,
    Recipe,
    Run,
    Write,
    digest,
    get_recipe,
)
from sandcastle.runtime.templates.rootfs import apply_on_host, resolve_inside


def test_get_recipe_returns_python_and_unknown_names_raise_key_error() -> None:
    recipe = get_recipe("python")
    assert recipe.name == "python" and recipe.suite == "bookworm"
    assert {"python3", "python3-venv", "ca-certificates"} <= set(recipe.packages)
    with pytest.raises(KeyError, match="nope"):
        get_recipe("nope")


def test_recipes_are_keyed_by_their_name_with_unique_step_labels() -> None:
    for name, recipe in RECIPES.items():
        assert recipe.name == name
        labels = [step.label for step in recipe.steps]
        assert len(labels) == len(set(labels))


def test_digest_is_stable_and_tracks_content() -> None:
    recipe = get_recipe("python")
    value = digest(recipe)
    assert len(value) == 64 and value == digest(get_recipe("python"))
    assert digest(dataclasses.replace(recipe, packages=(*recipe.packages, "curl"))) != value
    changed = (*recipe.steps[:-1], Clean("Clean apt and pip caches", ("/var/cache/apt",)))
    assert digest(dataclasses.replace(recipe, steps=changed)) != value


def test_digest_includes_the_step_type() -> None:
    base = Recipe("t", "bookworm", (), (Write("x", files=()),))
    other = Recipe("t", "bookworm", (), (Clean("x", ()),))
    assert digest(base) != digest(other)


def _runs(recipe: Recipe) -> list[Run]:
    return [step for step in recipe.steps if isinstance(step, Run)]


def test_python_recipe_installs_both_venvs_without_pip_cache() -> None:
    argvs = [run.argv for run in _runs(get_recipe("python"))]
    assert ("python3", "-m", "venv", layout.USER_VENV) in argvs
    assert ("python3", "-m", "venv", layout.AGENT_VENV) in argvs
    installs = [argv for argv in argvs if argv[1:2] == ("install",)]
    assert [argv[0] for argv in installs] == [
        f"{layout.USER_VENV}/bin/pip",
        f"{layout.USER_VENV}/bin/pip",
        f"{layout.AGENT_VENV}/bin/pip",
    ]
    assert {"ipykernel", "numpy", "pandas", "matplotlib"} <= set(installs[0])
    assert installs[1][-1] == "deno"
    assert "jupyter_client" in installs[2]
    assert all("--no-cache-dir" in argv for argv in installs)
    # Each venv exists before its pip runs.
    assert argvs.index(("python3", "-m", "venv", layout.USER_VENV)) < argvs.index(installs[0])


def test_argvs_are_plain_lists_of_strings_not_shell_lines() -> None:
    for run in _runs(get_recipe("python")):
        assert isinstance(run.argv, tuple) and all(isinstance(a, str) for a in run.argv)
        assert run.argv[0] not in ("sh", "bash", "/bin/sh", "/bin/bash")


def test_font_cache_is_built_as_the_sandbox_user_after_its_home_exists() -> None:
    steps = get_recipe("python").steps
    (font,) = [s for s in steps if isinstance(s, Run) and "matplotlib.pyplot" in " ".join(s.argv)]
    assert (font.uid, font.gid) == (layout.HOST_UID, layout.HOST_GID)
    assert font.env["HOME"] == layout.USER_HOME
    home_step = next(
        i
        for i, s in enumerate(steps)
        if isinstance(s, Write) and any(d.path == layout.USER_HOME for d in s.directories)
    )
    assert home_step < steps.index(font)


def test_kernelspec_content() -> None:
    files = {f.path: f for s in get_recipe("python").steps if isinstance(s, Write) for f in s.files}
    spec = json.loads(files[f"{layout.JUPYTER_DIR}/kernels/python3/kernel.json"].content)
    assert spec == {
        "argv": ["/opt/venv/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3",
        "language": "python",
        "metadata": {"debugger": False},
    }
    assert files[f"{layout.AGENT_APP_DIR}/sandcastle/__init__.py"].content == ""


def test_deno_kernelspec_runs_the_user_venvs_deno_with_message_interrupts() -> None:
    steps = get_recipe("python").steps
    files = {f.path: f for s in steps if isinstance(s, Write) for f in s.files}
    spec = json.loads(files[f"{layout.JUPYTER_DIR}/kernels/deno/kernel.json"].content)
    assert spec["argv"] == [
        f"{layout.USER_VENV}/bin/deno",
        "jupyter",
        "--kernel",
        "--conn",
        "{connection_file}",
    ]
    assert spec["language"] == "typescript"
    # SIGINT kills Deno's kernel; an interrupt_request does not.
    assert spec["interrupt_mode"] == "message"
    assert spec["env"]["DENO_DIR"].startswith(layout.USER_HOME + "/")
    assert spec["env"]["NO_COLOR"] == "1"
    # The user owns the venv only after deno is in it.
    argvs = [run.argv for run in _runs(get_recipe("python"))]
    chown = next(i for i, argv in enumerate(argvs) if argv[0] == "chown")
    assert argvs.index(_pip_install_of("deno")) < chown


def _pip_install_of(package: str) -> tuple[str, ...]:
    return next(
        run.argv
        for run in _runs(get_recipe("python"))
        if run.argv[1:2] == ("install",) and run.argv[-1] == package
    )


def test_user_matches_the_layout() -> None:
    (user,) = [s for s in get_recipe("python").steps if isinstance(s, AddUser)]
    assert (user.name, user.uid, user.gid, user.home, user.shell) == (
        layout.USER_NAME,
        layout.USER_UID,
        layout.USER_GID,
        layout.USER_HOME,
        "/bin/bash",
    )


# --- host-side steps, applied to a fake rootfs --------------------------------------------


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc" / "gshadow").write_text("root:*::\n")
    (root / "var" / "lib" / "apt" / "lists" / "partial").mkdir(parents=True)
    (root / "var" / "lib" / "apt" / "lists" / "Packages").write_text("x")
    return root


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to the sandbox uid needs root")
def test_python_recipe_host_steps_lay_out_the_rootfs(rootfs: Path) -> None:
    for step in get_recipe("python").steps:
        if isinstance(step, Write | AddUser | Clean):
            apply_on_host(rootfs, step)
    home = (rootfs / layout.USER_HOME.lstrip("/")).stat()
    assert (home.st_uid, home.st_gid) == (layout.HOST_UID, layout.HOST_GID)
    for inner in (layout.AGENT_PACKAGE_DIR, layout.CHANNEL_DIR):
        assert (rootfs / inner.lstrip("/")).is_dir()
    kernel = rootfs / layout.JUPYTER_DIR.lstrip("/") / "kernels/python3/kernel.json"
    assert json.loads(kernel.read_text())["language"] == "python"
    uid = layout.USER_UID
    assert f"user:x:{uid}:{uid}::/home/user:/bin/bash" in (rootfs / "etc/passwd").read_text()
    assert f"user:x:{uid}:" in (rootfs / "etc/group").read_text().splitlines()
    assert list((rootfs / "var/lib/apt/lists").iterdir()) == []
    # Idempotent: the same user again is fine, a different user with that uid is not.
    apply_on_host(rootfs, AddUser("again", "user", uid, uid, "/home/user"))
    with pytest.raises(ValueError, match="conflicts"):
        apply_on_host(rootfs, AddUser("clash", "other", uid, uid, "/home/other"))


def test_symlinks_in_the_rootfs_cannot_redirect_host_side_writes(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    outside = tmp_path / "outside"
    (rootfs / "opt").mkdir(parents=True)
    outside.mkdir()
    # An absolute link target means that path inside the rootfs, never on the host.
    (rootfs / "opt" / "evil").symlink_to(str(outside))
    (rootfs / "opt" / "up").symlink_to("../../../..")
    assert resolve_inside(rootfs, "/opt/evil/x") == rootfs / outside.relative_to("/") / "x"
    assert resolve_inside(rootfs, "/opt/up/etc") == rootfs / "etc"
    apply_on_host(rootfs, Write("w", files=(File("/opt/evil/x", "in\n"),)))
    assert list(outside.iterdir()) == []
    assert (rootfs / outside.relative_to("/") / "x").read_text() == "in\n"
    # A file that is itself a link is replaced, not written through.
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "hosts").symlink_to(str(outside / "hosts"))
    apply_on_host(rootfs, Write("w", files=(File("/etc/hosts", "127.0.0.1 localhost\n"),)))
    assert not (outside / "hosts").exists()
    assert (rootfs / "etc" / "hosts").read_text() == "127.0.0.1 localhost\n"


def test_the_python_template_is_a_dockerfile_from_debian_with_our_platform_layer() -> None:
    recipe = builtin_recipe("python")

    # Exactly the platform layer, all of it trusted, and the digest of the templates built before
    # it was a Dockerfile: upgrading rebuilds nothing.
    assert recipe == get_recipe("python")
    assert recipe.own_steps is None and recipe.cache_steps == 0
    assert builtin_names() == ["python"]
    with pytest.raises(KeyError, match="unknown template 'nope'"):
        builtin_recipe("nope")


def test_a_chown_of_the_users_trees_changes_links_not_what_they_lead_to(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host")
    venv = rootfs / "opt" / "venv"
    (venv / "lib").mkdir(parents=True)
    (venv / "lib" / "mod.py").write_text("x = 1\n")
    # Links a build may plant: to a host path (absolute: inside the rootfs, as a chroot sees
    # it) and up and out.
    (venv / "lib" / "to-host").symlink_to(str(outside / "secret"))
    (venv / "lib" / "up").symlink_to("../../../../outside")

    apply_on_host(rootfs, Chown("give", ("/opt/venv", "/home/missing"), 61000, 61000))

    for path in (venv, venv / "lib", venv / "lib" / "mod.py", venv / "lib" / "to-host"):
        info = os.lstat(path)
        assert (info.st_uid, info.st_gid) == (61000, 61000), path
    for host in (outside, outside / "secret"):
        assert os.stat(host).st_uid == os.getuid(), host
