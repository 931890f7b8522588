"""The templates built on disk: what a server can start sandboxes from.

A template lives in ``<templates_dir>/<name>/``: ``rootfs/``, ``build.log`` and
``manifest.json``. The manifest is written last (``builder.py``), so a directory without a
usable one is never treated as a template.
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


def load_template(name: str, templates_dir: Path) -> TemplateInfo | None:
    """Return the built template ``name``, or None if there is none or its manifest is unusable."""
    directory = templates_dir / name
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
    return info if info.name == name and info.rootfs.is_dir() else None
