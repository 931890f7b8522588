"""``sandcastle template build`` refuses to start below the free-disk floor."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sandcastle.cli.main import app
from sandcastle.services.diskspace import free_bytes


def test_a_build_below_the_free_disk_floor_is_refused_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    templates = tmp_path / "templates"
    free_mb = free_bytes(tmp_path) // 2**20
    monkeypatch.setenv("SANDCASTLE_MIN_FREE_DISK_MB", str(free_mb + 1024))
    monkeypatch.setenv("SANDCASTLE_TEMPLATES_DIR", str(templates))

    result = CliRunner().invoke(
        app, ["template", "build", "python", "--data-dir", str(tmp_path / "data")]
    )

    assert result.exit_code == 1
    assert "cannot build template python" in result.output
    assert "min_free_disk_mb" in result.output
    assert not templates.exists()  # nothing was started
