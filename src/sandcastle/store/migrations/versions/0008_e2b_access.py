"""E2B compatibility: each sandbox's envd access token and environment, labelled contexts

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandboxes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("envd_access_token", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("env", sa.JSON(), nullable=True))
    with op.batch_alter_table("contexts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("label", sa.String(length=32), nullable=True))
    # Sandboxes made before this revision get their tokens now, one random value each (SQL has
    # no portable way to draw a secret per row, so it is done here, row by row).
    bind = op.get_bind()
    sandboxes = sa.table(
        "sandboxes",
        sa.column("id", sa.String),
        sa.column("envd_access_token", sa.String),
        sa.column("traffic_access_token", sa.String),
    )
    rows = bind.execute(
        sa.select(sandboxes.c.id, sandboxes.c.traffic_access_token).where(
            sandboxes.c.envd_access_token.is_(None)
        )
    ).all()
    for sandbox_id, traffic in rows:
        bind.execute(
            sandboxes.update()
            .where(sandboxes.c.id == sandbox_id)
            .values(
                envd_access_token=secrets.token_urlsafe(24),
                traffic_access_token=traffic or secrets.token_urlsafe(24),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("contexts", schema=None) as batch_op:
        batch_op.drop_column("label")
    with op.batch_alter_table("sandboxes", schema=None) as batch_op:
        batch_op.drop_column("env")
        batch_op.drop_column("envd_access_token")
