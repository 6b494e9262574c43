"""Deal features: checked against a slow, obviously-right loop, and proven blind to the future."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from forecast.data.contract import CLOSED_STAGES
from forecast.data.tables import CrmTables
from forecast.data.world import make_crm
from forecast.features import deal_own
from forecast.features.deal_schema import (
    ACTIVITY_WINDOWS,
    COUNTED_KINDS,
    FEATURE_NAMES,
    RECORD_DAYS,
    SHRINK_DEALS,
    TRAILING_DAYS,
)
from forecast.features.deals import deal_features, deal_snapshots, snapshot_dates, won_labels

DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def world():
    return make_crm(900, seed=11, start="2024-01-01", as_of="2025-06-30")


@pytest.fixture(scope="module")
def as_of_dates(world):
    return snapshot_dates("2024-03-01", "2025-06-30", freq="4W-SUN")


def slow_deal_features(
    t: CrmTables, deal_id: str, as_of: pd.Timestamp, record_days: int = RECORD_DAYS
) -> dict:
    """Every feature for one deal at one moment, by plain filtering: the oracle."""
    deal = t.deals.set_index("deal_id").loc[deal_id]
    hist = t.deal_history[
        (t.deal_history["deal_id"] == deal_id) & (t.deal_history["changed_at"] <= as_of)
    ].sort_values("changed_at")
    now = hist.iloc[-1]
    stage_start = now["changed_at"]
    for _, row in hist.iloc[::-1].iterrows():
        if row["stage"] != now["stage"]:
            break
        stage_start = row["changed_at"]
    amounts = hist["amount"].to_list()
    closes = hist["expected_close"].to_list()
    quarter = as_of.to_period("Q")
    f = {
        "stage": now["stage"],
        "days_in_stage": (as_of - stage_start) / DAY,
        "deal_age_days": (as_of - deal["created_at"]) / DAY,
        "amount": now["amount"],
        "amount_change_ratio": now["amount"] / amounts[0],
        "amount_changes": sum(a != b for a, b in itertools.pairwise(amounts)),
        "close_pushes": sum(b > a for a, b in itertools.pairwise(closes)),
        "days_to_expected_close": (now["expected_close"] - as_of) / DAY,
        "expected_close_in_quarter": float(now["expected_close"] <= quarter.end_time),
        "has_next_step": float(pd.notna(now["next_step"])),
        "days_into_quarter": (as_of - quarter.start_time).days,
        "days_left_in_quarter": (quarter.end_time.normalize() - as_of).days,
    }
    acts = t.activities[(t.activities["deal_id"] == deal_id) & (t.activities["at"] <= as_of)]
    for w in ACTIVITY_WINDOWS:
        f[f"activities_{w}d"] = int((acts["at"] > as_of - w * DAY).sum())
    recent = acts[acts["at"] > as_of - 90 * DAY]
    for kind in COUNTED_KINDS:
        f[f"{kind}s_90d"] = int((recent["kind"] == kind).sum())
    f["days_since_last_activity"] = (
        (as_of - acts["at"].max()) / DAY if len(acts) else f["deal_age_days"]
    )
    f["activities_per_week"] = len(acts) / max(f["deal_age_days"] / 7, 1.0)

    # closes of any deal, as recorded in the history up to as_of
    closed = t.deal_history[
        t.deal_history["stage"].isin(CLOSED_STAGES) & (t.deal_history["changed_at"] <= as_of)
    ].merge(t.deals[["deal_id", "account_id", "rep_id"]], on="deal_id")
    account = t.accounts.set_index("account_id").loc[deal["account_id"]]
    mine = closed[closed["account_id"] == deal["account_id"]]
    f["account_prior_wins"] = int((mine["stage"] == "closed_won").sum())
    f["account_prior_losses"] = int((mine["stage"] == "closed_lost").sum())
    f["account_tenure_days"] = (as_of - account["created_at"]) / DAY
    rev = t.revenue[t.revenue["account_id"] == deal["account_id"]]
    known = rev["period"] + pd.offsets.MonthBegin(1)
    f["account_revenue_365d"] = rev.loc[
        (known <= as_of) & (known > as_of - TRAILING_DAYS * DAY), "amount"
    ].sum()

    reps = t.reps.set_index("rep_id")
    team = reps.loc[deal["rep_id"], "team"]
    last_year = closed[closed["changed_at"] > as_of - TRAILING_DAYS * DAY]
    window = closed[closed["changed_at"] > as_of - record_days * DAY]
    by_rep = window[window["rep_id"] == deal["rep_id"]]
    by_team = window[window["rep_id"].map(reps["team"]) == team]
    team_rate = ((by_team["stage"] == "closed_won").sum() + 1) / (len(by_team) + 3)
    f["rep_win_rate"] = ((by_rep["stage"] == "closed_won").sum() + SHRINK_DEALS * team_rate) / (
        len(by_rep) + SHRINK_DEALS
    )
    f["rep_closed_deals_365d"] = int((last_year["rep_id"] == deal["rep_id"]).sum())
    progress = {"prospecting": 0, "qualification": 1, "proposal": 2, "negotiation": 3}
    progress |= {"closed_won": 4, "closed_lost": -1}
    hist_all = t.deal_history[t.deal_history["changed_at"] <= as_of]
    furthest = hist_all["stage"].map(progress).groupby(hist_all["deal_id"]).max()
    at_stage = progress[f["stage"]]
    reached = window[window["deal_id"].map(furthest) >= at_stage]
    mine = reached[reached["rep_id"] == deal["rep_id"]]
    ours = reached[reached["rep_id"].map(reps["team"]) == team]
    prior = ((ours["stage"] == "closed_won").sum() + 1) / (len(ours) + 2)
    f["rep_stage_win_rate"] = ((mine["stage"] == "closed_won").sum() + SHRINK_DEALS * prior) / (
        len(mine) + SHRINK_DEALS
    )
    industry_of = t.accounts.set_index("account_id")["industry"]
    product_of = t.deals.set_index("deal_id")["product_id"]
    same_product = window[window["deal_id"].map(product_of) == deal["product_id"]]
    same_fit = same_product[
        same_product["account_id"].map(industry_of) == industry_of.get(deal["account_id"])
    ]
    prior = ((same_product["stage"] == "closed_won").sum() + 1) / (len(same_product) + 3)
    f["fit_win_rate"] = ((same_fit["stage"] == "closed_won").sum() + SHRINK_DEALS * prior) / (
        len(same_fit) + SHRINK_DEALS
    )
    f["rep_tenure_days"] = (as_of - reps.loc[deal["rep_id"], "hired_at"]) / DAY
    product = t.products.set_index("product_id").loc[deal["product_id"]]
    f["product_id"] = deal["product_id"]
    f["product_family"] = product["family"]
    for column in ("industry", "region", "segment"):
        f[column] = account[column]

    # first quotes (earliest recorded amount) of deals of this product in this segment, last year
    quoted = t.deal_history[
        (t.deal_history["changed_at"] <= as_of) & (t.deal_history["amount"] > 0)
    ].sort_values("changed_at")
    first = quoted.groupby("deal_id").head(1).set_index("deal_id")
    segment_of = t.accounts.set_index("account_id")["segment"]
    peers = first[
        (first["changed_at"] > as_of - TRAILING_DAYS * DAY)
        & (first.index.map(product_of) == deal["product_id"])
        & (
            first.index.map(t.deals.set_index("deal_id")["account_id"]).map(segment_of)
            == account["segment"]
        )
    ]
    own = np.log(first.loc[deal_id, "amount"]) if deal_id in first.index else np.nan
    f["amount_vs_typical"] = np.exp(own - np.log(peers["amount"]).mean()) if len(peers) else np.nan
    return f


def _fast_equals_slow(t: CrmTables, sample: pd.DataFrame, record_days: int = RECORD_DAYS) -> None:
    fast = deal_features(t, sample)
    assert list(fast.columns) == ["deal_id", "as_of", *FEATURE_NAMES]
    for i, row in sample.iterrows():
        expected = slow_deal_features(t, row["deal_id"], row["as_of"], record_days)
        for name in FEATURE_NAMES:
            got, want = fast.at[i, name], expected[name]
            if isinstance(want, str):
                assert got == want, (row["deal_id"], row["as_of"], name)
            else:
                assert np.isclose(got, want, rtol=1e-9, atol=1e-6), (
                    row["deal_id"],
                    row["as_of"],
                    name,
                    got,
                    want,
                )


def test_fast_features_equal_the_slow_loop(world, as_of_dates):
    snapshots = deal_snapshots(world.tables, as_of_dates)
    _fast_equals_slow(world.tables, snapshots.sample(n=150, random_state=0).reset_index(drop=True))


def test_the_win_rate_record_window_cuts_where_the_slow_loop_does(world, as_of_dates, monkeypatch):
    """This world is shorter than RECORD_DAYS: a short window makes its edge matter here."""
    monkeypatch.setattr(deal_own, "RECORD_DAYS", 120)  # where the record window is read
    snapshots = deal_snapshots(world.tables, as_of_dates[as_of_dates >= "2024-09-01"])
    sample = snapshots.sample(n=60, random_state=1).reset_index(drop=True)
    _fast_equals_slow(world.tables, sample, record_days=120)


def test_snapshots_are_the_deals_open_at_each_as_of(world, as_of_dates):
    t = world.tables
    snapshots = deal_snapshots(t, as_of_dates)
    for as_of in as_of_dates[::3]:
        hist = t.deal_history[t.deal_history["changed_at"] <= as_of]
        last = hist.sort_values("changed_at").groupby("deal_id")["stage"].last()
        expected = set(last.index[~last.isin(CLOSED_STAGES)])
        assert set(snapshots.loc[snapshots["as_of"] == as_of, "deal_id"]) == expected


def _with_future_changes(t: CrmTables, as_of: pd.Timestamp, seed: int) -> CrmTables:
    """Change or add, in every table, rows dated after `as_of`; leave the past as it was."""
    rng = np.random.default_rng(seed)
    hist = t.deal_history.copy()
    later = hist["changed_at"] > as_of
    hist.loc[later, "amount"] = hist.loc[later, "amount"] * 3 + 1
    hist.loc[later, "stage"] = np.where(rng.random(later.sum()) < 0.5, "closed_won", "closed_lost")
    first = hist.groupby("deal_id").head(1)
    extra_hist = first.assign(
        changed_at=as_of + pd.Timedelta(hours=5), stage="negotiation", amount=1.0
    )
    acts = t.activities.copy()
    extra_acts = acts.head(500).assign(
        activity_id=lambda f: "Z" + f["activity_id"], at=as_of + pd.Timedelta(minutes=1)
    )
    acts.loc[acts["at"] > as_of, "kind"] = "demo"
    revenue = t.revenue.copy()
    revenue.loc[revenue["period"] >= as_of.to_period("M").start_time, "amount"] *= 10
    signals = t.signals.copy()
    signals.loc[signals["at"] > as_of, "value"] = -1
    return t.replace(
        deal_history=pd.concat([hist, extra_hist], ignore_index=True),
        activities=pd.concat([acts, extra_acts], ignore_index=True),
        revenue=revenue,
        signals=signals,
    )


def with_future_people_and_things(t: CrmTables, as_of: pd.Timestamp) -> CrmTables:
    """The static tables' future: reps hired and accounts opened after `as_of` (with deals of
    their own), reps who leave after it, a product launched after it that some later deal sells.
    None of it was known at `as_of`."""
    reps = t.reps.copy()
    sellers = reps[reps["role"] == "rep"]
    leaving = sellers["rep_id"].iloc[::3]
    reps.loc[reps["rep_id"].isin(leaving), "left_at"] = as_of + 20 * DAY
    hired = sellers.head(3).assign(
        rep_id=lambda f: "RNEW" + f["rep_id"], name="New Hire", hired_at=as_of + 10 * DAY,
        left_at=pd.NaT,
    )  # fmt: skip
    accounts = t.accounts.copy()
    opened = accounts.head(40).assign(
        account_id=lambda f: "ANEW" + f["account_id"], created_at=as_of + 3 * DAY,
        owner_rep_id=hired["rep_id"].iloc[0], industry="Shipping", segment="enterprise",
    )  # fmt: skip
    products = pd.concat(
        [t.products, t.products.head(1).assign(product_id="PNEW", name="Launched later")],
        ignore_index=True,
    )
    # deals the newcomers open after as_of, selling the new product, won and lost
    outcome = np.resize(["won", "lost"], 40)
    deals = t.deals.head(40).assign(
        deal_id=lambda f: "DNEW" + f["deal_id"], account_id=opened["account_id"].to_numpy(),
        rep_id=np.resize(hired["rep_id"].to_numpy(), 40), product_id="PNEW",
        created_at=as_of + 5 * DAY, closed_at=as_of + 60 * DAY, outcome=outcome,
        stage=np.where(outcome == "won", "closed_won", "closed_lost"),
    )  # fmt: skip
    opening = deals[["deal_id", "created_at", "amount", "expected_close"]].rename(
        columns={"created_at": "changed_at"}
    )
    closing = deals[["deal_id", "closed_at", "stage", "amount", "expected_close"]].rename(
        columns={"closed_at": "changed_at"}
    )
    history = pd.concat([opening.assign(stage="prospecting"), closing], ignore_index=True)
    return t.replace(
        reps=pd.concat([reps, hired], ignore_index=True),
        accounts=pd.concat([accounts, opened], ignore_index=True),
        products=products,
        deals=pd.concat([t.deals, deals], ignore_index=True),
        deal_history=pd.concat([t.deal_history, history], ignore_index=True),
    )


@pytest.mark.parametrize("as_of", ["2024-06-02", "2025-03-30"])
def test_features_ignore_future_reps_accounts_and_products(world, as_of):
    as_of = pd.Timestamp(as_of)
    t = world.tables
    snapshots = deal_snapshots(t, [as_of])
    before = deal_features(t, snapshots)
    changed = with_future_people_and_things(t, as_of)
    pd.testing.assert_frame_equal(deal_snapshots(changed, [as_of]), snapshots)
    pd.testing.assert_frame_equal(deal_features(changed, snapshots), before)
    # the future is real: a month later the newcomers' deals are open and scored
    later = deal_snapshots(changed, [as_of + 30 * DAY])
    newcomers = deal_features(changed, later[later["deal_id"].str.startswith("DNEW")])
    assert len(newcomers) == 40 and (newcomers["product_id"] == "PNEW").all()


@pytest.mark.parametrize("as_of", ["2024-06-02", "2024-11-17", "2025-03-30"])
def test_features_ignore_the_future(world, as_of):
    as_of = pd.Timestamp(as_of)
    t = world.tables
    snapshots = deal_snapshots(t, [as_of])
    before = deal_features(t, snapshots)
    changed = _with_future_changes(t, as_of, seed=1)
    pd.testing.assert_frame_equal(deal_snapshots(changed, [as_of]), snapshots)
    pd.testing.assert_frame_equal(deal_features(changed, snapshots), before)


def test_features_never_read_the_final_state_of_deals(world, as_of_dates):
    """Final stage, outcome, closed_at and amount may change freely: features do not move."""
    t = world.tables
    snapshots = deal_snapshots(t, as_of_dates)
    before = deal_features(t, snapshots)
    deals = t.deals.copy()
    deals["stage"] = "closed_lost"
    deals["outcome"] = "lost"
    deals["closed_at"] = pd.Timestamp("2030-01-01")
    deals["amount"] = 0.0
    deals["expected_close"] = pd.Timestamp("2030-01-01")
    deals["discount"] = 0.9
    scrambled = t.replace(deals=deals)
    pd.testing.assert_frame_equal(deal_snapshots(scrambled, as_of_dates), snapshots)
    pd.testing.assert_frame_equal(deal_features(scrambled, snapshots), before)


def test_labels_come_from_the_outcome_and_open_deals_have_none(world, as_of_dates):
    t = world.tables
    snapshots = deal_snapshots(t, as_of_dates)
    labels = won_labels(t, snapshots)
    outcome = snapshots["deal_id"].map(t.deals.set_index("deal_id")["outcome"])
    assert (labels[outcome == "won"] == 1).all()
    assert (labels[outcome == "lost"] == 0).all()
    assert labels[outcome == "open"].isna().all()


def test_features_keep_the_snapshot_order_and_index(world, as_of_dates):
    t = world.tables
    snapshots = deal_snapshots(t, as_of_dates).sample(frac=1.0, random_state=3)
    features = deal_features(t, snapshots)
    assert features.index.equals(snapshots.index)
    assert (features["deal_id"].to_numpy() == snapshots["deal_id"].to_numpy()).all()


def test_unknown_deal_is_named(world):
    with pytest.raises(KeyError, match="NOPE"):
        deal_features(
            world.tables, pd.DataFrame({"deal_id": ["NOPE"], "as_of": [pd.Timestamp("2025-01-05")]})
        )
