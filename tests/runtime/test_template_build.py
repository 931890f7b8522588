"""A real build of the ``python`` template (debootstrap + pip, about a minute when not built yet).

Runs only with ``SANDCASTLE_TEST_TEMPLATES_DIR`` set; an up-to-date template there is reused, so
the suite can share one build (``build/templates`` by convention).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sandcastle.agent import layout
from sandcastle.runtime.templates.builder import BuildProgress, build_template
from sandcastle.runtime.templates.catalogue import TemplateInfo, load_template
from sandcastle.runtime.templates.recipes import Recipe, Run, digest, get_recipe

TEMPLATES_DIR = os.environ.get("SANDCASTLE_TEST_TEMPLATES_DIR")

pytestmark = pytest.mark.skipif(
    not TEMPLATES_DIR or os.geteuid() != 0 or shutil.which("bwrap") is None,
    reason="needs SANDCASTLE_TEST_TEMPLATES_DIR, root and bwrap",
)


@pytest.fixture(scope="module")
def templates_dir() -> Path:
    assert TEMPLATES_DIR is not None
    return Path(TEMPLATES_DIR)


@pytest.fixture
async def template(templates_dir: Path) -> TemplateInfo:
    seen: list[BuildProgress] = []
    info = await build_template("python", templates_dir, on_progress=seen.append)
    for progress in seen:
        assert 0.0 <= progress.fraction_within_step <= 1.0
        assert 0 <= progress.step_index < progress.step_count
    return info


def inside(info: TemplateInfo, path: str) -> Path:
    return info.rootfs / path.lstrip("/")


def run_in_template(
    info: TemplateInfo, argv: list[str], *, uid: int = 0, gid: int = 0, writable_home: Path
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in the template read-only, with a writable copy of the user's home."""
    user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"] if uid else []
    argv_all = [
        # Every namespace but user: setpriv then switches to the real uid, as at build time.
        "bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-net", "--unshare-uts",
        "--die-with-parent", "--new-session",
        "--ro-bind", str(info.rootfs), "/",
        "--bind", str(writable_home), layout.USER_HOME,
        "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp",
        "--clearenv",
        "--setenv", "PATH", f"{layout.USER_VENV}/bin:/usr/bin:/bin",
        "--setenv", "HOME", layout.USER_HOME,
        "--setenv", "MPLBACKEND", "Agg",
        "--chdir", layout.USER_HOME,
        "--", *user, *argv,
    ]  # fmt: skip
    return subprocess.run(argv_all, capture_output=True, text=True, timeout=120)


@pytest.fixture
def home_copy(template: TemplateInfo, tmp_path: Path) -> Path:
    copy = tmp_path / "home"
    shutil.copytree(inside(template, layout.USER_HOME), copy, symlinks=True)
    for path in [copy, *copy.rglob("*")]:
        os.lchown(path, layout.HOST_UID, layout.HOST_GID)
    return copy


async def test_manifest_matches_the_recipe(template: TemplateInfo, templates_dir: Path) -> None:
    assert template.recipe_digest == digest(get_recipe("python"))
    assert load_template("python", templates_dir) == template
    manifest = json.loads((templates_dir / "python" / "manifest.json").read_text())
    assert set(manifest) == {"name", "build_id", "built_at", "recipe_digest", "size_bytes"}
    assert manifest["built_at"].endswith("Z")
    assert 100_000_000 < template.size_bytes < 2_000_000_000
    assert not list(templates_dir.glob(".build-python-*"))


async def test_tree_has_the_sandbox_layout(template: TemplateInfo) -> None:
    for venv in (layout.USER_VENV, layout.AGENT_VENV):
        assert inside(template, f"{venv}/bin/python").exists()
    assert inside(template, layout.AGENT_PACKAGE_DIR).is_dir()
    assert list(inside(template, layout.AGENT_PACKAGE_DIR).iterdir()) == []
    assert inside(template, f"{layout.AGENT_APP_DIR}/sandcastle/__init__.py").is_file()
    assert inside(template, layout.CHANNEL_DIR).is_dir()
    spec = json.loads(
        inside(template, f"{layout.JUPYTER_DIR}/kernels/python3/kernel.json").read_text()
    )
    assert spec["argv"][0] == f"{layout.USER_VENV}/bin/python"
    home = inside(template, layout.USER_HOME).stat()
    assert (home.st_uid, home.st_gid) == (layout.HOST_UID, layout.HOST_GID)
    passwd = inside(template, "/etc/passwd").read_text().splitlines()
    user = f"user:x:{layout.USER_UID}:{layout.USER_GID}::{layout.USER_HOME}:/bin/bash"
    assert user in passwd
    # Caches cleaned, nothing of the build host left behind.
    assert list(inside(template, "/var/lib/apt/lists").iterdir()) == []
    assert not list(inside(template, "/var/cache/apt").glob("**/*.deb"))
    assert inside(template, "/etc/resolv.conf").read_text() == ""
    assert not inside(template, "/opt/wheels").exists()
    assert not inside(template, "/opt/pypi").exists()


async def test_user_venv_imports_the_data_stack(template: TemplateInfo, home_copy: Path) -> None:
    result = run_in_template(
        template,
        [f"{layout.USER_VENV}/bin/python", "-c", "import ipykernel, numpy, pandas, matplotlib"],
        writable_home=home_copy,
    )
    assert result.returncode == 0, result.stderr


async def test_agent_venv_has_jupyter_client(template: TemplateInfo, home_copy: Path) -> None:
    result = run_in_template(
        template,
        [f"{layout.AGENT_VENV}/bin/python", "-c", "import jupyter_client"],
        writable_home=home_copy,
    )
    assert result.returncode == 0, result.stderr


async def test_matplotlib_font_cache_is_prebuilt(template: TemplateInfo, home_copy: Path) -> None:
    caches = list((home_copy / ".cache" / "matplotlib").glob("fontlist-*.json"))
    assert caches
    before = {path: path.stat().st_mtime_ns for path in caches}
    result = run_in_template(
        template,
        [f"{layout.USER_VENV}/bin/python", "-c", "import matplotlib.pyplot"],
        uid=layout.HOST_UID,
        gid=layout.HOST_GID,
        writable_home=home_copy,
    )
    assert result.returncode == 0, result.stderr
    assert "temporary" not in result.stderr, result.stderr  # the home was usable
    # Matplotlib rewrites the cache only when it had to rebuild it.
    after = list((home_copy / ".cache" / "matplotlib").glob("fontlist-*.json"))
    assert {path: path.stat().st_mtime_ns for path in after} == before


async def test_a_constraint_file_in_the_hosts_pip_configuration_is_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The host's pip configuration names a constraint *file* (and one that does not exist):
    # the build must see the first at its path and go without the second, saying so up front.
    constraints = tmp_path / "host" / "constraints.txt"
    constraints.parent.mkdir()
    constraints.write_text("six==1.15.0\n")
    missing = tmp_path / "host" / "gone.txt"
    conf = tmp_path / "host" / "pip.conf"
    conf.write_text(f"[global]\nconstraint = {constraints} {missing}\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    recipe = Recipe(
        name="pinned",
        suite="bookworm",
        packages=("python3-venv",),
        steps=(
            Run("Create venv", ("python3", "-m", "venv", "/opt/venv")),
            Run("Install six", ("/opt/venv/bin/pip", "install", "--no-cache-dir", "six")),
        ),
    )
    warnings: list[str] = []
    steps_begun: list[int] = []

    def on_progress(progress: BuildProgress) -> None:
        if progress.fraction_within_step == 0.0:
            steps_begun.append(progress.step_index)

    def on_warning(warning: str) -> None:
        warnings.append(warning)
        assert steps_begun == [], "a warning came after the build had started"

    info = await build_template(
        "pinned",
        tmp_path / "templates",
        recipe=recipe,
        on_progress=on_progress,
        on_warning=on_warning,
    )

    site = next(inside(info, "/opt/venv/lib").glob("python3*/site-packages"))
    assert [p.name for p in site.glob("six-*.dist-info")] == ["six-1.15.0.dist-info"]
    assert warnings == [
        f"pip option [global] constraint: {missing} is dropped: it does not exist on this host"
    ]
    # Nothing of the host's set-up is left in the template.
    assert not inside(info, str(constraints)).exists()
    assert not inside(info, "/opt/wheels").exists()
