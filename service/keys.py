"""API keys for the service: created once and shown once, stored only as a salted HMAC.

A key reads `fk_<key_id>_<secret>`: the id finds the row, the secret is checked against
HMAC-SHA256(salt, secret) with a constant-time comparison. The table lives in the service
database (SQLite under FORECAST_HOME by default, PostgreSQL when FORECAST_DATABASE_URL says so).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal

import sqlalchemy as sa

Role = Literal["crm", "rep", "manager", "admin"]
ROLES: tuple[Role, ...] = ("crm", "rep", "manager", "admin")
NEEDS_REP_ID: frozenset[str] = frozenset({"rep", "manager"})
PREFIX = "fk"

metadata = sa.MetaData()

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("rep_id", sa.String(64), nullable=True),
    sa.Column("label", sa.String(200), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id (safe to log), its role and, for people, their rep id."""

    key_id: str
    role: Role
    rep_id: str | None = None


def database_url(url: str) -> str:
    """SQLAlchemy URL: a bare `postgresql://` uses psycopg 3, the driver this project ships."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


CONNECT_SECONDS = 5


@lru_cache(maxsize=8)
def engine_for(url: str) -> sa.Engine:
    """One engine per database URL; a SQLite file's folder is created on first use."""
    url = database_url(url)
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return sa.create_engine(url, connect_args={"check_same_thread": False})
    # a database that does not answer fails a connection in seconds: requests answer 503 and
    # log rows are spooled, rather than both waiting on the driver's default (no limit)
    timeout = (
        {"connect_timeout": CONNECT_SECONDS} if parsed.get_backend_name() == "postgresql" else {}
    )
    return sa.create_engine(url, pool_pre_ping=True, connect_args=timeout)


MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATED: weakref.WeakSet[sa.Engine] = weakref.WeakSet()  # engines already at the head
_MIGRATING = threading.Lock()


def ensure_tables(engine: sa.Engine) -> None:
    """The service's tables at the latest migration, once per engine and process."""
    if engine in _MIGRATED:
        return
    with _MIGRATING:
        if engine not in _MIGRATED:
            upgrade_database(engine)
            _MIGRATED.add(engine)


def upgrade_database(engine: sa.Engine, revision: str = "head") -> None:
    """Alembic's `upgrade` of the service's database (`service/migrations`): a new database is
    made whole, one made before migrations is taken over as it is, one at the head is left.

    Two processes starting on a new database at once may both try; the one that loses (a table
    or version row the other made first) tries once more and finds the work done.
    """
    # before alembic's import, which logs each of its plugins; and its migrations' chatter
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    for attempt in (1, 2):
        try:
            # alembic's `context` is one per process: two threads upgrading at once remove
            # each other's (a command's log writer beside a server's: KeyError 'config')
            with _UPGRADING, engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
            return
        except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError):
            if attempt == 2:
                raise


_UPGRADING = threading.Lock()


def _digest(salt: str, secret: str) -> str:
    return hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()


def create_key(
    engine: sa.Engine,
    role: str,
    *,
    rep_id: str | None = None,
    label: str | None = None,
    now: datetime | None = None,
) -> str:
    """Store a new key and return it in full: the only time the secret exists outside a hash.

    Raises:
        ValueError: an unknown role, or a rep or manager key without the person's rep id.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    if role in NEEDS_REP_ID and not rep_id:
        raise ValueError(f"a {role} key needs --rep-id: the person it acts for")
    ensure_tables(engine)
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)
    salt = secrets.token_hex(16)
    with engine.begin() as conn:
        conn.execute(
            api_keys.insert().values(
                key_id=key_id,
                salt=salt,
                digest=_digest(salt, secret),
                role=role,
                rep_id=rep_id if role in NEEDS_REP_ID else None,
                label=label,
                created_at=now or datetime.now(UTC),
            )
        )
    return f"{PREFIX}_{key_id}_{secret}"


def list_keys(engine: sa.Engine) -> list[dict[str, object]]:
    """Every key's id, role, person, label and dates, oldest first; never a salt or digest."""
    ensure_tables(engine)
    shown = [api_keys.c[name] for name in ("key_id", "role", "rep_id", "label", "created_at")]
    query = sa.select(*shown, api_keys.c.revoked_at).order_by(api_keys.c.created_at)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def verify_key(engine: sa.Engine, key: str | None) -> Principal | None:
    """The key's principal, or None for a missing, malformed, unknown, wrong or revoked key."""
    if not key:
        return None
    parts = key.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    _, key_id, secret = parts
    with engine.connect() as conn:
        row = conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.digest, _digest(row.salt, secret)):
        return None
    return Principal(key_id=row.key_id, role=row.role, rep_id=row.rep_id)


def revoke_key(engine: sa.Engine, key_id: str, *, now: datetime | None = None) -> bool:
    """Revoke a key by its id; False if there is no such key."""
    with engine.begin() as conn:
        done = conn.execute(
            api_keys.update()
            .where(api_keys.c.key_id == key_id)
            .values(revoked_at=now or datetime.now(UTC))
        )
    return done.rowcount > 0


class KeyCache:
    """Keys verified in the last `seconds`, so a request does not query the database each time.

    Entries are keyed by a SHA-256 of the whole key (the secret is not kept in the clear) and
    only successful verifications are kept, so random keys cannot fill it. A key revoked in
    the database stops working within `seconds`; 0 turns the cache off.
    """

    def __init__(
        self,
        engine: sa.Engine,
        seconds: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.engine = engine
        self.seconds = seconds
        self.max_entries = max_entries
        self.clock = clock  # seconds, only ever compared with itself (a test sets its own)
        self._known: dict[bytes, tuple[Principal, float]] = {}
        self._lock = threading.Lock()  # requests run on several threads

    def remembered(self, key: str | None) -> Principal | None:
        """The key's principal if it was verified less than `seconds` ago (no database)."""
        if self.seconds <= 0 or not key:
            return None
        known = self._known.get(hashlib.sha256(key.encode()).digest())
        return known[0] if known is not None and known[1] > self.clock() else None

    def verify(self, key: str | None) -> Principal | None:
        """As `verify_key`, from memory when this key was verified less than `seconds` ago."""
        if self.seconds <= 0 or not key:
            return verify_key(self.engine, key)
        if (principal := self.remembered(key)) is not None:
            return principal
        digest = hashlib.sha256(key.encode()).digest()
        now = self.clock()
        principal = verify_key(self.engine, key)
        with self._lock:
            if principal is None:
                self._known.pop(digest, None)
                return None
            if len(self._known) >= self.max_entries:
                self._known = {d: v for d, v in self._known.items() if v[1] > now}
                while len(self._known) >= self.max_entries:  # all fresh: drop the oldest
                    self._known.pop(next(iter(self._known)))
            self._known[digest] = (principal, now + self.seconds)
        return principal
