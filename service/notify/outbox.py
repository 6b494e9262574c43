"""Where digests and alerts go, and what was sent: two tables of the service database.

A target is a node of the org tree and a webhook (Slack or Teams). Every send is recorded
under its key before the webhook is called, in one of four states:

    recorded -> sending -> sent       (or failed: the receiver refused it, tried again next run)

A run that stops after recording and before sending leaves `recorded`: the next run sends it
(from the payload recorded), once. One that stops while sending leaves `sending`: the message
may have arrived, so it is never sent again (at most once) and `forecast notify status` shows it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import sqlalchemy as sa

from service.keys import metadata

Channel = Literal["slack", "teams"]

notify_targets = sa.Table(
    "notify_targets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("node", sa.String(200), nullable=False),
    sa.Column("channel", sa.String(8), nullable=False),
    sa.Column("url", sa.Text, nullable=False),  # a secret: never printed (see `masked`)
    sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
)

notify_sends = sa.Table(
    "notify_sends",
    metadata,
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

notify_seen = sa.Table(  # what the last run saw (the champion versions), to tell what changed
    "notify_seen",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
)


@dataclass(frozen=True)
class Target:
    id: int
    level: str
    node: str
    channel: Channel
    url: str
    added_at: datetime

    def shown(self) -> dict[str, Any]:
        """The target as it may be printed: the webhook masked."""
        return {
            "id": self.id,
            "level": self.level,
            "node": self.node,
            "channel": self.channel,
            "webhook": masked(self.url),
            "added_at": self.added_at.isoformat(),
        }


def masked(url: str) -> str:
    """A webhook's scheme and host only: its path is the secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…"


def check_webhook(url: str) -> str | None:
    """Why `url` cannot be a webhook, or None: https, or http to this machine (a test or a
    relay on localhost)."""
    if any(c.isspace() or ord(c) < 32 for c in url):
        return "a webhook URL holds no spaces or control characters (copy it again whole)"
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.netloc:
        return None
    if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return None
    return "a webhook must be an https:// URL (http:// only to 127.0.0.1 or localhost)"


def add_target(engine: sa.Engine, level: str, node: str, channel: Channel, url: str) -> Target:
    now = datetime.now(UTC)
    row = {"level": level, "node": node, "channel": channel, "url": url, "added_at": now}
    with engine.begin() as conn:
        made = conn.execute(notify_targets.insert().values(**row)).inserted_primary_key
    assert made is not None
    return Target(int(made[0]), level, node, channel, url, now)


def targets(engine: sa.Engine) -> list[Target]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(notify_targets).order_by(notify_targets.c.id)).mappings()
        return [Target(**_aware(dict(r), "added_at")) for r in rows]


def remove_target(engine: sa.Engine, target_id: int) -> bool:
    with engine.begin() as conn:
        gone = conn.execute(notify_targets.delete().where(notify_targets.c.id == target_id))
    return gone.rowcount > 0


# --- sends ---------------------------------------------------------------------------------------


def send_key(message_key: str, target: Target) -> str:
    return f"{message_key}|target:{target.id}"


def record(engine: sa.Engine, key: str, target: Target, kind: str, payload: dict) -> str:
    """Record a send before it is made; its state ("recorded" when new, else what an earlier
    run left: "sent", "sending", "failed" or "recorded")."""
    row = {
        "key": key,
        "target_id": target.id,
        "kind": kind,
        "state": "recorded",
        "payload": json.dumps(payload, ensure_ascii=False),
        "attempts": 0,
        "recorded_at": datetime.now(UTC),
    }
    with engine.begin() as conn:
        state = conn.execute(
            sa.select(notify_sends.c.state).where(notify_sends.c.key == key)
        ).scalar()
        if state is None:
            conn.execute(notify_sends.insert().values(**row))
            return "recorded"
    return str(state)


def claim(engine: sa.Engine, key: str) -> bool:
    """Mark a recorded (or refused) send as being sent; False if another run has it."""
    with engine.begin() as conn:
        taken = conn.execute(
            notify_sends.update()
            .where(notify_sends.c.key == key, notify_sends.c.state.in_(("recorded", "failed")))
            .values(state="sending", attempts=notify_sends.c.attempts + 1)
        )
    return taken.rowcount == 1


def settle(engine: sa.Engine, key: str, *, sent: bool, detail: str | None = None) -> None:
    values: dict[str, Any] = {"state": "sent" if sent else "failed", "detail": detail}
    if sent:
        values["sent_at"] = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(notify_sends.update().where(notify_sends.c.key == key).values(**values))


def waiting(engine: sa.Engine) -> list[tuple[str, int, dict]]:
    """Sends recorded by a run that stopped before making them: (key, target id, payload)."""
    query = sa.select(notify_sends.c.key, notify_sends.c.target_id, notify_sends.c.payload).where(
        notify_sends.c.state == "recorded"
    )
    with engine.connect() as conn:
        return [(k, int(t), json.loads(p)) for k, t, p in conn.execute(query)]


def sends(engine: sa.Engine) -> list[dict[str, Any]]:
    """Every recorded send, newest first (without payloads)."""
    columns = [c for c in notify_sends.c if c.name != "payload"]
    query = sa.select(*columns).order_by(notify_sends.c.recorded_at.desc())
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def seen(engine: sa.Engine, name: str) -> str | None:
    with engine.connect() as conn:
        query = sa.select(notify_seen.c.value).where(notify_seen.c.name == name)
        return conn.execute(query).scalar()


def remember(engine: sa.Engine, name: str, value: str) -> None:
    with engine.begin() as conn:
        conn.execute(notify_seen.delete().where(notify_seen.c.name == name))
        conn.execute(notify_seen.insert().values(name=name, value=value))


def _aware(row: dict[str, Any], column: str) -> dict[str, Any]:
    """SQLite gives datetimes back without their zone: they were written in UTC."""
    value = row[column]
    if value is not None and value.tzinfo is None:
        row[column] = value.replace(tzinfo=UTC)
    return row
