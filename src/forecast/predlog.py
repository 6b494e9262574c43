"""The service's append-only logs: every score served, and every read (who, what, when).

Both tables live in the service database beside the API keys. Prediction rows carry a hash of
the input rather than the input itself; realised outcomes can later be joined on `subject`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from forecast.keys import metadata

prediction_log = sa.Table(
    "prediction_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("caller", sa.String(64), nullable=False),
    sa.Column("model", sa.String(100), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(200), nullable=True),  # deal id when the caller gave one
    sa.Column("input_hash", sa.String(64), nullable=False),
    sa.Column("output", sa.JSON, nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("caller", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("method", sa.String(8), nullable=False),
    sa.Column("path", sa.String(500), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
)


@dataclass(frozen=True)
class Prediction:
    """One score to log."""

    subject: str | None
    inputs: Mapping[str, object]
    output: Mapping[str, object]


def input_hash(inputs: Mapping[str, object]) -> str:
    """SHA-256 of the input in canonical JSON (sorted keys; NaN and None alike as null)."""

    def clean(value: object) -> object:
        return None if isinstance(value, float) and value != value else value

    canonical = json.dumps({k: clean(v) for k, v in inputs.items()}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def log_predictions(
    engine: sa.Engine,
    *,
    request_id: str,
    caller: str,
    model: str,
    model_version: str,
    predictions: Sequence[Prediction],
    at: datetime | None = None,
) -> None:
    """Append one row per prediction, all in one transaction."""
    if not predictions:
        return
    at = at or datetime.now(UTC)
    rows = [
        {
            "request_id": request_id,
            "at": at,
            "caller": caller,
            "model": model,
            "model_version": model_version,
            "subject": p.subject,
            "input_hash": input_hash(p.inputs),
            "output": dict(p.output),
        }
        for p in predictions
    ]
    with engine.begin() as conn:
        conn.execute(prediction_log.insert(), rows)


def log_read(
    engine: sa.Engine,
    *,
    request_id: str,
    caller: str,
    role: str,
    method: str,
    path: str,
    status: int,
    at: datetime | None = None,
) -> None:
    """Append one audit row: who read what, when, and what they were answered."""
    with engine.begin() as conn:
        conn.execute(
            audit_log.insert().values(
                at=at or datetime.now(UTC),
                request_id=request_id,
                caller=caller,
                role=role,
                method=method,
                path=path[:500],
                status=status,
            )
        )


def predictions_for(engine: sa.Engine, request_id: str) -> list[dict]:
    """The logged rows of one request, in order."""
    query = (
        sa.select(prediction_log)
        .where(prediction_log.c.request_id == request_id)
        .order_by(prediction_log.c.id)
    )
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
