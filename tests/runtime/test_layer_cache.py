"""The builder's layer cache, through real builds on a tiny template (a shell and two tools): the
first build keeps the rootfs after its leading steps; the next with the same beginning starts
from that copy and does not run them again, whatever comes after; a different beginning
misses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from sandcastle.runtime.templates.builder import BuildProgress, build_template
from sandcastle.runtime.templates.catalogue import load_template
from sandcastle.runtime.templates.layercache import LayerCache, prefix_key
from sandcastle.runtime.templates.recipes import Base, Recipe, Run

TEMPLATES_DIR = os.environ.get("SANDCASTLE_TEST_TEMPLATES_DIR")

pytestmark = pytest.mark.skipif(
    not TEMPLATES_DIR or os.geteuid() != 0 or shutil.which("bwrap") is None,
    reason="needs SANDCASTLE_TEST_TEMPLATES_DIR, root and bwrap",
)

#: Leaves a random mark: run twice, it leaves two different ones.
MARK = Run("Leave a mark", ("sh", "-c", "head -c 8 /dev/urandom | od -An -tx1 > /opt/mark"))


def recipe(templates: Path, last: str) -> Recipe:
    final = Run(f"Say {last}", ("sh", "-c", f"echo {last} > /opt/last"))
    return Recipe("cached", "bookworm", (), (MARK, final), base=tiny_base(templates), cache_steps=1)


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A templates directory holding ``tiny``: the host's sh, head and od and their libraries
    (copying the python template thrice would take most of the test's time)."""
    rootfs = tmp_path / "tiny" / "rootfs"
    for tool in ("sh", "head", "od"):
        binary = Path(shutil.which(tool) or tool).resolve()
        needed = [binary] + [Path(p) for p in _libraries(binary)]
        for path in needed:
            for name in {path, path.resolve()}:
                target = rootfs / str(name).lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path.resolve(), target)
        (rootfs / "bin").mkdir(exist_ok=True)
        if not (rootfs / "bin" / tool).exists():
            (rootfs / "bin" / tool).symlink_to(binary)
    (rootfs / "opt").mkdir()
    manifest = {
        "name": "tiny", "build_id": str(uuid.uuid4()), "built_at": "2026-01-01T00:00:00+00:00",
        "recipe_digest": "0" * 64, "size_bytes": 0,
    }  # fmt: skip
    (tmp_path / "tiny" / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def _libraries(binary: Path) -> list[str]:
    """The shared libraries ``binary`` loads, by the paths ``ldd`` gives."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    return [word for word in out.split() if word.startswith("/")]


async def test_a_build_with_the_same_beginning_starts_from_the_cached_layer_another_misses(
    templates: Path,
) -> None:
    first = await build_template("cached", templates, recipe=recipe(templates, "one"))
    mark = (first.rootfs / "opt" / "mark").read_text()
    key = prefix_key(recipe(templates, "one"), 1)
    assert key == prefix_key(recipe(templates, "two"), 1)
    assert LayerCache(templates).lookup(key) is not None
    seen: list[BuildProgress] = []
    second = await build_template(
        "cached", templates, recipe=recipe(templates, "two"), on_progress=seen.append
    )
    assert (second.rootfs / "opt" / "last").read_text() == "two\n"
    assert (second.rootfs / "opt" / "mark").read_text() == mark  # the mark step did not run
    assert seen[0].step_label.startswith("Copy cached layer")
    assert not any(p.step_label == MARK.label for p in seen)

    changed = Recipe(
        "cached", "bookworm", (), (Run("Leave another mark", MARK.argv), MARK), base=tiny_base(templates),
        cache_steps=1,
    )  # fmt: skip
    assert LayerCache(templates).lookup(prefix_key(changed, 1)) is None
    seen.clear()
    await build_template("cached", templates, recipe=changed, on_progress=seen.append)
    assert seen[0].step_label == "Copy template tiny"
    assert any(p.step_label == "Leave another mark" for p in seen)


def tiny_base(templates: Path) -> Base:
    tiny = load_template("tiny", templates)
    assert tiny is not None
    return Base("tiny", tiny.build_id)
