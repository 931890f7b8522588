"""tenancy: users, members, workspaces, credits, quotas; sandbox ownership and metering

Revision ID: 0003
Revises: 0002

Existing data is carried over: every key gets a user and a member of its org with the key's
role (``owner``/``admin`` stay, anything else becomes ``member``); every sandbox gets a uuid;
orgs start with :data:`INITIAL_CREDITS`; sandboxes alive at the upgrade are metered from the
upgrade on (nothing before it is billed), and those already ended count as settled.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from sandcastle.store.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: The balance orgs that existed before metering start with (``Settings.initial_org_credits``).
INITIAL_CREDITS = 1_000_000_000
_ROLES = {"owner": "owner", "admin": "admin"}


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )
    op.create_table(
        "members",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("removed_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("org_id", "user_id", name="uq_members_org_user"),
    )
    op.create_index("ix_members_org_id", "members", ["org_id"])
    op.create_index("ix_members_user_id", "members", ["user_id"])
    op.create_table(
        "workspaces",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"]),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("org_id", "key", name="uq_workspaces_org_key"),
    )
    op.create_index("ix_workspaces_org_id", "workspaces", ["org_id"])
    op.create_index("ix_workspaces_project_id", "workspaces", ["project_id"])
    op.create_table(
        "credit_transactions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("member_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_credit_transactions_org_created", "credit_transactions", ["org_id", "created_at"]
    )

    with op.batch_alter_table("orgs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "credit_balance",
                sa.BigInteger(),
                nullable=False,
                server_default=str(INITIAL_CREDITS),
            )
        )
        for column in ("max_concurrent_sandboxes", "max_members", "max_vcpus", "max_memory_mb"):
            batch_op.add_column(sa.Column(column, sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rate_limit_per_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("rate_limit_burst", sa.Integer(), nullable=True))
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_projects_org_key", ["org_id", "key"])
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("member_id", sa.String(length=36), nullable=True))
        batch_op.create_index("ix_api_keys_member_id", ["member_id"], unique=False)
        batch_op.create_foreign_key("fk_api_keys_member_id", "members", ["member_id"], ["id"])

    with op.batch_alter_table("sandboxes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("uuid", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("workspace_id", sa.String(length=36), nullable=True))
        batch_op.add_column(
            sa.Column(
                "sandbox_kind", sa.String(length=16), nullable=False, server_default="runtime"
            )
        )
        batch_op.add_column(sa.Column("member_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("build_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("pause_reason", sa.String(length=32), nullable=True))
        for column in ("last_started_at", "stopped_at", "killed_at", "meter_since"):
            batch_op.add_column(sa.Column(column, UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("last_credit_deduction_at", UTCDateTime(timezone=True), nullable=True)
        )
        for column in ("runtime_ms", "meter_units", "billed_credits"):
            batch_op.add_column(
                sa.Column(column, sa.BigInteger(), nullable=False, server_default="0")
            )
        batch_op.create_foreign_key(
            "fk_sandboxes_workspace_id", "workspaces", ["workspace_id"], ["id"]
        )
        batch_op.create_foreign_key("fk_sandboxes_member_id", "members", ["member_id"], ["id"])

    _carry_over_data()

    with op.batch_alter_table("sandboxes", schema=None) as batch_op:
        batch_op.alter_column("uuid", existing_type=sa.String(length=36), nullable=False)
        batch_op.create_index("ix_sandboxes_uuid", ["uuid"], unique=True)
        batch_op.create_index("ix_sandboxes_killed_at", ["killed_at"], unique=False)
        batch_op.create_index(
            "ix_sandboxes_org_member_created",
            ["org_id", "member_id", "created_at", "id"],
            unique=False,
        )
        batch_op.create_index("ix_sandboxes_org_status", ["org_id", "status"], unique=False)


def _carry_over_data() -> None:
    bind = op.get_bind()
    now = datetime.now(UTC).replace(tzinfo=None)  # UTCDateTime stores naive UTC
    keys = bind.execute(sa.text("SELECT id, org_id, name, role, created_at FROM api_keys")).all()
    for key_id, org_id, name, role, created_at in keys:
        user_id, member_id = str(uuid.uuid4()), str(uuid.uuid4())
        bind.execute(
            sa.text(
                "INSERT INTO users (id, email, name, created_at) "
                "VALUES (:id, :email, :name, :created)"
            ),
            {
                "id": user_id,
                "email": f"key-{key_id}@localhost",
                "name": name,
                "created": created_at,
            },
        )
        bind.execute(
            sa.text(
                "INSERT INTO members (id, org_id, user_id, role, created_at) "
                "VALUES (:id, :org, :user, :role, :created)"
            ),
            {
                "id": member_id,
                "org": org_id,
                "user": user_id,
                "role": _ROLES.get(role, "member"),
                "created": created_at,
            },
        )
        bind.execute(
            sa.text("UPDATE api_keys SET member_id = :member WHERE id = :id"),
            {"member": member_id, "id": key_id},
        )
    rows = bind.execute(
        sa.text("SELECT id, status, started_at, paused_at, destroyed_at, created_at FROM sandboxes")
    ).all()
    for sandbox_id, status, started, paused, destroyed, created in rows:
        values: dict[str, object] = {"id": sandbox_id, "uuid": str(uuid.uuid4())}
        if status in ("running", "paused", "creating"):
            # Metered from now on: nothing before the upgrade is billed.
            values.update(meter_since=now, last_credit_deduction_at=now)
            if status == "paused" and started is not None and paused is not None:
                values.update(runtime_ms=_ms(started, paused), stopped_at=paused)
        else:
            end = destroyed or paused or started or created
            values.update(killed_at=end, stopped_at=end, meter_since=end)
            if started is not None and end is not None:
                values.update(runtime_ms=_ms(started, end))
        assignments = ", ".join(f"{k} = :{k}" for k in values if k != "id")
        bind.execute(sa.text(f"UPDATE sandboxes SET {assignments} WHERE id = :id"), values)


def _ms(start: object, end: object) -> int:
    if not isinstance(start, datetime):
        start = datetime.fromisoformat(str(start))
    if not isinstance(end, datetime):
        end = datetime.fromisoformat(str(end))
    return max(0, int((end - start).total_seconds() * 1000))


def downgrade() -> None:
    with op.batch_alter_table("sandboxes", schema=None) as batch_op:
        for index in (
            "ix_sandboxes_org_status",
            "ix_sandboxes_org_member_created",
            "ix_sandboxes_killed_at",
            "ix_sandboxes_uuid",
        ):
            batch_op.drop_index(index)
        batch_op.drop_constraint("fk_sandboxes_member_id", type_="foreignkey")
        batch_op.drop_constraint("fk_sandboxes_workspace_id", type_="foreignkey")
        for column in (
            "billed_credits",
            "meter_units",
            "runtime_ms",
            "last_credit_deduction_at",
            "meter_since",
            "killed_at",
            "stopped_at",
            "last_started_at",
            "pause_reason",
            "build_id",
            "member_id",
            "sandbox_kind",
            "workspace_id",
            "uuid",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint("fk_api_keys_member_id", type_="foreignkey")
        batch_op.drop_index("ix_api_keys_member_id")
        batch_op.drop_column("member_id")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_constraint("uq_projects_org_key", type_="unique")
    with op.batch_alter_table("orgs", schema=None) as batch_op:
        for column in (
            "rate_limit_burst",
            "rate_limit_per_s",
            "max_memory_mb",
            "max_vcpus",
            "max_members",
            "max_concurrent_sandboxes",
            "credit_balance",
        ):
            batch_op.drop_column(column)
    op.drop_index("ix_credit_transactions_org_created", table_name="credit_transactions")
    op.drop_table("credit_transactions")
    op.drop_index("ix_workspaces_project_id", table_name="workspaces")
    op.drop_index("ix_workspaces_org_id", table_name="workspaces")
    op.drop_table("workspaces")
    op.drop_index("ix_members_user_id", table_name="members")
    op.drop_index("ix_members_org_id", table_name="members")
    op.drop_table("members")
    op.drop_table("users")
