"""The service's append-only logs: every score served, and every read (who, what, when).

Both tables live in the service database beside the API keys. Prediction rows carry a hash of
the input rather than the input itself; realised outcomes can later be joined on `subject`.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
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
        "path": path[:500],
        "status": status,
    }


def log_read(engine: sa.Engine, **read: Any) -> None:
    """Append one audit row now (see `read_row`)."""
    with engine.begin() as conn:
        conn.execute(audit_log.insert().values(**read_row(**read)))


class LogWriter:
    """Prediction and audit rows written by a process of their own, in batches.

    A request only hands its rows over (a list append: no database, no hashing on the request
    path). Every `flush_seconds` a sender thread passes what came to the writer process; that
    process hashes the inputs and writes the rows in one transaction, retrying a failed write,
    at the lowest CPU priority, so the writing waits while requests want the CPU. Done by a
    thread of the serving process, the same writing took the GIL from requests (SQLite lets go
    of it for every row and takes it back); at the normal priority it took the CPU from them
    (docs/benchmarks.md: the p99 with either, and with no log at all).

    If the writer falls behind by more than `max_backlog` items (a request's predictions, or
    an audit row; a machine busy for long), the sender writes the new ones itself, so nothing
    waits in memory without bound.

    `flush()` returns once every row handed over before it is written; `close()` (at shutdown)
    writes what is left and stops the process. Rows handed over but not written are lost only
    if the serving process dies without shutting down (at most `flush_seconds` of them; the
    writer still writes what reached it), or the database stays down through the shutdown (the
    count is logged as an error). Before `start()` and after `close()`, rows are written at once.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        flush_seconds: float = 0.2,
        max_batch: int = 5000,
        max_backlog: int = 50_000,
    ):
        self.engine = engine
        self.flush_seconds = flush_seconds
        self.max_batch = max_batch
        self.max_backlog = max_backlog
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Any]] = []
        self._waiters: list[threading.Event] = []
        self._wake = threading.Event()  # set by flush() and close(): send now
        self._closing = False
        self._thread: threading.Thread | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._pipe: Connection | None = None

    @property
    def writer_pid(self) -> int | None:
        """The writer process's id while it runs."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        if self._thread is not None:
            return
        # spawn, not fork: the serving process has threads (and a loaded model) not to copy
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        url = self.engine.url.render_as_string(hide_password=False)
        self._process = context.Process(
            target=write_forever,
            args=(theirs, url, self.max_batch),
            name="forecast-log-writer",
            daemon=True,  # never outlives the service; close() is what writes the tail
        )
        self._process.start()
        theirs.close()
        self._pipe, self._closing = ours, False
        _close_at_exit(self)
        self._thread = threading.Thread(target=self._send, name="log-sender", daemon=True)
        self._thread.start()

    def predictions(self, **request: Any) -> None:
        """Hand over a request's predictions (the arguments of `prediction_rows`)."""
        request.setdefault("at", datetime.now(UTC))
        self._put(("predictions", request))

    def read(self, **read: Any) -> None:
        """Hand over an audit row (the arguments of `read_row`)."""
        self._put(("read", read_row(**read)))

    def flush(self, timeout: float = 30.0) -> None:
        """Return once every row handed over before this call is written."""
        if self._thread is None:
            return
        done = threading.Event()
        with self._lock:
            self._waiters.append(done)
        self._wake.set()
        if not done.wait(timeout):
            raise TimeoutError(f"the log writer did not flush within {timeout:g} s")

    def close(self, timeout: float = 30.0) -> None:
        """Write what is handed over and stop the writer process."""
        thread, process = self._thread, self._process
        if thread is None or process is None:
            return
        with self._lock:
            self._closing = True
        self._wake.set()
        thread.join(timeout)
        process.join(timeout)
        if process.is_alive():
            log.error("the log writer did not stop within %g s", timeout)
            process.terminate()
        with self._lock:
            left, self._pending = self._pending, []
            self._thread = self._process = None
        _RUNNING.discard(self)
        if left:  # handed over while the writer was stopping
            write_items(self.engine, left)

    def _put(self, item: tuple[str, Any]) -> None:
        with self._lock:
            if self._thread is not None:
                self._pending.append(item)
                return
        write_items(self.engine, [item])

    def _send(self) -> None:
        """The sender thread: what came in each window, then any flush or stop, in order.

        The writer answers every transaction with the number of items it wrote; the sender
        keeps what is not yet answered. Should the writer process die, this thread writes
        those (a transaction committed just before the death could be written twice) and
        every row after them itself.
        """
        pipe = self._pipe
        unanswered: deque[tuple[str, Any]] = deque()  # passed to the writer, not yet written
        behind = False

        def answered(count: int) -> None:
            for _ in range(count):
                unanswered.popleft()

        while True:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            with self._lock:
                batch, self._pending = self._pending, []
                waiters, self._waiters = self._waiters, []
                closing = self._closing
            try:
                if pipe is not None:
                    while pipe.poll():
                        answered(pipe.recv())
                    if batch and len(unanswered) <= self.max_backlog:
                        pipe.send(("rows", batch))
                        unanswered.extend(batch)
                        batch, behind = [], False
                    elif batch and not behind:
                        log.warning("the log writer is %d items behind: helping", len(unanswered))
                        behind = True
                if batch:  # far behind, or no writer any more
                    _write_with_retries(self.engine, batch, final=closing)
                if pipe is not None and (waiters or closing):
                    pipe.send(("stop" if closing else "flush", None))
                    while isinstance(answer := pipe.recv(), int):  # counts, then the answer
                        answered(answer)
            except (OSError, EOFError):
                log.error(
                    "the log writer process is gone: this process writes the rows from now on, "
                    "%d it had not written first",
                    len(unanswered),
                )
                if pipe is not None:
                    pipe.close()
                pipe = None
                _write_with_retries(self.engine, [*unanswered, *batch], final=closing)
                unanswered.clear()
            for waiter in waiters:
                waiter.set()
            if closing:
                if pipe is not None:
                    pipe.close()
                return


_RUNNING: weakref.WeakSet[LogWriter] = weakref.WeakSet()


def _close_at_exit(writer: LogWriter) -> None:
    """A writer nobody closed still writes its tail and stops when the interpreter exits:
    multiprocessing's own exit handler would otherwise wait for it forever (it ignores
    SIGTERM, see `write_forever`). Registered after multiprocessing's, so it runs first."""
    if not _RUNNING:
        atexit.unregister(_close_running)
        atexit.register(_close_running)
    _RUNNING.add(writer)


def _close_running() -> None:
    for writer in list(_RUNNING):
        writer.close(timeout=10)


def write_forever(pipe: Connection, url: str, max_batch: int = 5000) -> None:
    """The log writer process: writes what the serving process sends until it says stop (or
    is gone), every message that has arrived in one transaction, and answers each with the
    number of items written."""
    # the lowest priority: rows can wait a moment, a request should not wait for them
    os.nice(19)
    # the service's shutdown writes the tail through us: a signal to the whole group (Ctrl+C,
    # a supervisor's SIGTERM) must not end this process before it has
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from service.keys import engine_for

    engine = engine_for(url)
    while True:
        items: list[tuple[str, Any]] = []
        answer = None
        try:
            while answer is None and len(items) < max_batch:
                kind, payload = pipe.recv()
                if kind == "rows":
                    items += payload
                    if not pipe.poll():
                        break
                else:
                    answer = kind
        except EOFError:  # the serving process is gone: write what reached us
            answer = "gone"
        _write_with_retries(engine, items, final=answer in ("stop", "gone"))
        if answer == "gone":
            return
        pipe.send(len(items))
        if answer is not None:
            pipe.send(answer)
        if answer == "stop":
            return


RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)


def _write_with_retries(engine: sa.Engine, items: list[tuple[str, Any]], *, final: bool) -> None:
    """Write `items`, retrying while the database refuses (at shutdown: a bounded number of
    times, then the loss is logged)."""
    attempt = 0
    while items:
        try:
            write_items(engine, items)
            return
        except Exception:
            log.exception("writing %d log rows failed (attempt %d)", len(items), attempt + 1)
            if final and attempt >= len(RETRY_SECONDS):
                log.error("%d prediction/audit log rows could not be written", len(items))
                return
            time.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
            attempt += 1


def write_items(engine: sa.Engine, items: list[tuple[str, Any]]) -> None:
    """Handed-over items (predictions of a request, audit rows) as rows, in one transaction."""
    predictions = [r for kind, p in items if kind == "predictions" for r in prediction_rows(**p)]
    reads = [p for kind, p in items if kind == "read"]
    with engine.begin() as conn:
        if predictions:
            conn.execute(prediction_log.insert(), predictions)
        if reads:
            conn.execute(audit_log.insert(), reads)


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
    """`forecast score deals --all`'s book, one prediction per deal, as request `request_id`
    (the CLI finds this through the `forecast.prediction_log` entry point)."""
    from forecast.settings import get_settings
    from service.keys import engine_for, ensure_tables

    engine = engine_for(get_settings().service_database_url)
    ensure_tables(engine)
    model, version = book["model"].iloc[0], book["model_version"].iloc[0]
    predictions = [
        Prediction(
            row.deal_id,
            {"deal_id": row.deal_id, "as_of": str(row.as_of), "store": row.data_fingerprint},
            {
                "probability": row.probability,
                "grade": row.grade,
                "reasons": row.reasons.splitlines(),
                "as_of": str(row.as_of),
            },
        )
        for row in book.itertuples()
    ]
    log_predictions(
        engine,
        request_id=request_id,
        caller="cli",
        model=model,
        model_version=version,
        predictions=predictions,
    )
