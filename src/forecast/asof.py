"""As-of lookups shared by every feature builder: the point-in-time rule in one place.

Each lookup takes, for a (key, as_of) row, the last event of the same key at or before as_of
(`pandas.merge_asof`, backward, exact matches allowed). Nothing later can be matched.
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
class Running:
    """Running sums of some columns per key over time, ready for as-of lookups.

    Rows are ordered by (key, time) and each gets one sortable number, its key's code times
    the count of distinct times plus its time's rank; a lookup is then one binary search per
    row, however long the history, which lets a single CRM record be scored against a whole
    stored CRM in milliseconds.
    """

    keys: pd.Index  # the distinct keys; a row's key code is its position here
    stamps: np.ndarray  # the distinct event times (int64 ns), sorted
    order: np.ndarray  # per row: key code * (len(stamps) + 1) + time rank (1-based), sorted
    codes: np.ndarray  # per row: key code
    times: np.ndarray  # per row: event time
    sums: dict[str, np.ndarray]  # per column, per row: the running sums
    time: str  # the time column's name in lookups


def running_sums(
    frame: pd.DataFrame, key: str, time: str, columns: dict[str, np.ndarray]
) -> Running:
    """Running sums of `columns` per key in time order, for as-of lookups (`running_at`)."""
    data = pd.DataFrame({key: frame[key].to_numpy(), time: frame[time].to_numpy()} | columns)
    data = data[data[key].notna()]  # no key is nobody's record: never matched
    data = data.sort_values([key, time], kind="stable", ignore_index=True)
    sums = data.groupby(key, sort=False)[list(columns)].cumsum()
    codes, keys = pd.factorize(data[key], sort=True)  # sorted keys: codes ascend with the rows
    times = data[time].to_numpy("datetime64[ns]")
    stamps = np.unique(times.view(np.int64))
    rank = np.searchsorted(stamps, times.view(np.int64), side="left") + 1
    return Running(
        keys=pd.Index(keys),
        stamps=stamps,
        order=codes.astype(np.int64) * (len(stamps) + 1) + rank,
        codes=codes,
        times=times,
        sums={column: sums[column].to_numpy(dtype=float) for column in columns},
        time=time,
    )


def running_at(
    pairs: pd.DataFrame, running: Running, key: str, time: str, shift_days: float = 0
) -> pd.DataFrame:
    """Running sums at `as_of - shift_days` for each row of `pairs` (zeros where nothing had
    happened yet), with the time of the last event counted (`time`; NaT if none)."""
    moment = pairs["as_of"].to_numpy("datetime64[ns]") - np.timedelta64(
        round(shift_days * 86400 * 1e9), "ns"
    )
    code = running.keys.get_indexer(pairs[key].to_numpy())
    rank = np.searchsorted(running.stamps, moment.view(np.int64), side="right")
    last = np.searchsorted(running.order, code * (len(running.stamps) + 1) + rank, "right") - 1
    row = np.clip(last, 0, max(len(running.codes) - 1, 0))
    hit = (code >= 0) & (last >= 0)
    never = np.datetime64("NaT", "ns")
    if len(running.codes):
        hit &= running.codes[row] == code
        columns = {time: np.where(hit, running.times[row], never)}
        columns |= {c: np.where(hit, v[row], 0.0) for c, v in running.sums.items()}
    else:
        columns = {time: np.full(len(code), never)}
        columns |= {c: np.zeros(len(code)) for c in running.sums}
    out = pd.DataFrame(columns, index=pairs.index)
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
