"""Database tables. Times are stored as timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import uuid4

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """SQLite forgets time zones; store UTC and hand back aware datetimes everywhere."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


class OrgRow(Base):
    __tablename__ = "orgs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    #: Credits left, in credits (docs/TENANCY.md); metering debits it, top-ups credit it.
    credit_balance: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Per-org quotas; null means the server's default (``Settings.org_*``).
    max_concurrent_sandboxes: Mapped[int | None] = mapped_column(Integer)
    max_members: Mapped[int | None] = mapped_column(Integer)
    max_vcpus: Mapped[int | None] = mapped_column(Integer)
    max_memory_mb: Mapped[int | None] = mapped_column(Integer)
    rate_limit_per_s: Mapped[float | None]
    rate_limit_burst: Mapped[int | None] = mapped_column(Integer)


class UserRow(Base):
    """A person (or robot) who may be a member of several orgs."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class MemberRow(Base):
    """A user's membership of an org, with a role: ``owner``, ``admin`` or ``member``."""

    __tablename__ = "members"
    __table_args__ = (UniqueConstraint("org_id", "user_id", name="uq_members_org_user"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    #: Set when the member was removed (their keys are revoked); the row stays for the record.
    removed_at: Mapped[datetime | None]


class WorkspaceRow(Base):
    __tablename__ = "workspaces"
    __table_args__ = (UniqueConstraint("org_id", "key", name="uq_workspaces_org_key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class CreditTransactionRow(Base):
    """The org's credit ledger: top-ups (positive) and metered usage (negative)."""

    __tablename__ = "credit_transactions"
    __table_args__ = (Index("ix_credit_transactions_org_created", "org_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    member_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime]


class ProjectRow(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("org_id", "key", name="uq_projects_org_key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(200))
    #: The first characters of the key, to tell keys apart in listings; never enough to use.
    prefix: Mapped[str] = mapped_column(String(16))
    #: SHA-256 of the whole key; the key itself is never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="admin")
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    #: The member the key acts as; its role and org are the member's. Null only for keys made
    #: before members existed and not migrated (then ``role`` is the key's own).
    member_id: Mapped[str | None] = mapped_column(ForeignKey("members.id"), index=True)


class SandboxRow(Base):
    __tablename__ = "sandboxes"
    __table_args__ = (
        Index("ix_sandboxes_org_created", "org_id", "created_at", "id"),
        # The org list for members (their own sandboxes) and the capacity check.
        Index("ix_sandboxes_org_member_created", "org_id", "member_id", "created_at", "id"),
        Index("ix_sandboxes_org_status", "org_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    #: Null while the sandbox is a warm-pool entry no tenant has checked out.
    org_id: Mapped[str | None] = mapped_column(ForeignKey("orgs.id"))
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id"))
    #: The template whose warm pool holds this sandbox; null once checked out (or never pooled).
    pool: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    status_reason: Mapped[str | None] = mapped_column(Text)
    template: Mapped[str] = mapped_column(String(64))
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_mb: Mapped[int] = mapped_column(Integer)
    metadata_json: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    cwd: Mapped[str | None] = mapped_column(String(4096))
    timeout_ms: Mapped[int | None]
    timeout_at: Mapped[datetime | None]
    timeout_action: Mapped[str] = mapped_column(String(16), default="destroy")
    runtime: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    destroyed_at: Mapped[datetime | None]
    #: OOM kills observed in the sandbox's memory cgroup so far.
    oom_kills_seen: Mapped[int] = mapped_column(Integer, default=0)
    internet: Mapped[bool] = mapped_column(Boolean, default=False)
    traffic_access_token: Mapped[str | None] = mapped_column(String(64))
    #: What E2B's clients send as ``X-Access-Token`` to reach the sandbox's daemon (docs/E2B.md).
    envd_access_token: Mapped[str | None] = mapped_column(String(64))
    #: Environment variables every process and execution in the sandbox starts with.
    env_json: Mapped[dict[str, str] | None] = mapped_column("env", JSON)
    paused_at: Mapped[datetime | None]
    #: Set when create considered a warm pool: whether it was a hit, and the pool's id.
    warm_pool_hit: Mapped[bool | None] = mapped_column(Boolean)
    warm_pool_id: Mapped[str | None] = mapped_column(String(80))
    # --- tenancy and metering (docs/TENANCY.md) ---
    #: The public id of ``GET /api/v1/org/{org}/sandboxes`` (``id`` is the provider's id).
    uuid: Mapped[str] = mapped_column(
        String(36), unique=True, index=True, default=lambda: str(uuid4())
    )
    workspace_id: Mapped[str | None] = mapped_column(ForeignKey("workspaces.id"))
    sandbox_kind: Mapped[str] = mapped_column(String(16), default="runtime")
    #: The member whose key created the sandbox.
    member_id: Mapped[str | None] = mapped_column(ForeignKey("members.id"))
    #: The template build the sandbox was started from.
    build_id: Mapped[str | None] = mapped_column(String(36))
    pause_reason: Mapped[str | None] = mapped_column(String(32))
    #: Start of the current (or last) running interval; null means ``started_at``.
    last_started_at: Mapped[datetime | None]
    #: End of the last running interval (pause or kill); null while running.
    stopped_at: Mapped[datetime | None]
    #: When metering settled the sandbox after it was destroyed or failed.
    killed_at: Mapped[datetime | None] = mapped_column(index=True)
    #: Running time of closed intervals, in milliseconds.
    runtime_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Start of the metering segment not yet costed; null means ``started_at``.
    meter_since: Mapped[datetime | None]
    #: Cost of every closed segment, in 1/102,400,000 credit (exact; see services/accounting).
    meter_units: Mapped[int] = mapped_column(BigInteger, default=0)
    billed_credits: Mapped[int] = mapped_column(BigInteger, default=0)
    last_credit_deduction_at: Mapped[datetime | None]
    # --- memory snapshots (docs/SNAPSHOTS.md) ---
    #: While hibernated (``paused`` with no processes): the image under ``<data_dir>/snapshots``
    #: to restore it from. Null otherwise, a freezer pause included.
    snapshot_id: Mapped[str | None] = mapped_column(String(40))
    #: The first request that needs the agent of a hibernated sandbox resumes it.
    auto_resume: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The snapshot a fork was restored from (the snapshot may have been deleted since).
    source_snapshot_id: Mapped[str | None] = mapped_column(String(40))


class SnapshotRow(Base):
    """A saved sandbox (memory and writable layer) under ``<data_dir>/snapshots/<id>``; new
    sandboxes (forks) are restored from it. Deleting a snapshot deletes the row and the image."""

    __tablename__ = "snapshots"
    __table_args__ = (Index("ix_snapshots_org_created", "org_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"))
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id"))
    sandbox_id: Mapped[str] = mapped_column(ForeignKey("sandboxes.id"), index=True)
    template: Mapped[str] = mapped_column(String(64), index=True)
    build_id: Mapped[str | None] = mapped_column(String(36))
    runtime: Mapped[str] = mapped_column(String(16))
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_mb: Mapped[int] = mapped_column(Integer)
    cwd: Mapped[str | None] = mapped_column(String(4096))
    internet: Mapped[bool] = mapped_column(Boolean, default=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    #: ``[{id, language, cwd}]``: the contexts ready when it was taken, under their ids then.
    contexts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    metadata_json: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime]


class ContextRow(Base):
    __tablename__ = "contexts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    sandbox_id: Mapped[str] = mapped_column(ForeignKey("sandboxes.id"), index=True)
    language: Mapped[str] = mapped_column(String(16))
    cwd: Mapped[str | None] = mapped_column(String(4096))
    status: Mapped[str] = mapped_column(String(16), default="creating")
    created_at: Mapped[datetime]
    #: A role the context plays for a client, e.g. the E2B default context of its language.
    label: Mapped[str | None] = mapped_column(String(32))


class RunRow(Base):
    """An asynchronous code run: the durable queue is this table (``status = 'queued'``)."""

    __tablename__ = "code_runs"
    __table_args__ = (
        Index("ix_code_runs_sandbox_seq", "sandbox_id", "seq"),
        Index("ix_code_runs_status_seq", "status", "seq"),
        Index("ix_code_runs_expires", "expires_at"),
        # Never reuse a purged run's number: cursors and FIFO order rely on it only growing.
        {"sqlite_autoincrement": True},
    )

    #: Submission order: FIFO per context and the keyset of pagination (never reused).
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    sandbox_id: Mapped[str] = mapped_column(ForeignKey("sandboxes.id"))
    context_id: Mapped[str | None] = mapped_column(String(40), index=True)
    language: Mapped[str] = mapped_column(String(16))
    code: Mapped[str] = mapped_column(Text)
    #: Kept only until the run ends: they may hold secrets.
    env_vars: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    timeout_secs: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    cancel_requested_at: Mapped[datetime | None]
    execution: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    failure_reason: Mapped[str | None] = mapped_column(Text)


class ArtifactRow(Base):
    """A file a run created or changed, its bytes kept under ``<data_dir>/artifacts``."""

    __tablename__ = "artifacts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("code_runs.id"), index=True)
    sandbox_id: Mapped[str] = mapped_column(String(16), index=True)
    #: Whose quota the file counts against; null only for rows from before the quota.
    org_id: Mapped[str | None] = mapped_column(String(36), index=True)
    #: Disk the stored file really takes (its zeros are holes).
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    context_id: Mapped[str] = mapped_column(String(40))
    #: The file's path relative to the context's working directory.
    name: Mapped[str] = mapped_column(String(4096))
    mime_type: Mapped[str] = mapped_column(String(200))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    #: Null when the file was not copied (too large, changed while read): see ``metadata``.
    sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    execution_count: Mapped[int | None]
    expires_at: Mapped[datetime]
    metadata_json: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
