"""What spans the parts of a store written in parts: every table's key unique across its parts,
every reference found in the table it names, checked by Dask over the key columns only, never
by loading the tables (docs/scale.md).

Each part is checked against the contract as it is made (`forecast.data.validate`); a key that
repeats in two parts, or a reference to a row in another part that is not there, only shows
once the parts are seen together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forecast.data.schema import TABLES

if TYPE_CHECKING:
    from distributed import Client

SHOWN = 5  # offending values named per problem


def id_hashes(ids: np.ndarray | Sequence) -> np.ndarray:
    """A 64-bit hash of each id, the same in every process and run."""
    return pd.util.hash_array(np.asarray(ids, dtype=object), categorize=True)


def partition_of(ids: np.ndarray | Sequence, count: int) -> np.ndarray:
    """Each id's partition of `count`, by its hash (`id_hashes`)."""
    return partition_of_hashes(id_hashes(ids), count)


def partition_of_hashes(hashes: np.ndarray, count: int) -> np.ndarray:
    """The partition of `count` of each id hash (`id_hashes`)."""
    return (hashes % np.uint64(count)).astype(np.int64)


@dataclass(frozen=True)
class PartsProblem:
    """One check that failed across parts, with a few of the values behind it."""

    table: str
    what: str
    examples: tuple[str, ...]
    count: int

    def __str__(self) -> str:
        shown = ", ".join(self.examples)
        hidden = self.count - len(self.examples)
        more = f" and {hidden:,} more" if hidden > 0 else ""
        return f"{self.table}: {self.what}: {shown}{more}"


class PartsError(ValueError):
    """The parts, seen together, break the contract; nothing was stored."""

    def __init__(self, problems: list[PartsProblem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def check_across_parts(folder: Path, client: Client | None = None) -> None:
    """Check the tables under `folder` (`<table>/part-*.parquet`, or `<table>.parquet`) for
    keys repeated across parts and references to rows no part holds; on `client`'s cluster
    when given, else on Dask's threads in this process.

    Raises:
        PartsError: naming each table, what is wrong and a few of the values.
    """
    import dask

    # shuffles by tasks: the peer-to-peer method stalled here on a million deals (workers gone,
    # the client waiting), and logs every shuffle at WARNING
    settings = {"scheduler": client or "threads", "dataframe.shuffle.method": "tasks"}
    with dask.config.set(settings):
        problems = [*_repeated_keys(folder), *_missing_references(folder)]
    if problems:
        raise PartsError(problems)


def _columns(folder: Path, table: str, columns: list[str]):
    """The table's `columns` as a Dask DataFrame, or None when the table is not stored."""
    import dask.dataframe as dd

    parts, whole = folder / table, folder / f"{table}.parquet"
    path = parts if parts.is_dir() else whole if whole.is_file() else None
    return None if path is None else dd.read_parquet(str(path), columns=columns)


def _repeated_keys(folder: Path) -> list[PartsProblem]:
    problems = []
    for name, table in TABLES.items():
        key = list(table.key)
        frame = _columns(folder, name, key) if key else None
        if frame is None:
            continue
        counts = frame.groupby(key).size(split_out=frame.npartitions)
        repeated = counts[counts > 1].compute()
        if len(repeated):
            shown = tuple(str(k) for k in repeated.index[:SHOWN])
            what = f"key {', '.join(key)} repeated across parts"
            problems.append(PartsProblem(name, what, shown, len(repeated)))
    return problems


def _missing_references(folder: Path) -> list[PartsProblem]:
    problems = []
    for name, table in TABLES.items():
        for column in table.columns:
            if not column.references:
                continue
            target, target_key = column.references.split(".")
            values = _columns(folder, name, [column.name])
            known = _columns(folder, target, [target_key])
            if values is None or known is None:
                continue
            used = values.dropna().drop_duplicates()
            joined = used.merge(
                known.rename(columns={target_key: column.name}).drop_duplicates(),
                on=column.name, how="left", indicator=True,
            )  # fmt: skip
            missing = joined[joined["_merge"] == "left_only"][column.name].compute()
            if len(missing):
                shown = tuple(sorted(str(v) for v in missing)[:SHOWN])
                what = f"{column.name} not in {column.references}"
                problems.append(PartsProblem(name, what, shown, len(missing)))
    return problems
