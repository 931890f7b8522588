"""asynchronous code runs and their artifacts

Revision ID: 0004
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sandcastle.store.models import UTCDateTime

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "code_runs",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("sandbox_id", sa.String(length=16), nullable=False),
        sa.Column("context_id", sa.String(length=40), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("env_vars", sa.JSON(), nullable=True),
        sa.Column("timeout_secs", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("completed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("cancel_requested_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("execution", sa.JSON(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["sandbox_id"], ["sandboxes.id"]),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_code_runs_sandbox_seq", "code_runs", ["sandbox_id", "seq"])
    op.create_index("ix_code_runs_status_seq", "code_runs", ["status", "seq"])
    op.create_index("ix_code_runs_expires", "code_runs", ["expires_at"])
    op.create_index("ix_code_runs_context_id", "code_runs", ["context_id"])
    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("sandbox_id", sa.String(length=16), nullable=False),
        sa.Column("context_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=4096), nullable=False),
        sa.Column("mime_type", sa.String(length=200), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("execution_count", sa.Integer(), nullable=True),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["code_runs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_artifacts_run_id", "artifacts", ["run_id"])
    op.create_index("ix_artifacts_sandbox_id", "artifacts", ["sandbox_id"])


def downgrade() -> None:
    op.drop_index("ix_artifacts_sandbox_id", table_name="artifacts")
    op.drop_index("ix_artifacts_run_id", table_name="artifacts")
    op.drop_table("artifacts")
    op.drop_index("ix_code_runs_context_id", table_name="code_runs")
    op.drop_index("ix_code_runs_expires", table_name="code_runs")
    op.drop_index("ix_code_runs_status_seq", table_name="code_runs")
    op.drop_index("ix_code_runs_sandbox_seq", table_name="code_runs")
    op.drop_table("code_runs")
