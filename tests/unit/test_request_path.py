"""What the service keeps off its request path: verified keys in memory for a bounded time, and
log rows written in batches by a background thread that loses none."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import sqlalchemy as sa

from forecast.keys import KeyCache, create_key, engine_for, ensure_tables, revoke_key
from forecast.predlog import LogWriter, Prediction, audit_log, prediction_log


def _engine(home: Path) -> sa.Engine:
    return engine_for(f"sqlite:///{home / 'service.db'}")


def test_a_revoked_key_stops_working_within_the_cache_time(forecast_home: Path):
    engine = _engine(forecast_home)
    key = create_key(engine, "crm")
    cache = KeyCache(engine, seconds=0.5)
    assert cache.verify(key).role == "crm"
    revoke_key(engine, key.split("_")[1])
    assert cache.verify(key) is not None, "trusted from memory within the cache time"
    time.sleep(0.6)
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
    writer = LogWriter(engine, flush_seconds=0.05)
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
    writer = LogWriter(engine, flush_seconds=0.01)
    writer.start()
    writer.read(request_id="r", caller="k", role="crm", method="GET", path="/p", status=200)
    time.sleep(0.1)
    ensure_tables(engine)
    writer.flush(timeout=10)
    assert _count(engine, audit_log) == 1
    writer.close()


def test_flush_and_close_do_not_wait_out_the_batching_window(forecast_home: Path):
    engine = _engine(forecast_home)
    ensure_tables(engine)
    writer = LogWriter(engine, flush_seconds=30)  # rows would sit half a minute without a wake
    writer.start()
    for i in range(3 * LogWriter.CHUNK + 1):  # several chunks in the one transaction
        writer.read(request_id=f"r{i}", caller="k", role="crm", method="GET", path="/p", status=200)
    started = time.monotonic()
    writer.flush(timeout=10)
    assert time.monotonic() - started < 5
    assert _count(engine, audit_log) == 3 * LogWriter.CHUNK + 1
    writer.read(request_id="last", caller="k", role="crm", method="GET", path="/p", status=200)
    started = time.monotonic()
    writer.close(timeout=10)
    assert time.monotonic() - started < 5
    assert _count(engine, audit_log) == 3 * LogWriter.CHUNK + 2
