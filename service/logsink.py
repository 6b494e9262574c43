"""Where the service's log rows go: the database; a row it refuses, set aside; while it is away,
a spool on disk, written to the database when it returns.

A `RowSink.write` never raises and never waits for the database longer than one connection
attempt, so no row can block the rows after it and a shutdown ends whatever the database does:

- a row the database refuses (a NUL byte in PostgreSQL text, a value too long...) is found by
  halving the batch and appended to `refused.jsonl` with the reason; the others are written;
- when the database cannot be reached, rows are appended to a spool file of this process (held
  under an exclusive lock while it is open) and retried with a growing pause; a spool file whose
  lock nobody holds (its process stopped or died) is replayed by any writer that sees it, so
  rows spooled at a shutdown are written at the next start;
- the spool is bounded (`max_bytes` over its folder): past it, or when the disk is full, rows
  are dropped, logged and counted, never waited on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

log = logging.getLogger(__name__)

Row = tuple[str, dict[str, Any]]  # (table name, column values)
REFUSED = "refused.jsonl"
PAUSES = (0.5, 1.0, 2.0, 5.0)  # seconds before trying an unreachable database again
REPLAY_CHUNK = 5000


@dataclass
class Counts:
    """What a sink did with rows since it was made (reported to /metrics)."""

    written: int = 0
    refused: int = 0  # set aside in refused.jsonl
    spooled: int = 0  # kept on disk while the database was away
    replayed: int = 0  # spooled rows written since
    lost: int = 0  # dropped: the spool full, or the disk

    def minus(self, before: Counts) -> Counts:
        return Counts(*(a - b for a, b in zip(self.astuple(), before.astuple(), strict=True)))

    def astuple(self) -> tuple[int, ...]:
        return (self.written, self.refused, self.spooled, self.replayed, self.lost)


def database_away(err: BaseException) -> bool:
    """Whether a failed write says the database is unreachable (try later), not that it
    refused what was sent (set those rows aside)."""
    if isinstance(err, sa.exc.DBAPIError):
        refused = (sa.exc.DataError, sa.exc.IntegrityError)
        return err.connection_invalidated or not isinstance(err, refused)
    # a StatementError but no DBAPIError: a value the driver could not even send
    return not isinstance(err, sa.exc.StatementError)


@dataclass
class RowSink:
    """Writes rows to `engine`, setting refused ones aside and spooling while it is away."""

    engine: sa.Engine
    tables: dict[str, sa.Table]
    folder: Path
    max_bytes: int = 256 * 1024 * 1024
    clock: Callable[[], float] = time.monotonic
    counts: Counts = field(default_factory=Counts)
    _retry_at: float = 0.0
    _failures: int = 0
    _spool: IO[str] | None = None
    _spool_path: Path | None = None

    def write(self, rows: list[Row], *, now: bool = False) -> None:
        """Write `rows` now, or set them aside, or spool them; never raises. `now`: try the
        database even within the pause after a failure (the last write before a stop)."""
        if not rows:
            return
        if self.clock() < self._retry_at and not now:  # known away: not worth an attempt
            self._to_spool(rows)
            return
        try:
            self._write_or_refuse(rows)
        except Exception as err:  # away: database_away said so
            self._away(err)
            self._to_spool(rows)
            return
        self._back()

    def replay(self, *, now: bool = False) -> None:
        """Write spooled rows (this process's, and any left by a stopped process) if the
        database is reachable (`now`: try even within the pause after a failure); a spool
        file is removed once every row of it is written."""
        if self.clock() < self._retry_at and not now:
            return
        self._close_spool()
        for path in sorted(self.folder.glob("spool-*.jsonl")):
            with _claimed(path) as claimed:
                if claimed is None:
                    continue  # a running writer's own
                if not self._replay_file(path, claimed):
                    return

    def spill(self, rows: list[Row]) -> None:
        """Keep `rows` on disk at once, in a spool file of their own left unlocked, for the
        next replay of any writer (a process too busy to hand them over keeps them so, safe
        from its own death); never raises."""
        self._keep(rows, self._new_spool_file)

    def close(self) -> None:
        self._close_spool()

    # --- writing ------------------------------------------------------------------------------

    def _write_or_refuse(self, rows: list[Row]) -> None:
        """Write `rows` in one transaction; if the database refuses their content, halve them
        until the refused rows are found and set aside. Raises when it is away."""
        try:
            with self.engine.begin() as conn:
                for name in dict.fromkeys(name for name, _ in rows):
                    conn.execute(self.tables[name].insert(), [r for n, r in rows if n == name])
            self.counts.written += len(rows)
        except Exception as err:
            if database_away(err):
                raise
            if len(rows) == 1:
                self._refuse(rows[0], err)
                return
            half = len(rows) // 2
            self._write_or_refuse(rows[:half])
            self._write_or_refuse(rows[half:])

    def _refuse(self, row: Row, err: Exception) -> None:
        reason = str(getattr(err, "orig", None) or err).splitlines()[0][:500]
        log.error("a %s row was refused by the database and set aside: %s", row[0], reason)
        record = {"table": row[0], "row": row[1], "reason": reason, "at": datetime.now(UTC)}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with (self.folder / REFUSED).open("a", encoding="utf-8") as out:
                out.write(_line(record))
            self.counts.refused += 1
        except OSError as disk:
            log.error("a refused %s row is lost: %s", row[0], disk)
            self.counts.lost += 1

    def _away(self, err: BaseException) -> None:
        pause = PAUSES[min(self._failures, len(PAUSES) - 1)]
        self._failures += 1
        self._retry_at = self.clock() + pause
        if self._failures == 1:
            log.error("the log database cannot be reached (%s): spooling to %s",
                      str(err).splitlines()[0][:300], self.folder)  # fmt: skip

    def _back(self) -> None:
        if self._failures:
            log.info("the log database is back: writing the spooled rows")
            self._failures, self._retry_at = 0, 0.0
            self.replay()

    # --- the spool ------------------------------------------------------------------------------

    def _to_spool(self, rows: list[Row]) -> None:
        self._keep(rows, self._append_to_spool)

    def _keep(self, rows: list[Row], put: Callable[[str], None]) -> None:
        """Put `rows` on disk with `put` within the spool's bound; counted spooled or lost."""
        if not rows:
            return
        text = "".join(_line({"table": name, "row": row}) for name, row in rows)
        try:
            if _size(self.folder) + len(text) > self.max_bytes:
                raise OSError(f"the spool is full ({self.max_bytes:,} bytes)")
            put(text)
            self.counts.spooled += len(rows)
        except OSError as err:
            log.error("%d log rows are lost: %s", len(rows), err)
            self.counts.lost += len(rows)

    def _append_to_spool(self, text: str) -> None:
        spool = self._open_spool()
        spool.write(text)
        spool.flush()

    def _new_spool_file(self, text: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        partial = self.folder / f".{name}.partial"  # a replay never reads half a file
        partial.write_text(text, encoding="utf-8")
        partial.replace(self.folder / f"spool-{name}.jsonl")

    def _open_spool(self) -> IO[str]:
        if self._spool is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"spool-{uuid.uuid4().hex}.jsonl"
            spool = path.open("a", encoding="utf-8")
            fcntl.flock(spool, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours while this process runs
            self._spool, self._spool_path = spool, path
        return self._spool

    def _close_spool(self) -> None:
        if self._spool is not None:
            self._spool.close()  # the lock goes with it: replayable by anyone from now
            self._spool = self._spool_path = None

    def _replay_file(self, path: Path, spooled: IO[str]) -> bool:
        """Write a claimed spool file's rows in chunks; False if the database went away (the
        rows not yet written stay in the file)."""
        lines = spooled.read().splitlines()
        done = 0
        while done < len(lines):
            chunk = [_row(line) for line in lines[done : done + REPLAY_CHUNK]]
            try:
                self._write_or_refuse([r for r in chunk if r is not None])
            except Exception as err:
                self._away(err)
                _rewrite(path, lines[done:])
                return False
            self.counts.replayed += len(chunk)
            done += len(chunk)
        path.unlink(missing_ok=True)
        log.info("wrote %d spooled log rows from %s", len(lines), path.name)
        return True


@contextlib.contextmanager
def _claimed(path: Path) -> Iterator[IO[str] | None]:
    """The spool file opened under its exclusive lock, or None while its writer holds it."""
    try:
        handle = path.open("r+", encoding="utf-8")
    except FileNotFoundError:  # replayed by another process just now
        yield None
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        yield handle if path.exists() else None


def _rewrite(path: Path, lines: list[str]) -> None:
    """Keep only `lines` in a spool file (the ones not yet written), atomically."""
    fresh = path.with_suffix(".tmp")
    fresh.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    fresh.replace(path)


def _size(folder: Path) -> int:
    """The spool's bytes; a file another process's replay removes meanwhile counts none (in CI
    under load, 140 rows being spilled were counted lost for it)."""
    return sum(_bytes(p) for p in folder.glob("*.jsonl")) if folder.exists() else 0


def _bytes(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _line(record: dict[str, Any]) -> str:
    # ensure_ascii: a NUL or lone surrogate is kept as an escape, never written raw
    return json.dumps(record, default=_iso, ensure_ascii=True) + "\n"


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _row(line: str) -> Row | None:
    """A spooled row back as it was (its `at` a datetime again); None for a torn last line
    (the process died while writing it)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    row = record["row"]
    row["at"] = datetime.fromisoformat(row["at"])
    return record["table"], row


def spooled_rows(folder: Path) -> int:
    """Rows waiting in the spool (every process's)."""
    if not folder.exists():
        return 0
    return sum(_lines(p) for p in folder.glob("spool-*.jsonl"))


def _lines(path: Path) -> int:
    try:
        with path.open(encoding="utf-8") as spooled:
            return sum(1 for _ in spooled)
    except FileNotFoundError:  # replayed just now
        return 0
