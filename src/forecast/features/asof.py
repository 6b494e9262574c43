"""As-of lookups shared by every feature builder: the point-in-time rule in one place.

Each lookup takes, for a (key, as_of) row, the last event of the same key at or before as_of
(backward, exact matches allowed): `asof_join` with `pandas.merge_asof` for frames, `Timeline`
and `Running` by binary search over arrays. Nothing later can be matched.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecast.data.tables import CrmTables


def asof_join(
    left: pd.DataFrame, right: pd.DataFrame, by: str, left_on: str, right_on: str
) -> pd.DataFrame:
    """For each left row (sorted by `left_on`), the last right row of the same key at or before."""
    if not right[right_on].is_monotonic_increasing:  # running sums come sorted already
        right = right.sort_values(right_on, kind="stable")
    return pd.merge_asof(
        left[[by, left_on]],
        right,
        left_on=left_on,
        right_on=right_on,
        by=by,
        direction="backward",
        allow_exact_matches=True,
    )


@dataclass(frozen=True)
class Timeline:
    """Rows in (key code, time) order, ready for as-of lookups.

    Each row gets one sortable number, its code times the count of distinct times plus its
    time's rank; "the last row of a code at or before a moment" is then one binary search per
    lookup, however long the history, so a single CRM record is looked up against a whole
    stored CRM in microseconds, and a million snapshots in a blink. A row's code and time are
    read back from its number, not stored beside it: at tens of millions of rows (the win
    records of a large CRM) two arrays fewer is gigabytes.
    """

    stamps: np.ndarray  # the distinct event times (int64 ns), sorted
    order: np.ndarray  # per row: code * (len(stamps) + 1) + time rank (1-based), sorted

    @classmethod
    def of(cls, codes: np.ndarray, times: np.ndarray) -> Timeline:
        """A timeline of rows already ordered by (code, time)."""
        ns = np.asarray(times, dtype="datetime64[ns]").view(np.int64)
        stamps = np.unique(ns)
        rank = np.searchsorted(stamps, ns, side="left") + 1
        return cls(stamps, np.asarray(codes, dtype=np.int64) * (len(stamps) + 1) + rank)

    @property
    def codes(self) -> np.ndarray:
        """Per row: its key code."""
        return self.code_of(slice(None))

    @property
    def times(self) -> np.ndarray:
        """Per row: its event time, datetime64[ns]."""
        return self.time_of(slice(None))

    def code_of(self, rows: np.ndarray | slice) -> np.ndarray:
        """The key code of each of `rows`."""
        return self.order[rows] // (len(self.stamps) + 1)

    def time_of(self, rows: np.ndarray | slice) -> np.ndarray:
        """The event time of each of `rows`, datetime64[ns]."""
        rank = self.order[rows] % (len(self.stamps) + 1)
        return self.stamps[rank - 1].view("datetime64[ns]")

    def last(self, codes: np.ndarray, moments: np.ndarray) -> np.ndarray:
        """Per lookup, the row of its code's last event at or before its moment (exact matches
        count; of rows at the same time, the last); -1 where there is none (or the code is -1)."""
        codes = np.asarray(codes, dtype=np.int64)
        if not len(self.order):
            return np.full(len(codes), -1)
        ns = np.asarray(moments, dtype="datetime64[ns]").view(np.int64)
        rank = np.searchsorted(self.stamps, ns, side="right")
        last = np.searchsorted(self.order, codes * (len(self.stamps) + 1) + rank, "right") - 1
        hit = (codes >= 0) & (last >= 0) & (self.code_of(np.maximum(last, 0)) == codes)
        return np.where(hit, last, -1)


@dataclass(frozen=True)
class Running:
    """Running sums of some columns per key over time, ready for as-of lookups (`at`)."""

    keys: np.ndarray  # the distinct keys, sorted; a row's key code is its position here
    index: pd.Index | None  # the keys' hash table, when they are not integers
    line: Timeline  # the rows, by key code and time
    names: tuple[str, ...]  # the summed columns
    sums: np.ndarray  # per row, per column: the running sums (counts as int32 where they fit)
    time: str  # the time column's name in lookups

    def code(self, keys: np.ndarray) -> np.ndarray:
        """Each key's code (-1 for a key without events)."""
        keys = np.asarray(keys)
        if self.index is not None or keys.dtype.kind not in "iu":
            index = self.index if self.index is not None else pd.Index(self.keys)
            return index.get_indexer(keys)
        # integer keys (the codes of another index): a binary search, no hash table
        if not len(self.keys):
            return np.full(len(keys), -1)
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return np.where(self.keys[at] == keys, at, -1)

    def at(
        self, keys: np.ndarray, moments: np.ndarray, shift_days: float = 0
    ) -> dict[str, np.ndarray]:
        """For each (key, moment): the running sums at `moment - shift_days` (zeros where
        nothing had happened yet), and the time of the last event counted (`time`; NaT if
        none)."""
        times, sums = self.at_each(keys, moments, (shift_days,))
        return {self.time: times[0]} | {c: sums[0, :, j] for j, c in enumerate(self.names)}

    def at_each(
        self, keys: np.ndarray, moments: np.ndarray, shifts: Sequence[float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """`at` for each of `shifts` (days) in one lookup: the time of the last event counted,
        shape (shifts, keys), and the sums, shape (shifts, keys, columns in `names` order)."""
        moments = np.asarray(moments, dtype="datetime64[ns]")
        n, k = len(moments), len(shifts)
        shifted = (moments - _offsets(tuple(shifts))[:, None]).ravel()
        code = self.code(keys)
        row = self.line.last(np.concatenate([code] * k) if k > 1 else code, shifted)
        if not len(self.line.order):
            return np.full((k, n), _NAT), np.zeros((k, n, len(self.names)))
        missed = row < 0
        times, sums = self.line.time_of(row), self.sums[row].astype(float, copy=False)
        times[missed], sums[missed] = _NAT, 0.0
        return times.reshape(k, n), sums.reshape(k, n, len(self.names))


_NAT = np.datetime64("NaT", "ns")


@functools.lru_cache(maxsize=64)
def _offsets(days: tuple[float, ...]) -> np.ndarray:
    return np.array([round(d * 86400 * 1e9) for d in days], dtype="timedelta64[ns]")


def running_sums(
    frame: pd.DataFrame, key: str, time: str, columns: dict[str, np.ndarray]
) -> Running:
    """Running sums of `columns` per key in time order, for as-of lookups (`running_at`)."""
    return running_of(frame[key].to_numpy(), frame[time].to_numpy(), columns, time=time)


def running_of(
    keys: np.ndarray, times: np.ndarray, columns: dict[str, np.ndarray], *, time: str = "at"
) -> Running:
    """Running sums of `columns` per key in time order (rows at the same time in the order
    given); a missing key is nobody's record: never matched."""
    keys = np.asarray(keys)
    times = np.asarray(times, dtype="datetime64[ns]")
    values = np.empty((len(keys), len(columns)))
    for j, column in enumerate(columns.values()):
        values[:, j] = column
    integers = keys.dtype.kind in "iub"
    if not integers:
        known = ~pd.isna(keys)
        if not known.all():
            keys, times, values = keys[known], times[known], values[known]
    if integers:
        distinct, codes = np.unique(keys, return_inverse=True)
    else:
        codes, distinct = pd.factorize(keys, sort=True)
    order = np.lexsort((times.view(np.int64), codes))  # stable: ties keep the order given
    codes = codes[order]
    return Running(
        keys=np.asarray(distinct),
        index=None if integers else pd.Index(distinct),
        line=Timeline.of(codes, times[order]),
        names=tuple(columns),
        sums=_cumsum_by_key(values[order], codes),
        time=time,
    )


def running_in_order(
    keys: np.ndarray, times: np.ndarray, columns: dict[str, np.ndarray], *, time: str = "at"
) -> Running:
    """`running_of` for rows already in (key, time) order with integer keys, none missing:
    no copy is sorted, so tens of millions of rows are summed in little more than they take."""
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    codes = np.cumsum(first) - 1
    sums = np.column_stack([_cumsum_by_key(c[:, None], codes, first) for c in columns.values()])
    return Running(
        keys=np.asarray(keys)[first],
        index=None,
        line=Timeline.of(codes, times),
        names=tuple(columns),
        sums=sums,
        time=time,
    )


COUNT_LIMIT = 2**31  # whole-number sums below it are kept as int32: exact, half a float's size


def _cumsum_by_key(
    values: np.ndarray, codes: np.ndarray, first: np.ndarray | None = None
) -> np.ndarray:
    """Cumulative sums down each column, restarting at each key's first row (rows grouped by
    key; `first`: each key's first row, when known).

    Whole numbers (every partial sum exact below 2**53) take one cumsum less each key's start,
    as int32 where the total fits (counts); other values pandas' compensated sum per key, as
    exact as a float sum gets.
    """
    if not len(values):
        return values
    whole = np.isfinite(values).all() and (values == np.trunc(values)).all()
    largest = np.abs(values).sum(axis=0).max(initial=0) if whole else np.inf
    if largest >= 2.0**53:
        return pd.DataFrame(values).groupby(codes, sort=False).cumsum().to_numpy(dtype=float)
    kind = np.int32 if largest < COUNT_LIMIT else np.float64
    exact: np.ndarray = values.astype(kind, copy=False)
    total: np.ndarray = np.cumsum(exact, axis=0, dtype=kind)
    if first is None:
        first = np.ones(len(codes), dtype=bool)
        first[1:] = codes[1:] != codes[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(len(codes)), 0))
    return total - (total[start] - exact[start])


def running_at(
    pairs: pd.DataFrame, running: Running, key: str, time: str, shift_days: float = 0
) -> pd.DataFrame:
    """Running sums at `as_of - shift_days` for each row of `pairs` (zeros where nothing had
    happened yet), with the time of the last event counted (`time`; NaT if none)."""
    columns = running.at(pairs[key].to_numpy(), pairs["as_of"].to_numpy(), shift_days)
    columns[time] = columns.pop(running.time)
    out = pd.DataFrame({time: columns.pop(time)} | columns, index=pairs.index)
    return out if out.index.is_monotonic_increasing else out.sort_index()


def tables_as_of(tables: CrmTables, as_of: pd.Timestamp | str) -> CrmTables:
    """The CRM as an export taken at `as_of` would have recorded it.

    Rows dated after `as_of` are dropped: history changes, activities, signals and order lines by
    their time, deals and accounts by creation, revenue months that had not ended. Each remaining
    deal's row is rebuilt from its last history row (stage, amount, expected close; closed_at and
    outcome when that row closed it; the discount only once closed). Reps, products and targets
    are kept whole: the org tree is taken as of the export and quotas are known all along.
    """
    as_of = pd.Timestamp(as_of)
    history = tables.deal_history[tables.deal_history["changed_at"] <= as_of]
    history = history.sort_values(["deal_id", "changed_at"], kind="stable")
    last = history.groupby("deal_id", sort=False).tail(1).set_index("deal_id")
    deals = tables.deals[tables.deals["deal_id"].isin(last.index)].copy()
    state = last.reindex(deals["deal_id"].to_numpy())
    stage = state["stage"].to_numpy()
    won, lost = stage == "closed_won", stage == "closed_lost"
    deals["stage"] = stage
    deals["amount"] = state["amount"].to_numpy()
    deals["expected_close"] = state["expected_close"].to_numpy()
    deals["closed_at"] = state["changed_at"].where(won | lost).to_numpy()
    deals["outcome"] = np.where(won, "won", np.where(lost, "lost", "open"))
    if "discount" in deals:
        deals["discount"] = deals["discount"].where(won | lost)
    accounts = tables.accounts[tables.accounts["created_at"] <= as_of]
    revenue = tables.revenue[tables.revenue["period"] + pd.offsets.MonthBegin(1) <= as_of]
    frames = {
        "reps": tables.reps,
        "targets": tables.targets,
        "products": tables.products,
        "accounts": accounts,
        "deals": deals,
        "deal_history": history,
        "activities": tables.activities[tables.activities["at"] <= as_of],
        "revenue": revenue,
        "signals": tables.signals[tables.signals["at"] <= as_of],
        "orders": tables.orders[tables.orders["at"] <= as_of],
    }
    return CrmTables.from_frames(frames, as_of=min(as_of, pd.Timestamp(tables.as_of)))
