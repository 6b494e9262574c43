"""Digest and alert targets, the sends made to them, and what the last run saw.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # made by an earlier `create_all` of the whole metadata (see 0001): taken over as they are
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "notify_targets" not in existing:
        _targets()
    if "notify_sends" not in existing:
        _sends()
    if "notify_seen" not in existing:
        op.create_table(
            "notify_seen",
            sa.Column("name", sa.String(100), primary_key=True),
            sa.Column("value", sa.String(200), nullable=False),
        )


def _targets() -> None:
    op.create_table(
        "notify_targets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("node", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )


def _sends() -> None:
    op.create_table(
        "notify_sends",
        sa.Column("key", sa.String(400), primary_key=True),
        sa.Column("target_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.String(300), nullable=True),
    )


def downgrade() -> None:
    for table in ("notify_seen", "notify_sends", "notify_targets"):
        op.drop_table(table)
