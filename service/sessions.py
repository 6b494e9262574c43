"""Dashboard sign-in sessions: a random token in an HttpOnly cookie, its hash in the service DB.

The session names the API key it was opened with, not a copy of the key's role: every request
re-reads the key, so revoking a key ends its dashboard sessions at once. Only the token's
SHA-256 is stored, so a copy of the database opens no session.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from service.keys import Principal, api_keys, ensure_tables, metadata

COOKIE = "forecast_session"

dashboard_sessions = sa.Table(
    "dashboard_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("key_id", sa.String(32), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _utc(moment: datetime) -> datetime:
    # SQLite hands timestamps back without their zone; they were written in UTC
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def open_session(
    engine: sa.Engine, principal: Principal, *, hours: float, now: datetime | None = None
) -> str:
    """A new session for `principal`; returns the token for the cookie (shown only here)."""
    ensure_tables(engine)
    now = now or datetime.now(UTC)
    token = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(
            dashboard_sessions.insert().values(
                token_hash=_hash(token),
                key_id=principal.key_id,
                created_at=now,
                expires_at=now + timedelta(hours=hours),
            )
        )
    return token


def session_principal(
    engine: sa.Engine, token: str | None, *, now: datetime | None = None
) -> Principal | None:
    """Who a session token stands for, or None (unknown, expired, or its key revoked)."""
    if not token:
        return None
    ensure_tables(engine)
    now = now or datetime.now(UTC)
    query = (
        sa.select(api_keys.c.key_id, api_keys.c.role, api_keys.c.rep_id, api_keys.c.revoked_at)
        .add_columns(dashboard_sessions.c.expires_at)
        .join(dashboard_sessions, dashboard_sessions.c.key_id == api_keys.c.key_id)
        .where(dashboard_sessions.c.token_hash == _hash(token))
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None or row.revoked_at is not None or _utc(row.expires_at) <= now:
        return None
    return Principal(key_id=row.key_id, role=row.role, rep_id=row.rep_id)


def close_session(engine: sa.Engine, token: str | None) -> None:
    """Sign out: the token stops working (whatever the browser keeps)."""
    if not token:
        return
    ensure_tables(engine)
    with engine.begin() as conn:
        conn.execute(
            dashboard_sessions.delete().where(dashboard_sessions.c.token_hash == _hash(token))
        )
