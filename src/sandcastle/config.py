"""Server settings: one pydantic ``Settings``, loaded once in ``main`` and passed in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sandcastle.runtime.hostuid import UidRange


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "sandcastle"


class Settings(BaseSettings):
    """Every knob of the server; environment variables use the ``SANDCASTLE_`` prefix."""

    model_config = SettingsConfigDict(env_prefix="SANDCASTLE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8321, ge=1, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)
    #: Where built templates live; defaults to ``<data_dir>/templates``.
    templates_dir: Path | None = None
    #: SQLAlchemy URL; defaults to SQLite (WAL) at ``<data_dir>/sandcastle.db``.
    database_url: str | None = None
    #: Isolation backend: ``gvisor`` (runsc), ``bwrap`` (bubblewrap), or ``auto``: gvisor when a
    #: probe sandbox starts on this host, otherwise bwrap.
    runtime: Literal["auto", "gvisor", "bwrap"] = "auto"
    #: The ``runsc`` binary; ``None`` looks it up on ``PATH``.
    runsc_path: str | None = None
    #: Host uids (``FIRST-LAST``) the bwrap sandboxes' user namespaces are owned by, one per
    #: sandbox, so per-user kernel counters (inotify, ...) are per sandbox. Used by nothing else.
    sandbox_uid_range: str = "1000000000-1000065535"
    sandbox_domain: str = "sandbox.localhost"
    #: Bytes of a request body a route reads whole (JSON); streamed uploads are bounded by disk.
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=64 * 1024)
    #: Free disk (MiB) the data directory's filesystem keeps: below it, creates, forks,
    #: snapshots, hibernations and runs are refused and artifacts no longer copied.
    min_free_disk_mb: int = Field(default=1024, ge=0)

    default_template: str = "python"
    #: E2B template names (``templateID``) → ours; E2B's stock names not listed here
    #: (``base``, ``code-interpreter-v1``...) mean ``default_template``. JSON in the environment.
    e2b_templates: dict[str, str] = Field(default_factory=dict)
    default_vcpus: int = Field(default=1, ge=1)
    default_memory_mb: int = Field(default=512, ge=64)
    default_disk_mb: int = Field(default=1024, ge=64)
    max_vcpus: int = Field(default=4, ge=1)
    max_memory_mb: int = Field(default=8192, ge=64)
    max_disk_mb: int = Field(default=20480, ge=64)
    min_memory_mb: int = Field(default=128, ge=32)
    min_disk_mb: int = Field(default=64, ge=16)
    pids_max: int = Field(default=512, ge=64)
    #: Started sandboxes kept ready per template (JSON in the environment: '{"python": 2}').
    warm_pool: dict[str, int] = Field(default_factory=lambda: {"python": 1})
    default_timeout_ms: int = Field(default=300_000, ge=1000)
    max_timeout_ms: int = Field(default=86_400_000, ge=1000)
    #: How long create waits for the agent to dial home before the sandbox is an error.
    agent_connect_timeout_s: float = Field(default=30.0, gt=0)
    #: Sandboxes starting (launched or restored, until their agent dials home) at once; more
    #: wait their turn. Starts compete for CPU: a hundred at once on two cores would each take
    #: so long that they fail at the connect timeout, where in turn each takes a second or two.
    starts_max_concurrent: int = Field(default_factory=lambda: 2 * (os.cpu_count() or 1), ge=1)
    #: Seconds between reconciliations of records against real processes and deadlines.
    reconcile_interval_s: float = Field(default=2.0, gt=0)
    #: How often retired template builds nothing uses any more are deleted.
    template_collect_interval_s: float = Field(default=300.0, gt=0)
    #: Template builds through the API (docs/TEMPLATES.md): at once on the server (more wait
    #: their turn), under way per org (more are refused), templates per org, how long a build
    #: may take, and what each of its untrusted steps may use.
    template_builds_max_concurrent: int = Field(default=1, ge=1)
    template_builds_per_org: int = Field(default=1, ge=1)
    templates_per_org: int = Field(default=20, ge=1)
    template_build_timeout_s: float = Field(default=1800.0, gt=0)
    template_build_vcpus: int = Field(default=2, ge=1)
    template_build_memory_mb: int = Field(default=2048, ge=256)
    template_build_disk_mb: int = Field(default=8192, ge=1024)
    #: A sandbox still ``creating`` this long after its record was made is abandoned by the
    #: reconciler: a create whose last step failed, so nobody will finish it.
    create_deadline_s: float = Field(default=300.0, gt=0)

    #: Asynchronous code runs (docs/RUNS.md): runs executing at once per sandbox and in all.
    runs_max_concurrent_per_sandbox: int = Field(default=4, ge=1)
    runs_max_concurrent: int = Field(default=64, ge=1)
    #: Runs waiting in one sandbox's queue; more are refused until some finish.
    runs_max_queued_per_sandbox: int = Field(default=1000, ge=1)
    run_default_timeout_secs: int = Field(default=300, ge=1)
    run_max_timeout_secs: int = Field(default=86_400, ge=1)
    #: How long a finished run, its output and its artifacts are kept (from its completion).
    run_retention_s: int = Field(default=86_400, ge=1)
    #: Seconds between purges of expired runs and artifacts.
    run_purge_interval_s: float = Field(default=60.0, gt=0)
    #: Files one run may turn into artifacts, and the bytes one artifact may have.
    run_artifacts_max_files: int = Field(default=100, ge=0)
    run_artifact_max_bytes: int = Field(default=100 * 1024 * 1024, ge=0)
    #: Bytes all the artifacts of one run may have together (past it, files are listed empty).
    run_artifacts_max_total_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    #: Disk all the stored artifacts of one org may take (they are kept ``run_retention_s``,
    #: past their sandbox's end); past it, new ones are listed empty with the reason.
    org_max_artifact_mb: int = Field(default=5 * 1024, ge=0)

    #: Tenancy, credits and quotas (docs/TENANCY.md). When false, only operators (owners of the
    #: org made at first start) may create orgs; when true, any key's user may.
    allow_org_create: bool = False
    #: Credits a new org starts with. Credits are whole numbers (docs/TENANCY.md).
    initial_org_credits: int = Field(default=1_000_000_000, ge=0)
    #: Price of a running sandbox: credits per vCPU-second plus credits per GiB-second of memory.
    credits_per_vcpu_second: int = Field(default=10, ge=0)
    credits_per_gib_second: int = Field(default=5, ge=0)
    #: A paused sandbox keeps its memory: it costs this percentage of the memory price.
    paused_memory_percent: int = Field(default=100, ge=0, le=100)
    #: Seconds between credit deductions (and quota enforcement passes).
    credit_interval_s: float = Field(default=10.0, gt=0)
    #: Per-org defaults; an operator may override them per org.
    org_max_concurrent_sandboxes: int = Field(default=100, ge=1)
    org_max_members: int = Field(default=100, ge=1)
    #: Snapshots an org may keep (they outlive their sandboxes): how many, and how much disk.
    #: Checked before a snapshot is taken, so concurrent ones may pass it by one each.
    org_max_snapshots: int = Field(default=50, ge=0)
    org_max_snapshot_mb: int = Field(default=20 * 1024, ge=0)
    #: Requests per second per API key (a token bucket of ``rate_limit_burst``); 0 turns it off.
    rate_limit_per_s: float = Field(default=100.0, ge=0)
    rate_limit_burst: int = Field(default=500, ge=1)
    #: How long a key's principal is used again without reading the store, at most. A change
    #: made through this server (revocation, removal, demotion) applies at once anyway; this
    #: bounds one made by another server process sharing the store. 0 reads it every request.
    principal_cache_s: float = Field(default=2.0, ge=0)

    @model_validator(mode="after")
    def _check_bounds(self) -> Settings:
        if not self.min_memory_mb <= self.default_memory_mb <= self.max_memory_mb:
            raise ValueError("default_memory_mb must lie within [min_memory_mb, max_memory_mb]")
        if not self.min_disk_mb <= self.default_disk_mb <= self.max_disk_mb:
            raise ValueError("default_disk_mb must lie within [min_disk_mb, max_disk_mb]")
        if self.default_vcpus > self.max_vcpus:
            raise ValueError("default_vcpus must not exceed max_vcpus")
        if self.default_timeout_ms > self.max_timeout_ms:
            raise ValueError("default_timeout_ms must not exceed max_timeout_ms")
        if self.run_default_timeout_secs > self.run_max_timeout_secs:
            raise ValueError("run_default_timeout_secs must not exceed run_max_timeout_secs")
        UidRange.parse(self.sandbox_uid_range)
        return self

    @property
    def resolved_templates_dir(self) -> Path:
        return self.templates_dir if self.templates_dir is not None else self.data_dir / "templates"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'sandcastle.db'}"

    @property
    def sandboxes_dir(self) -> Path:
        return self.data_dir / "sandboxes"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def admin_key_path(self) -> Path:
        return self.data_dir / "admin.key"
