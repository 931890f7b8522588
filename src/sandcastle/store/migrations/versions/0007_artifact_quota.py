"""artifacts: the org they count against and the bytes they really take

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("org_id", sa.String(length=36), nullable=True))
        batch_op.add_column(
            sa.Column("stored_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.create_index("ix_artifacts_org_id", ["org_id"])
    # Existing artifacts count for their sandbox's org, at their whole size (an upper bound:
    # their holes were not measured).
    op.execute(
        "UPDATE artifacts SET org_id = (SELECT sandboxes.org_id FROM sandboxes"
        " WHERE sandboxes.id = artifacts.sandbox_id),"
        " stored_bytes = CASE WHEN sha256 IS NULL THEN 0 ELSE size_bytes END"
    )


def downgrade() -> None:
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.drop_index("ix_artifacts_org_id")
        batch_op.drop_column("stored_bytes")
        batch_op.drop_column("org_id")
