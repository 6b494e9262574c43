"""Nothing lost, nothing stuck: a row the database refuses is set aside and the rows after it are
written; while the database is away rows wait in a bounded spool, written when it returns or at
the next start; a shutdown never waits for the database."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from service.keys import engine_for, ensure_tables
from service.logsink import RowSink, spooled_rows
from service.logwriter import LogWriter
from service.predlog import LOG_TABLES, audit_log, read_row

# nothing listens on port 1: a connection is refused at once, as when PostgreSQL is stopped
AWAY = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"


def _engine(home: Path) -> sa.Engine:
    engine = engine_for(f"sqlite:///{home / 'service.db'}")
    ensure_tables(engine)
    return engine


def _audit(request_id: str, caller: str | None = "k") -> tuple[str, dict]:
    row = read_row(
        request_id=request_id, caller="k", role="crm", method="GET", path="/p", status=200
    )
    row["caller"] = caller  # None: the table refuses it (NOT NULL), as PostgreSQL a NUL byte
    return ("audit_log", row)


def _ids(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(audit_log.c.request_id)).scalars())


def test_a_refused_row_is_set_aside_with_its_reason_and_the_rest_are_written(tmp_path: Path):
    engine = _engine(tmp_path)
    sink = RowSink(engine, LOG_TABLES, tmp_path / "spool")
    rows = [_audit(f"r{i}") for i in range(10)]
    rows[6] = _audit("bad", caller=None)
    sink.write(rows)
    sink.write([_audit("after")])
    assert _ids(engine) == sorted([f"r{i}" for i in range(10) if i != 6] + ["after"])
    refused = [json.loads(line) for line in (tmp_path / "spool" / "refused.jsonl").open()]
    assert [r["row"]["request_id"] for r in refused] == ["bad"]
    assert "NOT NULL" in refused[0]["reason"] and refused[0]["table"] == "audit_log"
    assert (sink.counts.written, sink.counts.refused, sink.counts.lost) == (10, 1, 0)


def test_rows_wait_in_the_spool_while_the_database_is_away_and_are_written_after(
    tmp_path: Path,
):
    spool = tmp_path / "spool"
    away = RowSink(engine_for(AWAY), LOG_TABLES, spool)
    started = time.monotonic()
    for i in range(5):
        away.write([_audit(f"r{i}")])
    assert time.monotonic() - started < 10, "never waits long for a database that is away"
    assert away.counts.spooled == 5 and spooled_rows(spool) == 5
    engine = _engine(tmp_path)
    back = RowSink(engine, LOG_TABLES, spool)
    back.replay()
    assert _ids(engine) == [], "a spool its writer still holds is not taken from it"
    away.close()  # the process stopped: its spool is anyone's to write
    back.replay()
    assert _ids(engine) == [f"r{i}" for i in range(5)]
    assert spooled_rows(spool) == 0 and back.counts.replayed == 5
    assert isinstance(datetime.fromisoformat(str(_first_at(engine))), datetime)


def _first_at(engine: sa.Engine) -> object:
    with engine.connect() as conn:
        return conn.execute(sa.select(audit_log.c.at)).scalars().first()


def test_the_spool_is_bounded_and_what_it_cannot_hold_is_counted_lost(tmp_path: Path):
    sink = RowSink(engine_for(AWAY), LOG_TABLES, tmp_path / "spool", max_bytes=2000)
    for i in range(40):
        sink.write([_audit(f"r{i}")])
    assert sink.counts.spooled + sink.counts.lost == 40
    assert 0 < sink.counts.spooled < 40 and sink.counts.lost > 0
    assert sum(p.stat().st_size for p in (tmp_path / "spool").iterdir()) <= 2000


def test_a_shutdown_while_the_database_is_away_ends_and_the_next_start_writes_its_rows(
    tmp_path: Path,
):
    spool = tmp_path / "spool"
    writer = LogWriter(engine_for(AWAY), spool, flush_seconds=0.05)
    writer.start()
    for i in range(20):
        writer.read(request_id=f"r{i}", caller="k", role="crm", method="GET", path="/p", status=200)
    started = time.monotonic()
    writer.close(timeout=30)
    assert time.monotonic() - started < 10, "the shutdown does not wait for the database"
    assert spooled_rows(spool) == 20
    engine = _engine(tmp_path)
    restarted = LogWriter(engine, spool, flush_seconds=0.05)
    restarted.start()
    restarted.flush(timeout=30)
    restarted.close()
    assert _ids(engine) == sorted(f"r{i}" for i in range(20))
    assert spooled_rows(spool) == 0


def test_the_writer_reports_what_became_of_the_rows(tmp_path: Path):
    engine = _engine(tmp_path)
    seen = []
    writer = LogWriter(engine, tmp_path / "spool", flush_seconds=0.05, on_counts=seen.append)
    writer.start()
    writer.read(request_id="ok", caller="k", role="crm", method="GET", path="/p", status=200)
    writer.read(request_id="bad", caller=None, role="crm", method="GET", path="/p", status=200)
    writer.flush(timeout=30)
    writer.close()
    assert sum(c.written for c in seen) == 1 and sum(c.refused for c in seen) == 1
    assert _ids(engine) == ["ok"]


HELD: list[LogWriter] = []  # as a service's state holds its writer to the end


def _hand_over_and_return(home: str) -> None:
    """A process that starts a log writer, hands it a row, and ends without closing it."""
    writer = LogWriter(_engine(Path(home)), Path(home) / "spool")
    HELD.append(writer)
    writer.start()
    writer.flush()  # the writer is up (and ignores SIGTERM from now on)
    writer.read(**_audit("left-open")[1])


def test_a_process_that_never_closed_its_writer_still_exits_and_its_rows_are_written(tmp_path):
    import multiprocessing

    # the writer ignores SIGTERM: multiprocessing's exit would wait for it forever, unless the
    # owner stops it first (service.at_exit)
    process = multiprocessing.get_context("spawn").Process(
        target=_hand_over_and_return, args=(str(tmp_path),)
    )
    process.start()
    process.join(timeout=30)  # about a second when it works
    stuck = process.is_alive()
    if stuck:
        process.kill()
    assert not stuck and process.exitcode == 0
    with _engine(tmp_path).connect() as conn:
        ids = conn.execute(sa.select(audit_log.c.request_id)).scalars().all()
    assert ids == ["left-open"]


def test_a_spool_file_replayed_by_another_process_meanwhile_loses_no_row(tmp_path, monkeypatch):
    """Another process's replay may remove a spool file between the listing of the spool and
    the reading of its size: the rows being spilled are still kept (in CI under load, 140 rows
    were counted lost so)."""
    spool = tmp_path / "spool"
    sink = RowSink(engine_for(AWAY), LOG_TABLES, spool)
    sink.spill([_audit("first")])
    [other] = spool.glob("spool-*.jsonl")
    real_stat, replayed = Path.stat, []

    def replayed_meanwhile(self, *args, **kwargs):
        if self == other and not replayed:
            replayed.append(self)
            self.unlink()  # gone between the listing and this look at it
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", replayed_meanwhile)
    sink.spill([_audit("second")])
    monkeypatch.undo()
    assert (sink.counts.spooled, sink.counts.lost) == (2, 0)
    assert not other.exists() and spooled_rows(spool) == 1
