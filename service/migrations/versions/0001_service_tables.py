"""The service's tables as they were before migrations: created here when missing, so a database
made by the earlier `create_all` is taken over as it is (and stamped), a new one made whole.

Revision ID: 0001
Revises:
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite autoincrements INTEGER keys


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "api_keys" not in existing:
        op.create_table(
            "api_keys",
            sa.Column("key_id", sa.String(32), primary_key=True),
            sa.Column("salt", sa.String(64), nullable=False),
            sa.Column("digest", sa.String(64), nullable=False),
            sa.Column("role", sa.String(16), nullable=False),
            sa.Column("rep_id", sa.String(64), nullable=True),
            sa.Column("label", sa.String(200), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        )
    if "prediction_log" not in existing:
        op.create_table(
            "prediction_log",
            sa.Column("id", ID, primary_key=True),
            sa.Column("request_id", sa.String(64), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("caller", sa.String(64), nullable=False),
            sa.Column("model", sa.String(100), nullable=False),
            sa.Column("model_version", sa.String(32), nullable=False),
            sa.Column("subject", sa.String(200), nullable=True),
            sa.Column("input_hash", sa.String(64), nullable=False),
            sa.Column("output", sa.JSON, nullable=False),
        )
        op.create_index("ix_prediction_log_request_id", "prediction_log", ["request_id"])
    if "audit_log" not in existing:
        op.create_table(
            "audit_log",
            sa.Column("id", ID, primary_key=True),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("request_id", sa.String(64), nullable=False),
            sa.Column("caller", sa.String(64), nullable=False),
            sa.Column("role", sa.String(16), nullable=False),
            sa.Column("method", sa.String(8), nullable=False),
            sa.Column("path", sa.String(500), nullable=False),
            sa.Column("status", sa.Integer, nullable=False),
        )
    if "dashboard_sessions" not in existing:
        op.create_table(
            "dashboard_sessions",
            sa.Column("token_hash", sa.String(64), primary_key=True),
            sa.Column("key_id", sa.String(32), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        )
        op.create_index("ix_dashboard_sessions_key_id", "dashboard_sessions", ["key_id"])


def downgrade() -> None:
    for table in ("dashboard_sessions", "audit_log", "prediction_log", "api_keys"):
        op.drop_table(table)
