"""Account features and churn labels: an oracle loop, and proof that the future is not read."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecast.data.contract import OPEN_STAGES
from forecast.data.tables import CrmTables
from forecast.data.world import make_crm
from forecast.features.accounts import (
    ACCOUNT_FEATURE_NAMES,
    account_features,
    account_snapshots,
    churn_labels,
    churn_snapshot_dates,
)

DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def world():
    return make_crm(2500, seed=21, start="2023-06-01", as_of="2025-09-30")


@pytest.fixture(scope="module")
def dates():
    return churn_snapshot_dates("2023-10-01", "2025-09-30")


def _last_before(frame: pd.DataFrame, column: str, time: str, as_of: pd.Timestamp):
    known = frame[frame[time] <= as_of].sort_values(time)
    return known[column].iloc[-1] if len(known) else np.nan


def slow_account_features(t: CrmTables, account_id: str, as_of: pd.Timestamp) -> dict:
    account = t.accounts.set_index("account_id").loc[account_id]
    rev = t.revenue[t.revenue["account_id"] == account_id].copy()
    rev["known_at"] = rev["period"] + pd.offsets.MonthBegin(1)
    rev = rev[rev["known_at"] <= as_of]
    recurring = rev[rev["kind"] == "recurring"]
    by_month = recurring.groupby("period").agg(mrr=("amount", "sum"), n=("product_id", "nunique"))
    last_month = by_month.index.max()
    f = {"tenure_days": (as_of - account["created_at"]) / DAY}
    f["months_subscribed"] = len(by_month)
    f["mrr"] = by_month.loc[last_month, "mrr"]
    f["recurring_products"] = by_month.loc[last_month, "n"]
    earlier = by_month[by_month.index + pd.offsets.MonthBegin(1) <= as_of - 91 * DAY]
    base = earlier["mrr"].iloc[-1] if len(earlier) else 0.0
    f["mrr_change_3m"] = f["mrr"] / base - 1 if base > 0 else 0.0
    f["revenue_365d"] = rev.loc[rev["known_at"] > as_of - 365 * DAY, "amount"].sum()
    ends = recurring[recurring["period"] == last_month]["contract_end"].max()
    f["days_to_contract_end"] = float((ends - as_of).days)

    sig = t.signals[(t.signals["account_id"] == account_id) & (t.signals["at"] <= as_of)]
    tickets = sig[sig["kind"] == "support_ticket"]
    for days in (30, 90):
        f[f"tickets_{days}d"] = int((tickets["at"] > as_of - days * DAY).sum())
    recent = tickets[tickets["at"] > as_of - 90 * DAY]
    f["ticket_severity_90d"] = recent["value"].mean() if len(recent) else 0.0
    sat = sig[sig["kind"] == "satisfaction"].sort_values("at")
    f["satisfaction_last"] = sat["value"].iloc[-1] if len(sat) else np.nan
    f["satisfaction_change"] = (
        sat["value"].iloc[-1] - sat["value"].iloc[-2] if len(sat) >= 2 else np.nan
    )
    usage = sig[sig["kind"] == "usage"]
    f["usage_last"] = _last_before(usage, "value", "at", as_of)
    f["usage_change_3m"] = f["usage_last"] - _last_before(usage, "value", "at", as_of - 91 * DAY)
    delays = sig[(sig["kind"] == "payment_delay") & (sig["at"] > as_of - 180 * DAY)]
    f["payment_delays_180d"] = len(delays)
    f["payment_delay_days_max_180d"] = delays["value"].max() if len(delays) else 0.0

    acts = t.activities[(t.activities["account_id"] == account_id) & (t.activities["at"] <= as_of)]
    f["touches_90d"] = int((acts["at"] > as_of - 90 * DAY).sum())
    mine = acts[acts["rep_id"] == account["owner_rep_id"]]
    f["days_since_rep_touch"] = (as_of - mine["at"].max()) / DAY if len(mine) else f["tenure_days"]

    deal_ids = t.deals.loc[t.deals["account_id"] == account_id, "deal_id"]
    hist = t.deal_history[
        t.deal_history["deal_id"].isin(deal_ids) & (t.deal_history["changed_at"] <= as_of)
    ]
    state = hist.sort_values("changed_at").groupby("deal_id").tail(1)
    open_now = state[state["stage"].isin(OPEN_STAGES)]
    f["open_deals"] = len(open_now)
    f["open_pipeline"] = open_now["amount"].sum()
    f["employees"] = float(account["employees"])
    for column in ("segment", "industry", "region"):
        f[column] = account[column]
    return f


def test_fast_account_features_equal_the_slow_loop(world, dates):
    t = world.tables
    snapshots = account_snapshots(t, dates).sample(n=120, random_state=1).reset_index(drop=True)
    fast = account_features(t, snapshots)
    assert list(fast.columns) == ["account_id", "as_of", *ACCOUNT_FEATURE_NAMES]
    for i, row in snapshots.iterrows():
        want = slow_account_features(t, row["account_id"], row["as_of"])
        for name in ACCOUNT_FEATURE_NAMES:
            got = fast.at[i, name]
            if isinstance(want[name], str):
                assert got == want[name], (row["account_id"], row["as_of"], name)
            elif pd.isna(want[name]):
                assert pd.isna(got), (row["account_id"], row["as_of"], name, got)
            else:
                assert np.isclose(got, want[name], rtol=1e-9, atol=1e-6), (
                    row["account_id"],
                    row["as_of"],
                    name,
                    got,
                    want[name],
                )


def test_labels_are_a_stop_of_recurring_revenue_within_the_horizon(world, dates):
    t = world.tables
    snapshots = account_snapshots(t, dates)
    labels = churn_labels(t, snapshots, horizon_days=90)
    rec = t.revenue[t.revenue["kind"] == "recurring"]
    billed = set(zip(rec["account_id"], rec["period"], strict=True))
    last_month = rec["period"].max()
    for i in snapshots.sample(n=300, random_state=2).index:
        account, as_of = snapshots.at[i, "account_id"], snapshots.at[i, "as_of"]
        months = pd.date_range(as_of.to_period("M").start_time, periods=5, freq="MS")
        stops = [
            m
            for m in months
            if (account, m - pd.offsets.MonthBegin(1)) in billed
            and (account, m) not in billed
            and m <= last_month
        ]
        # the stop at the start of as_of's month is not seen yet at as_of: it counts
        first_unseen = as_of.to_period("M").start_time
        expected = float(any(first_unseen <= m <= as_of + 90 * DAY for m in stops))
        if as_of + 90 * DAY >= last_month + pd.offsets.MonthBegin(1):
            assert np.isnan(labels[i])
        else:
            assert labels[i] == expected, (account, as_of)


def test_churn_rate_and_truth_agree(world, dates):
    t = world.tables
    snapshots = account_snapshots(t, dates)
    labels = churn_labels(t, snapshots)
    known = labels.notna()
    truth = np.concatenate(
        [
            world.truth.churn_probability(group["account_id"], as_of=as_of)
            for as_of, group in snapshots[known].groupby("as_of", sort=False)
        ]
    )
    ordered = pd.concat([g for _, g in snapshots[known].groupby("as_of", sort=False)])
    assert abs(truth.mean() - labels[ordered.index].mean()) < 0.02


def _with_future_changes(t: CrmTables, as_of: pd.Timestamp) -> CrmTables:
    signals = t.signals.copy()
    signals.loc[signals["at"] > as_of, "value"] = 0.0
    extra = signals.head(300).assign(
        signal_id=lambda f: "Z" + f["signal_id"], at=as_of + pd.Timedelta(hours=1)
    )
    revenue = t.revenue.copy()
    revenue.loc[revenue["period"] >= as_of.to_period("M").start_time, "amount"] *= 7
    acts = t.activities.copy()
    acts.loc[acts["at"] > as_of, "rep_id"] = acts["rep_id"].iloc[0]
    hist = t.deal_history.copy()
    hist.loc[hist["changed_at"] > as_of, "amount"] = 1.0
    return t.replace(
        signals=pd.concat([signals, extra], ignore_index=True),
        revenue=revenue,
        activities=acts,
        deal_history=hist,
    )


@pytest.mark.parametrize("as_of", ["2024-03-15", "2024-12-15", "2025-06-15"])
def test_account_features_ignore_the_future(world, as_of):
    as_of = pd.Timestamp(as_of)
    t = world.tables
    snapshots = account_snapshots(t, [as_of])
    before = account_features(t, snapshots)
    changed = _with_future_changes(t, as_of)
    pd.testing.assert_frame_equal(account_snapshots(changed, [as_of]), snapshots)
    pd.testing.assert_frame_equal(account_features(changed, snapshots), before)


@pytest.mark.parametrize("as_of", ["2024-12-15", "2025-06-15"])
def test_account_features_ignore_future_reps_accounts_and_products(world, as_of):
    from tests.pipelines.test_features_point_in_time import with_future_people_and_things

    as_of = pd.Timestamp(as_of)
    t = world.tables
    snapshots = account_snapshots(t, [as_of])
    before = account_features(t, snapshots)
    changed = with_future_people_and_things(t, as_of)
    pd.testing.assert_frame_equal(account_snapshots(changed, [as_of]), snapshots)
    pd.testing.assert_frame_equal(account_features(changed, snapshots), before)
