"""The templates built on disk: what a server can start sandboxes from.

A template lives in ``<templates_dir>/<name>/``: ``rootfs/``, ``build.log`` and
``manifest.json``. The manifest is written last (``builder.py``), so a directory without a
usable one is never treated as a template.

Builds are immutable: a rebuild swaps a new directory in and retires the old one to
``<templates_dir>/.retired/<name>/<build_id>/``, where the sandboxes, hibernated sandboxes and
snapshots made on that build keep finding it (:func:`load_build`) until nothing needs it and
``TemplateService.collect_retired`` deletes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class TemplateInfo:
    name: str
    build_id: str
    built_at: datetime
    recipe_digest: str
    size_bytes: int
    rootfs: Path
    #: The backend its sandboxes run on, whatever the server's default (None: the default).
    runtime: str | None = None
    #: The environment its sandboxes' processes start with (a Dockerfile's ``ENV``).
    env: Mapping[str, str] = field(default_factory=dict)


#: A template directory's name (builds and logs in progress start with a dot).
TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def built_templates(templates_dir: Path) -> list[TemplateInfo]:
    """Every built template in ``templates_dir``, by name."""
    if not templates_dir.is_dir():
        return []
    names = sorted(p.name for p in templates_dir.iterdir() if TEMPLATE_NAME.match(p.name))
    return [t for t in (load_template(n, templates_dir) for n in names) if t is not None]


RETIRED = ".retired"


def retired_dir(templates_dir: Path, name: str, build_id: str) -> Path:
    return templates_dir / RETIRED / name / build_id


def load_build(name: str, build_id: str | None, templates_dir: Path) -> TemplateInfo | None:
    """Build ``build_id`` of template ``name``: the current one or a retired one (None: the
    current one, whichever it is); None when it is gone."""
    current = load_template(name, templates_dir)
    if current is not None and (build_id is None or current.build_id == build_id):
        return current
    if build_id is None or not TEMPLATE_NAME.match(name) or not TEMPLATE_NAME.match(build_id):
        return None
    info = _load(retired_dir(templates_dir, name, build_id))
    return info if info is not None and (info.name, info.build_id) == (name, build_id) else None


def retired_builds(templates_dir: Path) -> list[TemplateInfo]:
    """Every retired build, by template and build."""
    root = templates_dir / RETIRED
    found = []
    for directory in sorted(root.glob("*/*")) if root.is_dir() else []:
        info = _load(directory)
        if info is not None:
            found.append(info)
    return found


def load_template(name: str, templates_dir: Path) -> TemplateInfo | None:
    """Return the built template ``name``, or None if there is none or its manifest is unusable."""
    info = _load(templates_dir / name)
    return info if info is not None and info.name == name else None


def _load(directory: Path) -> TemplateInfo | None:
    try:
        data = json.loads((directory / "manifest.json").read_text())
        info = TemplateInfo(
            name=str(data["name"]),
            build_id=str(data["build_id"]),
            built_at=datetime.fromisoformat(data["built_at"]),
            recipe_digest=str(data["recipe_digest"]),
            size_bytes=int(data["size_bytes"]),
            rootfs=directory / "rootfs",
            runtime=str(data["runtime"]) if data.get("runtime") else None,
            env={str(k): str(v) for k, v in dict(data.get("env") or {}).items()},
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if info.rootfs.is_dir() else None
