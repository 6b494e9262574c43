"""As-of lookups shared by every feature builder: the point-in-time rule in one place.

Each lookup takes, for a (key, as_of) row, the last event of the same key at or before as_of
(`pandas.merge_asof`, backward, exact matches allowed). Nothing later can be matched.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecast.tables import CrmTables


def asof_join(
    left: pd.DataFrame, right: pd.DataFrame, by: str, left_on: str, right_on: str
) -> pd.DataFrame:
    """For each left row (sorted by `left_on`), the last right row of the same key at or before."""
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


def running_sums(
    frame: pd.DataFrame, key: str, time: str, columns: dict[str, np.ndarray]
) -> pd.DataFrame:
    """Running sums of `columns` per key in time order, for as-of lookups."""
    data = pd.DataFrame({key: frame[key].to_numpy(), time: frame[time].to_numpy()} | columns)
    data = data.sort_values([key, time], kind="stable", ignore_index=True)
    sums = data.groupby(key, sort=False)[list(columns)].cumsum()
    return pd.concat([data[[key, time]], sums], axis=1)


def running_at(
    pairs: pd.DataFrame, running: pd.DataFrame, key: str, time: str, shift_days: float = 0
) -> pd.DataFrame:
    """Running sums at `as_of - shift_days` (zeros where nothing had happened yet)."""
    left = pairs[[key]].assign(as_of=pairs["as_of"] - pd.Timedelta(days=shift_days))
    if shift_days:
        left = left.sort_values("as_of", kind="stable")
    at = asof_join(left, running, key, "as_of", time).set_index(left.index).sort_index()
    value_columns = [c for c in running.columns if c not in (key, time)]
    at[value_columns] = at[value_columns].fillna(0.0)
    return at


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
