"""As-of lookups shared by every feature builder: the point-in-time rule in one place.

Each lookup takes, for a (key, as_of) row, the last event of the same key at or before as_of
(backward, exact matches allowed): `asof_join` with `pandas.merge_asof` for frames, `Timeline`
and `Running` by binary search over arrays. Nothing later can be matched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecast.tables import CrmTables


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
    stored CRM in microseconds, and a million snapshots in a blink.
    """

    stamps: np.ndarray  # the distinct event times (int64 ns), sorted
    order: np.ndarray  # per row: code * (len(stamps) + 1) + time rank (1-based), sorted
    codes: np.ndarray  # per row: key code
    times: np.ndarray  # per row: event time, datetime64[ns]

    @classmethod
    def of(cls, codes: np.ndarray, times: np.ndarray) -> Timeline:
        """A timeline of rows already ordered by (code, time)."""
        times = np.asarray(times, dtype="datetime64[ns]")
        ns = times.view(np.int64)
        stamps = np.unique(ns)
        rank = np.searchsorted(stamps, ns, side="left") + 1
        codes = np.asarray(codes, dtype=np.int64)
        return cls(stamps, codes * (len(stamps) + 1) + rank, codes, times)

    def last(self, codes: np.ndarray, moments: np.ndarray) -> np.ndarray:
        """Per lookup, the row of its code's last event at or before its moment (exact matches
        count; of rows at the same time, the last); -1 where there is none (or the code is -1)."""
        codes = np.asarray(codes, dtype=np.int64)
        moments = np.asarray(moments, dtype="datetime64[ns]")
        rank = np.searchsorted(self.stamps, moments.view(np.int64), side="right")
        last = np.searchsorted(self.order, codes * (len(self.stamps) + 1) + rank, "right") - 1
        if not len(self.codes):
            return np.full(len(codes), -1)
        row = np.clip(last, 0, None)
        hit = (codes >= 0) & (last >= 0) & (self.codes[row] == codes)
        return np.where(hit, last, -1)


@dataclass(frozen=True)
class Running:
    """Running sums of some columns per key over time, ready for as-of lookups (`at`)."""

    keys: pd.Index  # the distinct keys, sorted; a row's key code is its position here
    line: Timeline  # the rows, by key code and time
    sums: dict[str, np.ndarray]  # per column, per row: the running sums
    time: str  # the time column's name in lookups

    def code(self, keys: np.ndarray) -> np.ndarray:
        """Each key's code (-1 for a key without events)."""
        keys = np.asarray(keys)
        if self.keys.dtype.kind in "iu" and keys.dtype.kind in "iu":
            # integer keys (the codes of another index): a binary search, no hash table
            sorted_keys = self.keys.to_numpy()
            at = np.clip(np.searchsorted(sorted_keys, keys), 0, max(len(sorted_keys) - 1, 0))
            found = sorted_keys[at] == keys if len(sorted_keys) else np.zeros(len(keys), bool)
            return np.where(found, at, -1)
        return self.keys.get_indexer(keys)

    def at(
        self, keys: np.ndarray, moments: np.ndarray, shift_days: float = 0
    ) -> dict[str, np.ndarray]:
        """For each (key, moment): the running sums at `moment - shift_days` (zeros where
        nothing had happened yet), and the time of the last event counted (`time`; NaT if
        none)."""
        moments = np.asarray(moments, dtype="datetime64[ns]")
        if shift_days:
            moments = moments - np.timedelta64(round(shift_days * 86400 * 1e9), "ns")
        row = self.line.last(self.code(keys), moments)
        hit = row >= 0
        if not len(self.line.codes):
            columns = {self.time: np.full(len(row), np.datetime64("NaT", "ns"))}
            return columns | {c: np.zeros(len(row)) for c in self.sums}
        columns = {self.time: np.where(hit, self.line.times[row], np.datetime64("NaT", "ns"))}
        return columns | {c: np.where(hit, v[row], 0.0) for c, v in self.sums.items()}


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
    values = {c: np.asarray(v, dtype=float) for c, v in columns.items()}
    if keys.dtype.kind not in "iub":
        known = ~pd.isna(keys)
        if not known.all():
            keys, times = keys[known], times[known]
            values = {c: v[known] for c, v in values.items()}
    if keys.dtype.kind in "iub":
        distinct, codes = np.unique(keys, return_inverse=True)
    else:
        codes, distinct = pd.factorize(keys, sort=True)
    order = np.lexsort((times.view(np.int64), codes))  # stable: ties keep the order given
    codes = codes[order]
    first = np.ones(len(codes), dtype=bool)
    first[1:] = codes[1:] != codes[:-1]
    return Running(
        keys=pd.Index(distinct),
        line=Timeline.of(codes, times[order]),
        sums={c: _cumsum_by_key(v[order], codes, first) for c, v in values.items()},
        time=time,
    )


def _cumsum_by_key(values: np.ndarray, codes: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting at each key's first row (rows grouped by key).

    Counts (whole numbers, every partial sum exact) take one cumsum less each key's start; other
    values pandas' compensated sum per key, as exact as a float sum gets.
    """
    if not len(values):
        return values.astype(float)
    if (
        np.isfinite(values).all()
        and (values == np.trunc(values)).all()
        and np.abs(values).sum() < 2.0**53
    ):
        total = np.cumsum(values)
        start = np.maximum.accumulate(np.where(first, np.arange(len(values)), 0))
        return total - (total[start] - values[start])
    return pd.Series(values).groupby(codes, sort=False).cumsum().to_numpy(dtype=float)


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

    Rows dated after `as_of` are dropped: history changes, activities and signals by their time,
    deals and accounts by creation, revenue months that had not ended. Each remaining deal's row
    is rebuilt from its last history row (stage, amount, expected close; closed_at and outcome
    when that row closed it; the discount only once closed). Reps, products and targets are kept
    whole: the org tree is taken as of the export and quotas are known all along.
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
    }
    return CrmTables.from_frames(frames, as_of=min(as_of, pd.Timestamp(tables.as_of)))
