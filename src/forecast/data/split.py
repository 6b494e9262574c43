"""An export larger than memory, split into parts by account to be checked and stored a part at
a time (`forecast.data.ingest.import_in_parts`, docs/scale.md).

Every row goes to its account's part (a hash of `account_id`); a row without an account follows
its deal (a deal's history and attributes, an activity logged on a deal only). A part then holds
its accounts, their deals and the deals' own rows, as a part of a generated world does, so every
rule within an account or a deal is checked within a part. The small tables every part refers to
(reps, products, targets) are read whole and checked with each part.

Each file of the export is read (and its problems as a file reported) on its own, then written
to a scratch folder split by part, each row with the file and line it came from: a part is
read back from its pieces with every row still located in the export.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forecast.data.parts import id_hashes, partition_of, partition_of_hashes
from forecast.data.sources import RawTable
from forecast.data.sources.files import read_table
from forecast.data.validate import Checked, check
from forecast.data.violations import ValidationError, Violation

if TYPE_CHECKING:
    from distributed import Client

WHOLE = ("reps", "products", "targets")  # read whole, checked with every part, stored once
FILE, LINE = "__file", "__line"  # each row's place in the export, kept beside it in the pieces


@dataclass(frozen=True)
class DealParts:
    """Each deal's part, for the deal's own rows: deal ids by hash (`id_hashes`)."""

    hashes: np.ndarray  # sorted
    parts: np.ndarray  # per hash

    @classmethod
    def joined(cls, pieces: Sequence[tuple[np.ndarray, np.ndarray]]) -> DealParts:
        hashes = np.concatenate([np.empty(0, np.uint64), *(h for h, _ in pieces)])
        parts = np.concatenate([np.empty(0, np.int64), *(p for _, p in pieces)])
        order = np.argsort(hashes, kind="stable")
        return cls(hashes[order], parts[order])

    def of(self, deal_ids: np.ndarray, count: int) -> np.ndarray:
        """The part of each deal id; an id no deal has goes by its own hash (its rows are then
        refused in that part: no such deal)."""
        hashes = id_hashes(deal_ids)
        own = partition_of_hashes(hashes, count)
        if not len(self.hashes):
            return own
        at = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        return np.where(self.hashes[at] == hashes, self.parts[at], own)


def split_export(
    files: Mapping[str, Sequence[Path]],
    count: int,
    scratch: Path,
    *,
    client: Client | None = None,
) -> None:
    """Split the export's `files` (`table_files`) but the `WHOLE` tables into `count` parts
    under `scratch` (`<table>/part-NNNNN/<file number>.parquet`), a file at a time, on the
    cluster's workers when given. The deals go first: where each deal goes decides where its
    rows go.

    Raises:
        ValidationError: the problems of every file that could not be read.
    """
    deal_files = [(n, path) for n, path in enumerate(files.get("deals", []))]
    other = [
        (name, n, path)
        for name, paths in files.items()
        if name not in (*WHOLE, "deals")
        for n, path in enumerate(paths)
    ]
    tasks: list[tuple] = [("deals", n, path, scratch, count, None) for n, path in deal_files]
    made = _run(client, tasks)
    _raise_problems(made)
    deal_parts = DealParts.joined([m for m in made if not isinstance(m, list)])
    shared = client.scatter(deal_parts, broadcast=True) if client is not None else deal_parts
    tasks = [(name, n, path, scratch, count, shared) for name, n, path in other]
    _raise_problems(_run(client, tasks))


def part_raw(
    scratch: Path, number: int, sources: Mapping[str, Sequence[Path]]
) -> dict[str, RawTable]:
    """Part `number` of the split tables as raw tables, each row located in its export file
    (`sources`: the export's files per table, `table_files`)."""
    raw = {}
    for name, paths in sources.items():
        pieces = sorted((scratch / name / f"part-{number:05d}").glob("*.parquet"))
        if name in WHOLE or not pieces:
            continue
        frame = pd.concat([pd.read_parquet(p) for p in pieces], ignore_index=True)
        lines = frame.pop(LINE).to_numpy()
        names = frame.pop(FILE).to_numpy(dtype=object)
        several = len(paths) > 1
        source = str(paths[0].parent if several else paths[0])
        raw[name] = RawTable(name, frame, source, lines, names if several else None)
    return raw


def checked_parts(
    split: Path,
    count: int,
    whole: Mapping[str, RawTable],
    files: Mapping[str, Sequence[Path]],
    *,
    as_of: pd.Timestamp,
    bad_rows: str = "refuse",
    client: Client | None = None,
) -> Iterator[Checked | ValidationError]:
    """Each part of the export split under `split` checked against the contract with the
    `whole` tables (`forecast.data.validate.check`), in part order: its canonical tables, or
    the error that lists its problems. On `client`'s workers a few parts ahead (the caller
    holds one part at a time); else here, one after the other."""
    task = partial(_check_part, split, whole=whole, files=files, as_of=as_of, bad_rows=bad_rows)
    if client is None:
        yield from map(task, range(count))
        return
    ahead = 2 * max(1, len(client.scheduler_info()["workers"]))
    futures = deque(client.submit(task, n, pure=False) for n in range(min(ahead, count)))
    for number in range(count):
        done = futures.popleft().result()
        if number + ahead < count:
            futures.append(client.submit(task, number + ahead, pure=False))
        yield done


# an activity on a deal goes to the deal's part; the account it also names may be in another
# (checked across the parts, `forecast.data.parts`)
ACROSS_PARTS = ("activities.account_id",)


def _check_part(
    split: Path,
    number: int,
    *,
    whole: Mapping[str, RawTable],
    files: Mapping[str, Sequence[Path]],
    as_of: pd.Timestamp,
    bad_rows: str,
) -> Checked | ValidationError:
    raw = dict(whole) | part_raw(split, number, files)
    try:
        return check(raw, as_of=as_of, bad_rows=bad_rows, elsewhere=ACROSS_PARTS)
    except ValidationError as err:  # returned: every part is heard before the import stops
        return err


def _run(client: Client | None, tasks: list[tuple]) -> list:
    if client is None:
        return [_split_file(*task) for task in tasks]
    from forecast.cluster import gathered

    return gathered([client.submit(_split_file, *task, pure=False) for task in tasks])


def _split_file(
    table: str,
    number: int,
    path: Path,
    scratch: Path,
    count: int,
    deal_parts: DealParts | None,
) -> tuple[np.ndarray, np.ndarray] | list[Violation] | None:
    """Read one export file and write its rows under `scratch` by part; for a deals file, the
    deals' (id hashes, parts). The file's problems as a list of violations when it cannot be
    read (returned, not raised: every file is heard)."""
    try:
        raw = read_table([path], table)
    except ValidationError as err:
        return err.violations
    frame = raw.frame.copy()
    part = _parts_of(table, frame, count, deal_parts)
    frame[FILE] = path.name
    frame[LINE] = raw.lines if raw.lines is not None else np.arange(1, len(frame) + 1)
    for p in np.unique(part):
        folder = scratch / table / f"part-{int(p):05d}"
        folder.mkdir(parents=True, exist_ok=True)
        frame[part == p].to_parquet(folder / f"{number:06d}.parquet", index=False)
    if table != "deals":
        return None
    named = _named(_ids(frame, "deal_id"))
    return id_hashes(_ids(frame, "deal_id")[named]), part[named]


def _parts_of(
    table: str, frame: pd.DataFrame, count: int, deal_parts: DealParts | None
) -> np.ndarray:
    """Each row's part: a deal's own rows (history, attributes, activities on a deal) its
    deal's; a deal, and the other rows, their account's (a deal without an account by its own
    id); a row naming neither, the first."""
    part = np.zeros(len(frame), dtype=np.int64)
    account, deal = _ids(frame, "account_id"), _ids(frame, "deal_id")
    by_deal = _named(deal)
    if table != "deals" and by_deal.any():
        assert deal_parts is not None  # the deals are split first
        part[by_deal] = deal_parts.of(deal[by_deal], count)
    by_account = _named(account) if table == "deals" else _named(account) & ~by_deal
    part[by_account] = partition_of(account[by_account], count)
    if table == "deals":
        alone = by_deal & ~by_account
        part[alone] = partition_of(deal[alone], count)
    return part


def _ids(frame: pd.DataFrame, column: str) -> np.ndarray:
    """The column's values as text, as validation reads an id (None where blank or absent)."""
    if column not in frame:
        return np.full(len(frame), None, dtype=object)
    values = frame[column]
    return values.astype(str).where(values.notna(), None).to_numpy(dtype=object)


def _named(ids: np.ndarray) -> np.ndarray:
    return pd.notna(ids) & (ids != "")


def _raise_problems(results: list) -> None:
    problems = [v for r in results if isinstance(r, list) for v in r]
    if problems:
        raise ValidationError(problems)
