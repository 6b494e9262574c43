"""As-of lookups shared by every feature builder: the point-in-time rule in one place.

Each lookup takes, for a (key, as_of) row, the last event of the same key at or before as_of
(`pandas.merge_asof`, backward, exact matches allowed). Nothing later can be matched.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


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
