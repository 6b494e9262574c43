"""Every service process in step: a reload asked of one is done by all.

`POST /v1/admin/reload` reaches one process (one worker of one instance). It records the request
in the service database, which every worker of every instance shares; each process's poller
looks for a newer request every `sync_seconds` (one indexed query) and reloads the store and the
champions when it finds one. The same poller reloads the store when a new import becomes
current (the store's `current` link moves) and the champions when an alias moves.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from service.keys import metadata

reload_requests = sa.Table(
    "reload_requests",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("caller", sa.String(64), nullable=False),
)


def request_reload(engine: sa.Engine, caller: str) -> int:
    """Record a reload for every process; returns its number (later requests, higher)."""
    with engine.begin() as conn:
        insert = reload_requests.insert().values(at=datetime.now(UTC), caller=caller)
        return int(conn.execute(insert.returning(reload_requests.c.id)).scalar_one())


def latest_reload(engine: sa.Engine) -> int:
    """The number of the last reload asked for (0: none yet)."""
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.max(reload_requests.c.id))).scalar() or 0)
