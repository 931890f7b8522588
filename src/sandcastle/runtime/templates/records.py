"""Template builds asked for through the API, as records on disk beside the templates.

``<templates_dir>/.builds/<build_id>/`` holds ``record.json`` (who asked, for which template, how
it went; replaced atomically at each change) and ``build.log`` (the build's log as it is written,
bounded by the builder). A record outlives the server: one still ``building`` when a server
starts was cut short by a crash or a stop, and is marked failed (:func:`fail_interrupted`).
The build itself is the builder's: its tree in ``<templates_dir>/.build-*`` is swapped in only
when it succeeded, so a build cut short leaves the previous template as it was.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

BUILDS = ".builds"
_BUILD_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class BuildStatus(StrEnum):
    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class BuildRecord:
    build_id: str
    #: The template's key (``catalogue.org_key`` for an org's own).
    template: str
    #: The org that asked, which alone sees the build.
    org_id: str
    status: BuildStatus
    created_at: datetime
    finished_at: datetime | None = None
    #: Why it failed: the failing step (a Dockerfile's line) and its last log lines.
    error: str | None = None
    size_bytes: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["status"] = self.status.value
        data["created_at"] = self.created_at.isoformat()
        data["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BuildRecord:
        finished = data.get("finished_at")
        return cls(
            build_id=str(data["build_id"]),
            template=str(data["template"]),
            org_id=str(data["org_id"]),
            status=BuildStatus(data["status"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            finished_at=datetime.fromisoformat(finished) if finished else None,
            error=str(data["error"]) if data.get("error") is not None else None,
            size_bytes=int(data["size_bytes"]) if data.get("size_bytes") is not None else None,
        )


def build_dir(templates_dir: Path, build_id: str) -> Path:
    return templates_dir / BUILDS / build_id


def log_path(templates_dir: Path, build_id: str) -> Path:
    return build_dir(templates_dir, build_id) / "build.log"


def save(templates_dir: Path, record: BuildRecord) -> None:
    """Write ``record`` whole or not at all (a crash mid-write leaves the previous one)."""
    directory = build_dir(templates_dir, record.build_id)
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / "record.json.partial"
    with open(partial, "w") as file:
        json.dump(record.to_json(), file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, directory / "record.json")


def load(templates_dir: Path, build_id: str) -> BuildRecord | None:
    if not _BUILD_ID.match(build_id):
        return None
    try:
        data = json.loads((build_dir(templates_dir, build_id) / "record.json").read_text())
        return BuildRecord.from_json(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def all_records(templates_dir: Path) -> list[BuildRecord]:
    root = templates_dir / BUILDS
    if not root.is_dir():
        return []
    found = (load(templates_dir, entry.name) for entry in sorted(root.iterdir()))
    return [record for record in found if record is not None]


def fail_interrupted(templates_dir: Path, now: datetime) -> list[BuildRecord]:
    """Mark every build still ``building`` as failed: at a server's start none can be running
    (builds run inside the server). The records changed."""
    changed = []
    for record in all_records(templates_dir):
        if record.status is BuildStatus.BUILDING:
            failed = dataclasses.replace(
                record,
                status=BuildStatus.FAILED,
                finished_at=now,
                error="the server stopped during the build; build again",
            )
            save(templates_dir, failed)
            changed.append(failed)
    return changed
