"""What the service keeps off its request path: verified keys in memory for a bounded time, and
log rows written in batches by a process of their own (at the lowest priority) that loses none."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from service.keys import KeyCache, create_key, engine_for, ensure_tables, revoke_key
from service.logwriter import LogWriter
from service.predlog import Prediction, audit_log, prediction_log


def _engine(home: Path) -> sa.Engine:
    return engine_for(f"sqlite:///{home / 'service.db'}")


def test_a_revoked_key_stops_working_within_the_cache_time(forecast_home: Path):
    engine = _engine(forecast_home)
    key = create_key(engine, "crm")
    now = [100.0]
    cache = KeyCache(engine, seconds=5, clock=lambda: now[0])
    assert cache.verify(key).role == "crm"
    revoke_key(engine, key.split("_")[1])
    now[0] += 4.9
    assert cache.verify(key) is not None, "trusted from memory within the cache time"
    now[0] += 0.2
    assert cache.verify(key) is None, "checked again after it: revoked"
    assert cache.verify(key[:-1] + "x") is None and cache.verify(None) is None


def test_with_no_cache_time_every_call_checks_the_database(forecast_home: Path):
    engine = _engine(forecast_home)
    key = create_key(engine, "admin")
    cache = KeyCache(engine, seconds=0)
    assert cache.verify(key).role == "admin"
    revoke_key(engine, key.split("_")[1])
    assert cache.verify(key) is None


def _count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def test_the_log_writer_writes_every_row_from_many_threads_by_close(forecast_home: Path):
    engine = _engine(forecast_home)
    ensure_tables(engine)
    writer = LogWriter(engine, forecast_home / "spool", flush_seconds=0.05)
    writer.start()

    def caller(n: int) -> None:
        for i in range(250):
            writer.predictions(
                request_id=f"r{n}-{i}",
                caller="k",
                model="deal-win",
                model_version="1",
                predictions=[Prediction(f"D{i}", {"amount": float(i)}, {"probability": 0.5})] * 2,
            )
            writer.read(
                request_id=f"r{n}-{i}", caller="k", role="crm", method="POST", path="/p", status=200
            )

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.flush()
    assert _count(engine, prediction_log) == 4 * 250 * 2 and _count(engine, audit_log) == 1000
    writer.predictions(
        request_id="last",
        caller="k",
        model="deal-win",
        model_version="1",
        predictions=[Prediction(None, {}, {"probability": 0.1})],
    )
    writer.close()
    assert _count(engine, prediction_log) == 2001, "close writes what is still queued"


def test_a_failed_write_is_retried_until_the_database_takes_it(forecast_home: Path):
    engine = _engine(forecast_home)  # no tables yet: the first writes fail
    writer = LogWriter(engine, forecast_home / "spool", flush_seconds=0.01)
    writer.start()
    writer.read(request_id="r", caller="k", role="crm", method="GET", path="/p", status=200)
    time.sleep(0.1)
    ensure_tables(engine)
    writer.flush(timeout=10)
    assert _count(engine, audit_log) == 1
    writer.close()


def test_flush_and_close_do_not_wait_out_the_batching_window(forecast_home: Path, caplog):
    engine = _engine(forecast_home)
    ensure_tables(engine)
    # rows would sit an hour without a wake: a flush or close that waited for the window would
    # time out (flush raises) or stop the writer before it wrote (close), and the counts differ
    writer = LogWriter(engine, forecast_home / "spool", flush_seconds=3600)
    writer.start()
    for i in range(100):
        writer.read(request_id=f"r{i}", caller="k", role="crm", method="GET", path="/p", status=200)
    writer.flush(timeout=30)
    assert _count(engine, audit_log) == 100
    writer.read(request_id="last", caller="k", role="crm", method="GET", path="/p", status=200)
    writer.close(timeout=30)
    assert _count(engine, audit_log) == 101
    assert "did not stop" not in caplog.text, "the writer stopped when told, not at its window"


def _read(writer: LogWriter, request_id: str) -> None:
    writer.read(request_id=request_id, caller="k", role="crm", method="GET", path="/p", status=200)


def test_the_writer_process_yields_the_cpu_to_requests(forecast_home: Path):
    engine = _engine(forecast_home)
    ensure_tables(engine)
    writer = LogWriter(engine, forecast_home / "spool")
    writer.start()
    try:
        _read(writer, "r")
        writer.flush(timeout=30)  # answered by the writer process: it is running
        assert writer.writer_pid not in (None, os.getpid())
        assert os.getpriority(os.PRIO_PROCESS, writer.writer_pid) == 19
    finally:
        writer.close()


def test_a_writer_far_behind_gets_the_new_rows_on_disk_and_writes_each_once(forecast_home: Path):
    from service.logsink import spooled_rows

    engine = _engine(forecast_home)
    ensure_tables(engine)
    spool = forecast_home / "spool"
    writer = LogWriter(engine, spool, flush_seconds=0.02, max_backlog=10)
    writer.start()
    pid = writer.writer_pid
    os.kill(pid, signal.SIGSTOP)  # a writer that gets no CPU at all
    try:
        for i in range(20):  # 20 rows reach the stopped writer: it is 20 behind
            _read(writer, f"early-{i}")
        time.sleep(0.3)
        for i in range(30):  # these are spilled to the spool by the serving process itself
            _read(writer, f"late-{i}")
        deadline = time.monotonic() + 10
        while spooled_rows(spool) < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert spooled_rows(spool) == 30, (
            "the rows after the backlog, on disk (a kill -9 keeps them)"
        )
        assert _count(engine, audit_log) == 0
    finally:
        os.kill(pid, signal.SIGCONT)
    writer.flush(timeout=10)
    assert _count(engine, audit_log) == 50
    with engine.connect() as conn:
        ids = conn.execute(sa.select(audit_log.c.request_id)).scalars().all()
    assert len(set(ids)) == 50 and spooled_rows(spool) == 0
    writer.close()


def test_if_the_writer_process_dies_the_service_writes_the_rows_itself(forecast_home: Path):
    engine = _engine(forecast_home)
    ensure_tables(engine)
    writer = LogWriter(engine, forecast_home / "spool", flush_seconds=0.02)
    writer.start()
    _read(writer, "before")
    writer.flush(timeout=30)
    os.kill(writer.writer_pid, signal.SIGKILL)
    for i in range(5):
        _read(writer, f"after-{i}")
    writer.flush(timeout=30)
    assert _count(engine, audit_log) == 6
    writer.close()
    _read(writer, "closed")  # written at once
    assert _count(engine, audit_log) == 7


def test_a_writer_nobody_closed_writes_its_rows_when_the_interpreter_exits(forecast_home: Path):
    url = f"sqlite:///{forecast_home / 'service.db'}"
    ensure_tables(engine_for(url))
    script = (
        "from pathlib import Path\n"
        "from service.keys import engine_for\n"
        "from service.logwriter import LogWriter\n"
        f"writer = LogWriter(engine_for({url!r}), Path({str(forecast_home)!r}), flush_seconds=30)\n"
        "writer.start()\n"
        "for i in range(7):\n"
        "    writer.read(request_id=str(i), caller='k', role='crm', method='GET', path='/p',"
        " status=200)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=60, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert _count(engine_for(url), audit_log) == 7
