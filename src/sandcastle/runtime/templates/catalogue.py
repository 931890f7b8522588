"""The templates built on disk: what a server can start sandboxes from.

A template lives in ``<templates_dir>/<name>/``: ``rootfs/``, ``build.log`` and
``manifest.json``. The manifest is written last (``builder.py``), so a directory without a
usable one is never treated as a template.

A template is the server's, public to every org, or an org's own: that one is kept under the key
``<name>+<org id>`` (:func:`org_key`), and :func:`resolve` is the one place a name becomes a
template, the caller's own first, so no org ever reaches another's.

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
    #: What its sandboxes get when they ask for nothing else (``DEFAULT_KEYS``).
    defaults: Mapping[str, int] = field(default_factory=dict)


#: The resources a template may give its sandboxes by default.
DEFAULT_KEYS = ("vcpus", "memory_mb", "disk_mb")


#: A template's name as its users give it (builds and logs in progress start with a dot).
TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: A template directory's name: a name, and the owning org's id for an org's own template.
TEMPLATE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(\+[0-9a-f-]{36})?$")
KEY_MAX_LENGTH = 64 + 1 + 36


def org_key(name: str, org_id: str) -> str:
    """The key of org ``org_id``'s own template ``name``."""
    return f"{name}+{org_id}"


def split_key(key: str) -> tuple[str, str | None]:
    """(name, owning org id) of a template key; the org is None for a public template."""
    name, _, org = key.partition("+")
    return name, org or None


def resolve(name: str, org_id: str, templates_dir: Path) -> TemplateInfo | None:
    """What ``name`` means to org ``org_id``: its own template of that name, else the public
    one. A key naming an org is that org's only; None when the org may use no such template."""
    if not TEMPLATE_KEY.match(name):
        return None
    base, owner = split_key(name)
    if owner is not None:
        return load_template(name, templates_dir) if owner == org_id else None
    return load_template(org_key(base, org_id), templates_dir) or load_template(base, templates_dir)


def built_templates(templates_dir: Path) -> list[TemplateInfo]:
    """Every built template in ``templates_dir``, by key."""
    if not templates_dir.is_dir():
        return []
    names = sorted(p.name for p in templates_dir.iterdir() if TEMPLATE_KEY.match(p.name))
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
    if build_id is None or not TEMPLATE_KEY.match(name) or not TEMPLATE_NAME.match(build_id):
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
    """Return the built template ``name`` (a key), or None if there is none or its manifest is
    unusable."""
    if not TEMPLATE_KEY.match(name):
        return None
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
            defaults={
                k: int(v) for k, v in dict(data.get("defaults") or {}).items() if k in DEFAULT_KEYS
            },
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if info.rootfs.is_dir() else None
