"""lifecycle: warm pool, network, pause, traffic token

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sandcastle.store.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandboxes", schema=None) as batch_op:
        batch_op.alter_column("org_id", existing_type=sa.String(length=36), nullable=True)
        batch_op.alter_column("project_id", existing_type=sa.String(length=36), nullable=True)
        batch_op.add_column(sa.Column("pool", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("internet", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("traffic_access_token", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("paused_at", UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("warm_pool_hit", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("warm_pool_id", sa.String(length=80), nullable=True))
        batch_op.create_index("ix_sandboxes_pool", ["pool"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sandboxes", schema=None) as batch_op:
        batch_op.drop_index("ix_sandboxes_pool")
        for column in (
            "warm_pool_id",
            "warm_pool_hit",
            "paused_at",
            "traffic_access_token",
            "internet",
            "pool",
        ):
            batch_op.drop_column(column)
        batch_op.alter_column("project_id", existing_type=sa.String(length=36), nullable=False)
        batch_op.alter_column("org_id", existing_type=sa.String(length=36), nullable=False)
