"""Point-in-time deal features: one row per (deal, as_of), built only from what was known then.

The rule: a feature at `as_of` reads only rows whose time is at or before `as_of`. A deal's stage,
amount and expected close come from `deal_history`, never from the `deals` row (its final state);
other deals' wins and losses come from their close rows in `deal_history`. From `deals` only the
fixed facts are read: ids, account, rep, product and creation time.

Every lookup "as of" a moment is a binary search (backward, exact matches allowed; see
`forecast.features.asof`) over a deal's history or over running sums, on arrays, so a million
snapshots take seconds and one CRM record (`DealFacts` from `forecast.features.records`) a fraction
of a millisecond, with the same code. `slow_deal_features` in the tests is the obviously-right loop
this is checked against.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from forecast.data.contract import OPEN_STAGES
from forecast.data.tables import CrmTables, Featurize
from forecast.features.deal_context import DealContext
from forecast.features.deal_facts import (
    DealFacts,
    State,
    add_activities,
    add_state,
    history_arrays,
    in_days,
)
from forecast.features.deal_own import Own, add_account, add_quarter, add_rep, add_size
from forecast.features.deal_schema import CATEGORICAL, FEATURE_NAMES, KEY_COLUMNS


def snapshot_dates(
    start: pd.Timestamp | str, end: pd.Timestamp | str, *, freq: str = "W-SUN"
) -> pd.DatetimeIndex:
    """Regular as-of moments (weekly on Sunday midnight by default) between start and end."""
    return pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq=freq, normalize=True)


def deal_snapshots(tables: CrmTables, as_of_dates: Sequence[pd.Timestamp]) -> pd.DataFrame:
    """(deal_id, as_of) for every deal open at each as-of, judged from its history then."""
    deal_ids = tables.deals["deal_id"].to_numpy()
    state = State.of(**history_arrays(tables, pd.Index(deal_ids)))
    dates = pd.DatetimeIndex(sorted(set(pd.DatetimeIndex(as_of_dates)))).as_unit("ns")
    # each deal's first change (the rows are in deal order, each deal's in time order)
    starts = np.flatnonzero(state.first & (state.line.codes >= 0))
    created_deal, created_at = state.line.codes[starts], state.line.times[starts]
    deal_parts, as_of_parts = [], []
    for as_of in dates.to_numpy():
        candidates = created_deal[created_at <= as_of]
        if len(candidates):
            deal_parts.append(candidates)
            as_of_parts.append(np.full(len(candidates), as_of))
    if not deal_parts:
        return pd.DataFrame(
            {
                "deal_id": pd.Series([], dtype="string"),
                "as_of": pd.Series([], dtype="datetime64[ns]"),
            }
        )
    deal, as_of = np.concatenate(deal_parts), np.concatenate(as_of_parts)
    open_now = state.stage[state.line.last(deal, as_of)] < len(OPEN_STAGES)
    return pd.DataFrame({"deal_id": deal_ids[deal[open_now]], "as_of": as_of[open_now]})


def won_labels(tables: CrmTables, snapshots: pd.DataFrame) -> pd.Series:
    """1 if the deal was eventually won, 0 if lost, NaN if still open at the export's as-of."""
    outcome = tables.deals.set_index("deal_id")["outcome"]
    values = outcome.reindex(snapshots["deal_id"].to_numpy()).to_numpy()
    return pd.Series(
        np.where(values == "won", 1.0, np.where(values == "lost", 0.0, np.nan)),
        index=snapshots.index,
        name="won",
    )


def deal_features(
    tables: CrmTables | DealFacts, snapshots: pd.DataFrame, *, context: DealContext | None = None
) -> pd.DataFrame:
    """Features for each (deal_id, as_of) row of `snapshots`, in the same order.

    Only rows dated at or before each row's as_of are read; see the module docstring. A deal's
    own facts (its row, history, activities and attributes) come from `tables`; the records
    that span deals (wins by rep, account and product, usual quotes, revenue, firmographics)
    from `context`, by default built from `tables` too. The service passes the stored CRM's
    context with a CRM's records as `tables` (`DealFacts`): the same code scores a record and
    trains.
    """
    as_of = pd.DatetimeIndex(snapshots["as_of"]).as_unit("ns").to_numpy()
    columns = feature_columns(tables, snapshots["deal_id"].to_numpy(), as_of, context=context)
    data = {key: snapshots[key].array for key in KEY_COLUMNS}
    return pd.DataFrame(data | columns, index=snapshots.index)


def feature_columns(
    tables: CrmTables | DealFacts,
    deal_ids: np.ndarray,
    as_of: np.ndarray,
    *,
    context: DealContext | None = None,
) -> dict[str, np.ndarray]:
    """`deal_features` as arrays (no frame), for (deal_ids[i], as_of[i]) (datetime64[ns]):
    one per feature, in FEATURE_NAMES order, then the attributes'. What the service reads for
    a CRM's record, where building a frame would cost more than the features."""
    if isinstance(tables, DealFacts):
        if context is None:
            raise TypeError("DealFacts are read against a DealContext: pass context=")
        facts = tables
    else:
        facts = DealFacts.of(tables)
        context = context or DealContext.of(tables, facts=facts)
    out = _feature_columns(facts, facts.rows(deal_ids), as_of, context)
    return {name: out[name] for name in (*FEATURE_NAMES, *(f.name for f in context.attributes))}


def training_frame(
    tables: CrmTables,
    as_of_dates: Sequence[pd.Timestamp],
    *,
    labelled_only: bool = True,
    features: Featurize | None = None,
) -> pd.DataFrame:
    """Snapshots, their features and the `won` label; unlabeled (still open) rows dropped.
    `features`: how the features are computed (default `deal_features`, in this process; on a
    cluster, `forecast.features.on_dask.deal_features_on` with its client)."""
    snapshots = deal_snapshots(tables, as_of_dates)
    frame = (features or deal_features)(tables, snapshots)
    frame["won"] = won_labels(tables, snapshots).to_numpy()
    if labelled_only:
        frame = frame[frame["won"].notna()].reset_index(drop=True)
    return frame


_CHUNK = 250_000  # snapshots computed at a time: the lookups' scratch arrays stay small


def _feature_columns(
    facts: DealFacts, deal: np.ndarray, as_of: np.ndarray, context: DealContext
) -> dict[str, np.ndarray]:
    own = Own.of(facts, context)
    if len(deal) <= _CHUNK:
        return _columns(own, deal, as_of, context)
    parts = [
        _columns(own, deal[i : i + _CHUNK], as_of[i : i + _CHUNK], context)
        for i in range(0, len(deal), _CHUNK)
    ]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _columns(
    own: Own, deal: np.ndarray, as_of: np.ndarray, context: DealContext
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    state = own.state
    at = state.line.last(deal, as_of)
    if (at < 0).any():
        first = np.flatnonzero(at < 0)[0]
        raise ValueError(
            f"deal {own.deal_id[deal[first]]!r} has no recorded state at or before "
            f"{pd.Timestamp(as_of[first])}"
        )
    stage = state.stage[at]
    add_state(out, state, at, as_of)
    out["deal_age_days"] = in_days(as_of - own.created_at[deal])
    add_activities(out, own, deal, as_of)
    add_account(out, own, deal, as_of, context)
    add_rep(out, own, deal, as_of, stage, context)
    add_size(out, own, deal, as_of, context)
    add_quarter(out, as_of)
    for name, values in own.fixed.items():  # what does not change over a deal's life
        out[name] = values[deal]
    for name in context.unavailable:
        out[name] = np.full(len(deal), None) if name in CATEGORICAL else np.full(len(deal), np.nan)
    return out
