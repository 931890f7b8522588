"""Build records on disk: written whole, read back, and a build a stopped server left under way
is failed at the next start, never shown as running forever."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sandcastle.config import Settings
from sandcastle.runtime.templates import records
from sandcastle.runtime.templates.records import BuildRecord, BuildStatus
from sandcastle.services.template_builds import TemplateBuildService

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def record(status: BuildStatus = BuildStatus.BUILDING) -> BuildRecord:
    return BuildRecord(str(uuid.uuid4()), "tool+" + str(uuid.uuid4()), "org-1", status, NOW)


def test_a_record_is_read_back_as_written(tmp_path: Path) -> None:
    done = dataclasses.replace(
        record(BuildStatus.FAILED), finished_at=NOW, error="line 3: RUN false", size_bytes=None
    )
    records.save(tmp_path, done)

    assert records.load(tmp_path, done.build_id) == done
    assert not list(records.build_dir(tmp_path, done.build_id).glob("*.partial"))


def test_an_id_that_is_no_build_id_reads_nothing(tmp_path: Path) -> None:
    assert records.load(tmp_path, "../../etc") is None
    assert records.load(tmp_path, str(uuid.uuid4())) is None


async def test_builds_under_way_at_a_restart_are_failed_and_finished_ones_kept(
    tmp_path: Path,
) -> None:
    running, ready = record(), record(BuildStatus.READY)
    for each in (running, ready):
        records.save(tmp_path, each)
    service = TemplateBuildService(Settings(templates_dir=tmp_path), clock=lambda: NOW)

    await service.recover()

    failed = records.load(tmp_path, running.build_id)
    assert failed is not None and failed.status is BuildStatus.FAILED
    assert failed.finished_at == NOW and "stopped during the build" in (failed.error or "")
    assert records.load(tmp_path, ready.build_id) == ready
