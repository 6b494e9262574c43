"""The service's log writer: prediction and audit rows written by a process of their own.

What the service guarantees about its log rows (README, "What the log keeps"):

- a row the database refuses is set aside with the reason (`refused.jsonl` in the spool folder)
  and never holds up the rows after it;
- while the database is away, rows wait in a bounded spool on disk and are written when it
  returns, or at the next start; a shutdown never waits for the database;
- only a kill -9 loses rows: those handed over and not yet passed to the writer process (the
  last `flush_seconds`, 0.2 s, when it keeps up; about a second measured on a saturated
  machine); what reached the writer is still written, and when the writer lags new rows are
  spilled to disk rather than queued (see `LogWriter`).
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from service.at_exit import forget, stop_at_exit
from service.logsink import Counts, RowSink
from service.predlog import LOG_TABLES, log_rows, read_row

log = logging.getLogger(__name__)

Item = tuple[str, Any]  # ("predictions", a request's arguments) or ("read", an audit row)
IDLE_SECONDS = 1.0  # how often the writer looks for spooled rows to write


def sink_for(engine: sa.Engine, spool: Path, max_bytes: int) -> RowSink:
    return RowSink(engine, LOG_TABLES, spool, max_bytes=max_bytes)


class LogWriter:
    """Prediction and audit rows written by a process of their own, in batches.

    A request only hands its rows over (a list append: no database, no hashing on the request
    path). Every `flush_seconds` a sender thread passes what came to the writer process; that
    process hashes the inputs and writes the rows in one transaction through a `RowSink` (set
    aside what the database refuses, spool while it is away), at the lowest CPU priority, so
    the writing waits while requests want the CPU. Done by a thread of the serving process, the
    same writing took the GIL from requests (docs/benchmarks.md).

    If the writer falls behind by more than `max_backlog` items (it runs at the lowest
    priority: on a saturated machine it waits), the sender spills each new window's rows to a
    spool file of their own instead of queueing them (the writer's next replay writes them),
    so neither memory nor a kill -9's loss grows with the lag. `on_counts` hears what the
    writing did (rows written, refused, spooled...).

    `flush()` returns once every row handed over before it is written or spooled; `close()` (at
    shutdown) writes or spools what is left and stops the process. Before `start()` and after
    `close()`, rows go to the sink at once.
    """

    def __init__(
        self,
        engine: sa.Engine,
        spool: Path,
        *,
        flush_seconds: float = 0.2,
        max_batch: int = 5000,
        max_backlog: int = 250,
        max_spool_bytes: int = 256 * 1024 * 1024,
        on_counts: Callable[[Counts], None] = lambda counts: None,
    ):
        self.engine = engine
        self.spool = spool
        self.flush_seconds = flush_seconds
        self.max_batch = max_batch
        self.max_backlog = max_backlog
        self.max_spool_bytes = max_spool_bytes
        self.on_counts = on_counts
        self._sink = sink_for(engine, spool, max_spool_bytes)  # this process's own
        self._lock = threading.Lock()
        self._pending: list[Item] = []
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
            args=(theirs, url, str(self.spool), self.max_spool_bytes, self.max_batch),
            name="forecast-log-writer",
            daemon=True,  # never outlives the service; close() is what writes the tail
        )
        self._process.start()
        theirs.close()
        self._pipe, self._closing = ours, False
        stop_at_exit(self._close_at_exit)
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
        """Return once every row handed over before this call is written (or spooled)."""
        if self._thread is None:
            return
        done = threading.Event()
        with self._lock:
            self._waiters.append(done)
        self._wake.set()
        if not done.wait(timeout):
            raise TimeoutError(f"the log writer did not flush within {timeout:g} s")

    def close(self, timeout: float = 15.0) -> None:
        """Write (or spool) what is handed over and stop the writer process."""
        thread, process = self._thread, self._process
        if thread is None or process is None:
            return
        with self._lock:
            self._closing = True
        self._wake.set()
        thread.join(timeout)
        process.join(timeout)
        if process.is_alive():
            log.error("the log writer did not stop within %g s: stopped", timeout)
            process.kill()  # it ignores SIGTERM (see write_forever); a hung exit is worse
        with self._lock:
            left, self._pending = self._pending, []
            self._thread = self._process = None
        forget(self)
        self._write_here(left)  # handed over while the writer was stopping
        self._sink.close()

    def _close_at_exit(self) -> None:
        self.close(timeout=10)

    def _put(self, item: Item) -> None:
        with self._lock:
            if self._thread is not None:
                self._pending.append(item)
                return
        self._write_here([item])

    def _write_here(self, items: list[Item]) -> None:
        """Items written by this process's own sink (the writer far behind or gone)."""
        before = Counts(*self._sink.counts.astuple())
        self._sink.write(log_rows(items))
        self.on_counts(self._sink.counts.minus(before))

    def _spill(self, items: list[Item]) -> None:
        before = Counts(*self._sink.counts.astuple())
        self._sink.spill(log_rows(items))
        self.on_counts(self._sink.counts.minus(before))

    def _send(self) -> None:
        """The sender thread: what came in each window, then any flush or stop, in order.

        The writer answers every transaction with the number of items it took and what its
        sink did; the sender keeps what is not yet answered. Should the writer process die,
        this thread writes those (a transaction committed just before the death could be
        written twice) and every row after them itself.
        """
        pipe = self._pipe
        unanswered: deque[Item] = deque()  # passed to the writer, not yet written
        behind = False

        def answered(count: int, counts: tuple[int, ...]) -> None:
            for _ in range(count):
                unanswered.popleft()
            self.on_counts(Counts(*counts))

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
                        answered(*pipe.recv())
                    if batch and len(unanswered) <= self.max_backlog:
                        pipe.send(("rows", batch))
                        unanswered.extend(batch)
                        batch, behind = [], False
                    elif batch:  # far behind: on disk now, written by its next replay
                        if not behind:
                            log.warning("the log writer is %d items behind: spilling to the "
                                        "spool", len(unanswered))  # fmt: skip
                        behind = True
                        self._spill(batch)
                        batch = []
                if batch:  # no writer any more
                    self._write_here(batch)
                if pipe is not None and (waiters or closing):
                    pipe.send(("stop" if closing else "flush", None))
                    while isinstance(answer := pipe.recv(), tuple):  # counts, then the answer
                        answered(*answer)
            except Exception as err:  # the pipe broke (the writer is gone), or worse
                if not isinstance(err, OSError | EOFError):
                    log.exception("the log sender failed: writing the rows here from now on")
                log.error(
                    "the log writer process is gone: this process writes the rows from now on, "
                    "%d it had not written first",
                    len(unanswered),
                )
                if pipe is not None:
                    pipe.close()
                pipe = None
                self._write_here([*unanswered, *batch])
                unanswered.clear()
            for waiter in waiters:
                waiter.set()
            if closing:
                if pipe is not None:
                    pipe.close()
                return


def write_forever(
    pipe: Connection, url: str, spool: str, max_spool_bytes: int, max_batch: int = 5000
) -> None:
    """The log writer process: writes what the serving process sends until it says stop (or
    is gone), every message that has arrived in one transaction, and answers each with the
    number of items taken and what the sink did; idle, it writes spooled rows."""
    # the lowest priority: rows can wait a moment, a request should not wait for them
    os.nice(19)
    # the service's shutdown writes the tail through us: a signal to the whole group (Ctrl+C,
    # a supervisor's SIGTERM) must not end this process before it has
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from service.keys import engine_for

    sink = sink_for(engine_for(url), Path(spool), max_spool_bytes)
    replayed_at = 0.0
    while True:
        if time.monotonic() - replayed_at >= IDLE_SECONDS:  # busy or idle, spooled rows go in
            sink.replay()  # (at the start: what a stopped or killed process left)
            replayed_at = time.monotonic()
        items: list[Item] = []
        answer = None
        try:
            if not pipe.poll(IDLE_SECONDS):
                continue
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
        before = Counts(*sink.counts.astuple())
        last = answer in ("gone", "stop", "flush")
        sink.write(log_rows(items), now=last)
        if last:  # what waits in the spool goes in too, if the database is there now
            sink.replay(now=True)
        if answer in ("gone", "stop"):
            sink.close()  # the spool's lock released: the next start writes what is left
        if answer == "gone":
            return
        pipe.send((len(items), sink.counts.minus(before).astuple()))
        if answer is not None:
            pipe.send(answer)
        if answer == "stop":
            return
