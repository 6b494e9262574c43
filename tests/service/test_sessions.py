"""Dashboard sessions: the token is stored hashed, expires, and dies with its key."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from service.keys import create_key, engine_for, revoke_key, verify_key
from service.sessions import close_session, dashboard_sessions, open_session, session_principal


def test_a_session_stands_for_its_key_until_it_expires(tmp_path: Path) -> None:
    engine = engine_for(f"sqlite:///{tmp_path / 'service.db'}")
    key = create_key(engine, "manager", rep_id="M01")
    principal = verify_key(engine, key)
    start = datetime(2026, 11, 25, 9, tzinfo=UTC)
    token = open_session(engine, principal, hours=8, now=start)
    assert session_principal(engine, token, now=start + timedelta(hours=7)) == principal
    assert session_principal(engine, token, now=start + timedelta(hours=8)) is None
    with engine.connect() as conn:
        stored = conn.execute(sa.select(dashboard_sessions.c.token_hash)).scalars().all()
    assert stored == [hashlib.sha256(token.encode()).hexdigest()]  # only the hash is kept
    assert session_principal(engine, token[:-1] + "x", now=start) is None
    assert session_principal(engine, None) is None


def test_sign_out_and_revoking_the_key_end_it(tmp_path: Path) -> None:
    engine = engine_for(f"sqlite:///{tmp_path / 'service.db'}")
    key = create_key(engine, "rep", rep_id="R01")
    first = open_session(engine, verify_key(engine, key), hours=1)
    second = open_session(engine, verify_key(engine, key), hours=1)
    close_session(engine, first)
    assert session_principal(engine, first) is None
    assert session_principal(engine, second) is not None
    revoke_key(engine, key.split("_")[1])
    assert session_principal(engine, second) is None
