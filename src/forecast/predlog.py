"""The service's append-only logs: every score served, and every read (who, what, when).

Both tables live in the service database beside the API keys. Prediction rows carry a hash of
the input rather than the input itself; realised outcomes can later be joined on `subject`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from forecast.keys import metadata

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

    def clean(value: object) -> object:
        return None if isinstance(value, float) and value != value else value

    canonical = json.dumps({k: clean(v) for k, v in inputs.items()}, sort_keys=True, default=str)
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
        "path": path[:500],
        "status": status,
    }


def log_read(engine: sa.Engine, **read: Any) -> None:
    """Append one audit row now (see `read_row`)."""
    with engine.begin() as conn:
        conn.execute(audit_log.insert().values(**read_row(**read)))


class LogWriter:
    """Prediction and audit rows written by one background thread, in batches.

    A request only queues its rows (stamped with the request's time): no database round trip on
    the request path. The thread writes everything queued within `flush_seconds` of the first
    row in one transaction. A failed write keeps the rows and is retried; `close()` (at shutdown)
    writes what is left. Rows queued but not yet written are lost only if the process dies
    without shutting down (at most `flush_seconds` of them) or the database stays down through
    the shutdown (then the count is logged as an error).

    Before the thread is started, and after it is closed, rows are written at once.
    """

    RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
    CHUNK = 32  # queued items made into rows and sent together (see `_write`)

    def __init__(self, engine: sa.Engine, *, flush_seconds: float = 0.2, max_batch: int = 5000):
        self.engine = engine
        self.flush_seconds = flush_seconds
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._wake = threading.Event()  # set by flush() and close(): write now

    def start(self) -> None:
        if self._thread is None:
            self._closing = False
            self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
            self._thread.start()

    def predictions(self, **request: Any) -> None:
        """Queue a request's predictions (the arguments of `prediction_rows`)."""
        request.setdefault("at", datetime.now(UTC))
        self._put(("predictions", request))

    def read(self, **read: Any) -> None:
        """Queue an audit row (the arguments of `read_row`)."""
        self._put(("read", read_row(**read)))

    def flush(self, timeout: float = 30.0) -> None:
        """Return once every row queued before this call is written."""
        if self._thread is None:
            return
        done = threading.Event()
        self._queue.put(("flush", done))
        self._wake.set()
        if not done.wait(timeout):
            raise TimeoutError(f"the log writer did not flush within {timeout:g} s")

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued and stop the thread."""
        thread = self._thread
        if thread is None:
            return
        self._queue.put(("stop", None))
        self._wake.set()
        thread.join(timeout)
        self._thread = None

    def _put(self, item: tuple[str, Any]) -> None:
        if self._thread is None:
            self._write([item])
        else:
            self._queue.put(item)

    def _run(self) -> None:
        while True:
            batch, waiters, stopping = [self._queue.get()], [], False
            if batch[0][0] not in ("flush", "stop") and self._queue.qsize() < self.max_batch:
                # sleep, then take what came: waiting on the queue instead would wake this
                # thread for every row, and each wake takes the GIL from a request
                self._wake.wait(self.flush_seconds)
            self._wake.clear()
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows = []
            for kind, payload in batch:
                if kind == "flush":
                    waiters.append(payload)
                elif kind == "stop":
                    stopping = True
                else:
                    rows.append((kind, payload))
            self._write_with_retries(rows, final=stopping)
            for waiter in waiters:
                waiter.set()
            if stopping:
                return

    def _write_with_retries(self, rows: list[tuple[str, Any]], *, final: bool) -> None:
        attempt = 0
        while rows:
            try:
                self._write(rows)
                return
            except Exception:
                log.exception("writing %d log rows failed (attempt %d)", len(rows), attempt + 1)
                if final and attempt >= len(self.RETRY_SECONDS):
                    log.error("%d prediction/audit log rows could not be written", len(rows))
                    return
                time.sleep(self.RETRY_SECONDS[min(attempt, len(self.RETRY_SECONDS) - 1)])
                attempt += 1

    def _write(self, items: list[tuple[str, Any]]) -> None:
        """One transaction, made and sent a chunk at a time: between chunks this thread lets
        go of the GIL, so a request never waits behind a whole batch (a batch of a few
        hundred rows holds it for about 10 ms, a chunk for about one)."""
        with self.engine.begin() as conn:
            for start in range(0, len(items), self.CHUNK):
                chunk = items[start : start + self.CHUNK]
                predictions = [
                    r for kind, p in chunk if kind == "predictions" for r in prediction_rows(**p)
                ]
                reads = [p for kind, p in chunk if kind == "read"]
                if predictions:
                    conn.execute(prediction_log.insert(), predictions)
                if reads:
                    conn.execute(audit_log.insert(), reads)
                time.sleep(0)  # a waiting request thread takes the GIL here


def predictions_for(engine: sa.Engine, request_id: str) -> list[dict]:
    """The logged rows of one request, in order."""
    query = (
        sa.select(prediction_log)
        .where(prediction_log.c.request_id == request_id)
        .order_by(prediction_log.c.id)
    )
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
