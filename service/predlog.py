"""The service's append-only logs: every score served, and every read (who, what, when).

Both tables live in the service database beside the API keys. Prediction rows carry a hash of
the input rather than the input itself; realised outcomes can later be joined on `subject`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from service.keys import metadata

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

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

    # `v != v` only for NaN (inline: a function call per value was most of the hash's time)
    canonical = json.dumps(
        {k: None if v != v else v for k, v in inputs.items()}, sort_keys=True, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def prediction_rows(
    *,
    request_id: str,
    caller: str,
    model: str,
    model_version: str,
    predictions: Sequence[Prediction],
    at: datetime | None = None,
) -> list[dict[str, Any]]:
    """The log rows of one request's predictions (input hashed here)."""
    at = at or datetime.now(UTC)
    return [
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


def log_predictions(engine: sa.Engine, **request: Any) -> None:
    """Append one row per prediction, all in one transaction (see `prediction_rows`)."""
    rows = prediction_rows(**request)
    if rows:
        with engine.begin() as conn:
            conn.execute(prediction_log.insert(), rows)


def read_row(
    *,
    request_id: str,
    caller: str,
    role: str,
    method: str,
    path: str,
    status: int,
    at: datetime | None = None,
) -> dict[str, Any]:
    """One audit row: who read what, when, and what they were answered."""
    return {
        "at": at or datetime.now(UTC),
        "request_id": request_id,
        "caller": caller,
        "role": role,
        "method": method,
        "path": path[:500].replace("\x00", "\\x00"),  # refused at the edge; never in a row
        "status": status,
    }


def log_read(engine: sa.Engine, **read: Any) -> None:
    """Append one audit row now (see `read_row`)."""
    with engine.begin() as conn:
        conn.execute(audit_log.insert().values(**read_row(**read)))


LOG_TABLES = {"prediction_log": prediction_log, "audit_log": audit_log}


def log_rows(items: Sequence[tuple[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Items handed to the log writer (a request's predictions, an audit row) as table rows."""
    rows: list[tuple[str, dict[str, Any]]] = []
    for kind, payload in items:
        if kind == "predictions":
            rows += [("prediction_log", row) for row in prediction_rows(**payload)]
        else:
            rows.append(("audit_log", payload))
    return rows


def read_predictions(
    engine: sa.Engine,
    start: datetime,
    end: datetime,
    *,
    after_id: int = 0,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Logged predictions made in [start, end), oldest first; page with `after_id` (the last
    row's `id`) and `limit`."""
    query = (
        sa.select(prediction_log)
        .where(prediction_log.c.at >= start, prediction_log.c.at < end)
        .where(prediction_log.c.id > after_id)
        .order_by(prediction_log.c.id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def predictions_for(engine: sa.Engine, request_id: str) -> list[dict]:
    """The logged rows of one request, in order."""
    query = (
        sa.select(prediction_log)
        .where(prediction_log.c.request_id == request_id)
        .order_by(prediction_log.c.id)
    )
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def log_book(book: pd.DataFrame, request_id: str) -> None:
    """`forecast score deals --all`'s book, one prediction per deal, or `forecast score
    accounts --all`'s, one per account, as request `request_id` (the CLI finds this through the
    `forecast.prediction_log` entry point)."""
    from forecast.settings import get_settings
    from service.keys import engine_for, ensure_tables

    engine = engine_for(get_settings().service_database_url)
    ensure_tables(engine)
    model, version = book["model"].iloc[0], book["model_version"].iloc[0]
    of = _deal_prediction if "deal_id" in book else _account_prediction
    predictions = [of(row) for row in book.itertuples()]
    log_predictions(
        engine,
        request_id=request_id,
        caller="cli",
        model=model,
        model_version=version,
        predictions=predictions,
    )


def _deal_prediction(row: Any) -> Prediction:
    return Prediction(
        row.deal_id,
        {"deal_id": row.deal_id, "as_of": str(row.as_of), "store": row.data_fingerprint},
        {
            "probability": row.probability,
            "grade": row.grade,
            "reasons": row.reasons.splitlines(),
            "as_of": str(row.as_of),
        },
    )


def _account_prediction(row: Any) -> Prediction:
    return Prediction(
        row.account_id,
        {"account_id": row.account_id, "as_of": str(row.as_of), "store": row.data_fingerprint},
        {
            "churn_probability": row.churn_probability,
            "revenue_at_risk": row.revenue_at_risk,
            "reasons": row.reasons.splitlines(),
            "top_action": row.top_action,
            "as_of": str(row.as_of),
        },
    )
