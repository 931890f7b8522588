"""``Settings``: defaults, the ``SANDCASTLE_`` environment, and cross-field validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sandcastle.config import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = Settings()
    assert (settings.host, settings.port, settings.runtime) == ("127.0.0.1", 8321, "auto")
    assert settings.data_dir == tmp_path / ".local" / "share" / "sandcastle"
    assert (settings.default_vcpus, settings.default_memory_mb, settings.default_disk_mb) == (
        1,
        512,
        1024,
    )
    assert settings.default_timeout_ms == 300_000
    assert settings.default_template == "python"
    assert settings.templates_dir is None and settings.database_url is None


def test_derived_paths_follow_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_templates_dir == tmp_path / "templates"
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / 'sandcastle.db'}"
    assert settings.sandboxes_dir == tmp_path / "sandboxes"
    assert settings.admin_key_path == tmp_path / "admin.key"


def test_explicit_templates_dir_and_database_url_win(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, templates_dir=tmp_path / "t", database_url="sqlite+aiosqlite:///x.db"
    )
    assert settings.resolved_templates_dir == tmp_path / "t"
    assert settings.resolved_database_url == "sqlite+aiosqlite:///x.db"


def test_environment_uses_the_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SANDCASTLE_PORT", "9000")
    monkeypatch.setenv("SANDCASTLE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SANDCASTLE_RECONCILE_INTERVAL_S", "0.5")
    monkeypatch.setenv("HOST", "0.0.0.0")  # unprefixed: not ours
    monkeypatch.setenv("SANDCASTLE_NOT_A_SETTING", "ignored")
    settings = Settings()
    assert settings.port == 9000
    assert settings.data_dir == tmp_path
    assert settings.reconcile_interval_s == 0.5
    assert settings.host == "127.0.0.1"


def test_environment_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("sandcastle_max_vcpus", "8")
    assert Settings().max_vcpus == 8


def test_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDCASTLE_PORT", "9000")
    assert Settings(port=9001).port == 9001


def test_bad_environment_value_is_a_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDCASTLE_PORT", "not-a-port")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert caught.value.errors()[0]["loc"] == ("port",)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"runtime": "docker"}, "runtime"),
        ({"default_vcpus": 0}, "default_vcpus"),
        ({"default_memory_mb": 32}, "default_memory_mb"),
        ({"pids_max": 10}, "pids_max"),
        ({"agent_connect_timeout_s": 0}, "agent_connect_timeout_s"),
        ({"reconcile_interval_s": -1}, "reconcile_interval_s"),
        ({"default_timeout_ms": 999}, "default_timeout_ms"),
    ],
)
def test_field_bounds(values: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)  # type: ignore[arg-type]
    assert [e["loc"] for e in caught.value.errors()] == [(field,)]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"default_memory_mb": 16384},
            "default_memory_mb must lie within [min_memory_mb, max_memory_mb]",
        ),
        (
            {"default_memory_mb": 128, "min_memory_mb": 256},
            "default_memory_mb must lie within [min_memory_mb, max_memory_mb]",
        ),
        (
            {"max_memory_mb": 256},
            "default_memory_mb must lie within [min_memory_mb, max_memory_mb]",
        ),
        ({"default_disk_mb": 30000}, "default_disk_mb must lie within [min_disk_mb, max_disk_mb]"),
        ({"min_disk_mb": 2048}, "default_disk_mb must lie within [min_disk_mb, max_disk_mb]"),
        ({"default_vcpus": 5}, "default_vcpus must not exceed max_vcpus"),
        ({"max_vcpus": 1, "default_vcpus": 2}, "default_vcpus must not exceed max_vcpus"),
        (
            {"default_timeout_ms": 100_000, "max_timeout_ms": 50_000},
            "default_timeout_ms must not exceed max_timeout_ms",
        ),
    ],
)
def test_cross_field_validation(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)  # type: ignore[arg-type]
    [error] = caught.value.errors()
    assert error["msg"] == f"Value error, {message}"


def test_cross_field_validation_reads_the_environment_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDCASTLE_MAX_VCPUS", "2")
    monkeypatch.setenv("SANDCASTLE_DEFAULT_VCPUS", "3")
    with pytest.raises(ValidationError, match="default_vcpus must not exceed max_vcpus"):
        Settings()


def test_bounds_at_their_limits_are_accepted() -> None:
    settings = Settings(
        default_memory_mb=128,
        min_memory_mb=128,
        max_memory_mb=128,
        default_vcpus=4,
        max_vcpus=4,
        default_timeout_ms=1000,
        max_timeout_ms=1000,
    )
    assert (settings.default_memory_mb, settings.default_vcpus) == (128, 4)


def test_tenancy_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.allow_org_create is False
    assert (settings.credits_per_vcpu_second, settings.credits_per_gib_second) == (10, 5)
    assert settings.paused_memory_percent == 100
    assert (settings.rate_limit_per_s, settings.rate_limit_burst) == (100.0, 500)
    monkeypatch.setenv("SANDCASTLE_ALLOW_ORG_CREATE", "true")
    monkeypatch.setenv("SANDCASTLE_INITIAL_ORG_CREDITS", "5")
    settings = Settings()
    assert settings.allow_org_create is True and settings.initial_org_credits == 5


@pytest.mark.parametrize(
    "values",
    [
        {"paused_memory_percent": 101},
        {"credits_per_vcpu_second": -1},
        {"rate_limit_burst": 0},
        {"org_max_members": 0},
        {"credit_interval_s": 0},
    ],
)
def test_tenancy_settings_are_bounded(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**values)  # type: ignore[arg-type]


def test_runtime_choice_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (Settings().runtime, Settings().runsc_path) == ("auto", None)
    monkeypatch.setenv("SANDCASTLE_RUNTIME", "gvisor")
    monkeypatch.setenv("SANDCASTLE_RUNSC_PATH", "/opt/gvisor/runsc")
    settings = Settings()
    assert (settings.runtime, settings.runsc_path) == ("gvisor", "/opt/gvisor/runsc")
    monkeypatch.setenv("SANDCASTLE_RUNTIME", "bwrap")
    assert Settings().runtime == "bwrap"
