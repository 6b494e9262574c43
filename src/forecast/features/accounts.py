"""Point-in-time account features and churn labels: one row per (account, as_of).

An account is active at `as_of` when it was billed recurring revenue for the last month that had
ended by then. It churns when that revenue stops: the first month start after a billed month with
no recurring revenue. The label of a snapshot is whether such a stop falls after the last month
seen at as_of and by as_of + horizon, [start of as_of's month, as_of + horizon]: a stop at the
start of as_of's own month is not yet seen then (the account still looks billed, its renewal
pending), so it counts. It is unknown (NaN) when the export does not reach far enough to tell.

Features read only rows known at `as_of` (a month's revenue once the month has ended; signals
and touches at their time; other deals through their history), with the as-of lookups of
`forecast.features.asof`. Snapshots are taken mid-month by default so that no as-of falls on the
month boundary where revenue stops.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from forecast.data.contract import OPEN_STAGES
from forecast.data.tables import CrmTables, Featurize
from forecast.features.asof import asof_join, running_at, running_sums
from forecast.features.deal_schema import Feature

HORIZON_DAYS = 90
SIGNAL_WINDOWS = (30, 90)

# directions true by design (monotone: +1, more never lowers the churn probability): more
# tickets, less use. Needed since the labels count a stop not yet seen: tickets cease at a stop,
# so fewer in the last 30 days than in the last 90 reads as churn to an unconstrained model
ACCOUNT_FEATURES: tuple[Feature, ...] = (
    Feature("tenure_days"),
    Feature("months_subscribed"),
    Feature("mrr"),
    Feature("mrr_change_3m"),
    Feature("revenue_365d"),
    Feature("recurring_products"),
    Feature("days_to_contract_end"),
    Feature("tickets_30d", monotone=+1),
    Feature("tickets_90d", monotone=+1),
    Feature("ticket_severity_90d"),
    Feature("satisfaction_last"),
    Feature("satisfaction_change"),
    Feature("usage_last", monotone=-1),
    Feature("usage_change_3m"),
    Feature("payment_delays_180d"),
    Feature("payment_delay_days_max_180d"),
    Feature("days_since_rep_touch"),
    Feature("touches_90d"),
    Feature("open_deals"),
    Feature("open_pipeline"),
    Feature("employees"),
    Feature("segment", "categorical"),
    Feature("industry", "categorical"),
    Feature("region", "categorical"),
)
ACCOUNT_FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in ACCOUNT_FEATURES)
ACCOUNT_CATEGORICAL: tuple[str, ...] = tuple(
    f.name for f in ACCOUNT_FEATURES if f.kind == "categorical"
)


def churn_snapshot_dates(
    start: pd.Timestamp | str, end: pd.Timestamp | str, *, day: int = 15
) -> pd.DatetimeIndex:
    """Monthly as-of moments on `day` of each month between start and end."""
    months = pd.date_range(pd.Timestamp(start).to_period("M").start_time, end, freq="MS")
    dates = months + pd.Timedelta(days=day - 1)
    return dates[(dates >= pd.Timestamp(start)) & (dates <= pd.Timestamp(end))]


def _recurring_months(tables: CrmTables) -> pd.DataFrame:
    """Recurring revenue per account and billed month (summed over products)."""
    rev = tables.revenue[tables.revenue["kind"] == "recurring"]
    return (
        rev.groupby(["account_id", "period"], as_index=False, observed=True)
        .agg(mrr=("amount", "sum"), products=("product_id", "nunique"))
        .sort_values(["account_id", "period"], ignore_index=True)
    )


def churn_events(tables: CrmTables) -> pd.DataFrame:
    """(account_id, stopped_at): each month start where recurring revenue stopped."""
    months = _recurring_months(tables)
    following = months["period"] + pd.offsets.MonthBegin(1)
    nxt = months.groupby("account_id")["period"].shift(-1)
    stopped = nxt.isna() | (nxt != following)
    last_recorded = months["period"].max() if len(months) else pd.NaT
    events = pd.DataFrame(
        {"account_id": months.loc[stopped, "account_id"], "stopped_at": following[stopped]}
    )
    # a stop is seen only once the month without revenue has been recorded
    return events[events["stopped_at"] <= last_recorded].reset_index(drop=True)


def account_snapshots(tables: CrmTables, as_of_dates: Sequence[pd.Timestamp]) -> pd.DataFrame:
    """(account_id, as_of) for accounts billed recurring revenue in the last ended month."""
    months = _recurring_months(tables)
    frames = []
    for as_of in pd.DatetimeIndex(sorted(set(pd.DatetimeIndex(as_of_dates)))).as_unit("ns"):
        last_ended = (as_of.to_period("M") - 1).start_time
        active = months.loc[months["period"] == last_ended, "account_id"]
        frames.append(pd.DataFrame({"account_id": active.to_numpy(), "as_of": as_of}))
    if not frames:
        return pd.DataFrame({"account_id": [], "as_of": pd.Series([], dtype="datetime64[ns]")})
    return pd.concat(frames, ignore_index=True)


def billed_until(tables: CrmTables) -> pd.Timestamp:
    """The end of the last month any account was billed recurring revenue (NaT: none): a stop
    after it is not seen yet."""
    months = _recurring_months(tables)
    return months["period"].max() + pd.offsets.MonthBegin(1) if len(months) else pd.NaT


def churn_labels(
    tables: CrmTables,
    snapshots: pd.DataFrame,
    *,
    horizon_days: int = HORIZON_DAYS,
    seen_until: pd.Timestamp | None = None,
) -> pd.Series:
    """1 if recurring revenue stops after the last month seen at as_of and within the horizon,
    0 if not, NaN if not yet knowable: the horizon ends after `seen_until` (default:
    `billed_until(tables)`; a part of a store in parts is given the whole store's)."""
    events = churn_events(tables)
    seen_until = billed_until(tables) if seen_until is None else seen_until
    horizon = pd.Timedelta(days=horizon_days)
    merged = snapshots[["account_id", "as_of"]].merge(events, on="account_id", how="left")
    # a stop at the start of the as_of's own month is not seen yet (that month has not ended):
    # the account looks billed and its renewal is still pending, so the stop counts
    unseen_from = merged["as_of"].dt.to_period("M").dt.start_time
    hit = (merged["stopped_at"] >= unseen_from) & (
        merged["stopped_at"] <= merged["as_of"] + horizon
    )
    churned = hit.groupby([merged["account_id"], merged["as_of"]]).any()
    keys = pd.MultiIndex.from_frame(snapshots[["account_id", "as_of"]])
    label = churned.reindex(keys).to_numpy(dtype=float)
    knowable = (snapshots["as_of"] + horizon < seen_until).to_numpy()
    return pd.Series(np.where(knowable, label, np.nan), index=snapshots.index, name="churned")


def account_features(tables: CrmTables, snapshots: pd.DataFrame) -> pd.DataFrame:
    """Features for each (account_id, as_of) row of `snapshots`, in the same order."""
    accounts = tables.accounts
    index = pd.Index(accounts["account_id"].to_numpy())
    pairs = pd.DataFrame(
        {
            "row": np.arange(len(snapshots)),
            "account": index.get_indexer(snapshots["account_id"].to_numpy()),
            "as_of": pd.DatetimeIndex(snapshots["as_of"]).as_unit("ns").to_numpy(),
        }
    )
    if (pairs["account"] < 0).any():
        missing = snapshots["account_id"][pairs["account"].to_numpy() < 0].iloc[0]
        raise KeyError(f"snapshot account_id {missing!r} is not in the accounts table")
    pairs = pairs.sort_values("as_of", kind="stable").reset_index(drop=True)
    out = pd.DataFrame({"row": pairs["row"]})
    as_of = pairs["as_of"]
    created = accounts["created_at"].to_numpy()[pairs["account"]]
    out["tenure_days"] = (as_of.to_numpy() - created) / np.timedelta64(1, "D")

    _add_revenue(out, pairs, tables, index)
    _add_signals(out, pairs, tables, index)
    _add_touches(out, pairs, tables, index)
    _add_open_deals(out, pairs, tables, index)
    for column in ("employees", "segment", "industry", "region"):
        values = accounts[column].to_numpy()[pairs["account"]]
        out[column] = values.astype(float) if column == "employees" else values
    out = out.sort_values("row").reset_index(drop=True).drop(columns="row")
    keys = snapshots[["account_id", "as_of"]].reset_index(drop=True)
    return pd.concat([keys, out[list(ACCOUNT_FEATURE_NAMES)]], axis=1).set_index(snapshots.index)


def churn_training_frame(
    tables: CrmTables,
    as_of_dates: Sequence[pd.Timestamp],
    *,
    horizon_days: int = HORIZON_DAYS,
    labelled_only: bool = True,
    features: Featurize | None = None,
    seen_until: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Account snapshots, their features and the `churned` label. `features`: how the features
    are computed (default `account_features`, in this process; on a cluster,
    `forecast.features.on_dask.account_features_on` with its client); `seen_until`: see
    `churn_labels`."""
    snapshots = account_snapshots(tables, as_of_dates)
    frame = (features or account_features)(tables, snapshots)
    labels = churn_labels(tables, snapshots, horizon_days=horizon_days, seen_until=seen_until)
    frame["churned"] = labels.to_numpy()
    if labelled_only:
        frame = frame[frame["churned"].notna()].reset_index(drop=True)
    return frame


# --- building blocks -------------------------------------------------------------------------


def _add_revenue(out: pd.DataFrame, pairs: pd.DataFrame, tables: CrmTables, index: pd.Index):
    months = _recurring_months(tables)
    recurring = pd.DataFrame(
        {
            "account": index.get_indexer(months["account_id"].to_numpy()),
            "known_at": (months["period"] + pd.offsets.MonthBegin(1)).to_numpy(),
            "mrr": months["mrr"].to_numpy(dtype=float),
            "products": months["products"].to_numpy(dtype=float),
            "n": np.ones(len(months)),
        }
    )
    last = asof_join(pairs, recurring, "account", "as_of", "known_at")
    out["mrr"] = last["mrr"].fillna(0.0).to_numpy()
    out["recurring_products"] = last["products"].fillna(0.0).to_numpy()
    back = pairs.assign(as_of=pairs["as_of"] - pd.Timedelta(days=91))
    earlier = asof_join(back, recurring, "account", "as_of", "known_at")
    base = earlier["mrr"].to_numpy()
    out["mrr_change_3m"] = np.where(
        base > 0, out["mrr"].to_numpy() / np.where(base > 0, base, 1) - 1, 0.0
    )
    count = running_sums(recurring, "account", "known_at", {"n": recurring["n"].to_numpy()})
    out["months_subscribed"] = running_at(pairs, count, "account", "known_at")["n"].to_numpy()

    rev = tables.revenue
    all_rev = pd.DataFrame(
        {
            "account": index.get_indexer(rev["account_id"].to_numpy()),
            "known_at": (rev["period"] + pd.offsets.MonthBegin(1)).to_numpy(),
        }
    )
    sums = running_sums(all_rev, "account", "known_at", {"amount": rev["amount"].to_numpy(float)})
    now = running_at(pairs, sums, "account", "known_at")
    year = running_at(pairs, sums, "account", "known_at", shift_days=365)
    out["revenue_365d"] = (now["amount"] - year["amount"]).to_numpy()

    contract = rev[rev["kind"] == "recurring"]
    ends = pd.DataFrame(
        {
            "account": index.get_indexer(contract["account_id"].to_numpy()),
            "known_at": (contract["period"] + pd.offsets.MonthBegin(1)).to_numpy(),
            "contract_end": contract["contract_end"].to_numpy(),
        }
    )
    ends = ends.groupby(["account", "known_at"], as_index=False)["contract_end"].max()
    at = asof_join(pairs, ends, "account", "as_of", "known_at")
    out["days_to_contract_end"] = ((at["contract_end"] - pairs["as_of"]).dt.days).to_numpy(float)


def _signal_frame(tables: CrmTables, index: pd.Index, kind: str) -> pd.DataFrame:
    sig = tables.signals[tables.signals["kind"] == kind]
    return pd.DataFrame(
        {
            "account": index.get_indexer(sig["account_id"].to_numpy()),
            "at": sig["at"].to_numpy(),
            "value": sig["value"].to_numpy(dtype=float),
            "n": np.ones(len(sig)),
        }
    )


def _windowed(pairs: pd.DataFrame, frame: pd.DataFrame, days: int) -> pd.DataFrame:
    """Count and sum of values per account in (as_of - days, as_of]."""
    sums = running_sums(
        frame, "account", "at", {"n": frame["n"].to_numpy(), "value": frame["value"].to_numpy()}
    )
    now = running_at(pairs, sums, "account", "at")
    then = running_at(pairs, sums, "account", "at", shift_days=days)
    return now[["n", "value"]] - then[["n", "value"]].to_numpy()


def _add_signals(out: pd.DataFrame, pairs: pd.DataFrame, tables: CrmTables, index: pd.Index):
    tickets = _signal_frame(tables, index, "support_ticket")
    for days in SIGNAL_WINDOWS:
        window = _windowed(pairs, tickets, days)
        out[f"tickets_{days}d"] = window["n"].to_numpy()
        if days == 90:
            n = window["n"].to_numpy()
            out["ticket_severity_90d"] = np.where(
                n > 0, window["value"].to_numpy() / np.maximum(n, 1), 0.0
            )

    for kind, name, back_days in (("satisfaction", "satisfaction", 0), ("usage", "usage", 91)):
        frame = _signal_frame(tables, index, kind)
        last = asof_join(pairs, frame[["account", "at", "value"]], "account", "as_of", "at")
        out[f"{name}_last"] = last["value"].to_numpy()
        if kind == "satisfaction":
            # the score before the last one, to see which way it moves
            previous = frame.assign(prev=frame.groupby("account")["value"].shift())
            prev_at = asof_join(
                pairs, previous[["account", "at", "prev"]], "account", "as_of", "at"
            )
            out["satisfaction_change"] = (last["value"] - prev_at["prev"]).to_numpy()
        else:
            back = pairs.assign(as_of=pairs["as_of"] - pd.Timedelta(days=back_days))
            earlier = asof_join(back, frame[["account", "at", "value"]], "account", "as_of", "at")
            out["usage_change_3m"] = (last["value"] - earlier["value"]).to_numpy()

    delays = _signal_frame(tables, index, "payment_delay")
    window = _windowed(pairs, delays, 180)
    out["payment_delays_180d"] = window["n"].to_numpy()
    # the largest delay in the window: a running max cannot be differenced, so look back per row
    out["payment_delay_days_max_180d"] = _window_max(pairs, delays, 180)


def _window_max(pairs: pd.DataFrame, frame: pd.DataFrame, days: int) -> np.ndarray:
    """Largest value per account in (as_of - days, as_of], 0 when there is none."""
    if frame.empty:
        return np.zeros(len(pairs))
    joined = pairs[["account", "as_of"]].reset_index().merge(frame, on="account", how="inner")
    inside = (joined["at"] <= joined["as_of"]) & (
        joined["at"] > joined["as_of"] - pd.Timedelta(days=days)
    )
    best = joined[inside].groupby("index")["value"].max()
    return best.reindex(pairs.index).fillna(0.0).to_numpy()


def _add_touches(out: pd.DataFrame, pairs: pd.DataFrame, tables: CrmTables, index: pd.Index):
    acts = tables.activities[tables.activities["account_id"].notna()]
    owner = tables.accounts.set_index("account_id")["owner_rep_id"]
    by_owner = acts["rep_id"].to_numpy() == owner.reindex(acts["account_id"].to_numpy()).to_numpy()
    frame = pd.DataFrame(
        {
            "account": index.get_indexer(acts["account_id"].to_numpy()),
            "at": acts["at"].to_numpy(),
            "n": np.ones(len(acts)),
            "value": np.zeros(len(acts)),
        }
    )
    out["touches_90d"] = _windowed(pairs, frame, 90)["n"].to_numpy()
    mine = frame[by_owner]
    last = asof_join(pairs, mine[["account", "at"]], "account", "as_of", "at")
    since = (pairs["as_of"] - last["at"]).dt.total_seconds() / 86400
    out["days_since_rep_touch"] = since.fillna(out["tenure_days"]).to_numpy()


def _add_open_deals(out: pd.DataFrame, pairs: pd.DataFrame, tables: CrmTables, index: pd.Index):
    """Deals on the account that were open at as_of, and their amount, from deal history."""
    history = tables.deal_history
    account_of = tables.deals.set_index("deal_id")["account_id"]
    account = index.get_indexer(account_of.reindex(history["deal_id"].to_numpy()).to_numpy())
    is_open = history["stage"].isin(OPEN_STAGES).to_numpy()
    amount = history["amount"].to_numpy(dtype=float)
    # each history row moves the account's open count and pipeline by the change it records
    frame = pd.DataFrame(
        {
            "deal": history["deal_id"].to_numpy(),
            "account": account,
            "at": history["changed_at"].to_numpy(),
            "open": is_open.astype(float),
            "pipeline": np.where(is_open, amount, 0.0),
        }
    ).sort_values(["deal", "at"], kind="stable")
    grouped = frame.groupby("deal", sort=False)
    frame["d_open"] = frame["open"] - grouped["open"].shift(fill_value=0.0)
    frame["d_pipeline"] = frame["pipeline"] - grouped["pipeline"].shift(fill_value=0.0)
    frame = frame[frame["account"] >= 0]
    sums = running_sums(
        frame,
        "account",
        "at",
        {"d_open": frame["d_open"].to_numpy(), "d_pipeline": frame["d_pipeline"].to_numpy()},
    )
    at = running_at(pairs, sums, "account", "at")
    out["open_deals"] = at["d_open"].round(9).to_numpy()
    out["open_pipeline"] = at["d_pipeline"].round(6).to_numpy()
