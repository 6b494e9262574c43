"""Reload requests, shared by every service process (see service/in_step.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "reload_requests" in sa.inspect(op.get_bind()).get_table_names():
        return  # made by an earlier `create_all` of the whole metadata (see 0001)
    op.create_table(
        "reload_requests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("caller", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("reload_requests")
