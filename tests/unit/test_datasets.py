"""The generator: seeded, deterministic, consistent with its own truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecast.data.contract import OPEN_STAGES
from forecast.data.schema import TABLES
from forecast.data.world import make_crm


def test_same_seed_same_world():
    a, b = make_crm(400, seed=7), make_crm(400, seed=7)
    for name, frame in a.tables.items():
        pd.testing.assert_frame_equal(frame, b.tables[name], obj=name)
    pd.testing.assert_frame_equal(a.truth.deal_advance, b.truth.deal_advance)


def test_other_seed_other_world():
    a, b = make_crm(400, seed=1), make_crm(400, seed=2)
    assert not a.tables.deals["amount"].equals(b.tables.deals["amount"])


def test_tiny_world_is_complete():
    # how fast worlds are made is measured by `make bench-generate`, not asserted here
    world = make_crm(300, seed=0)
    for name, frame in world.tables.items():
        # deal attributes are what an export adds beyond the contract, and orders what a
        # business without subscriptions exports: a generated CRM has neither
        assert len(frame) > 0 or name in ("deal_attributes", "orders"), f"{name} is empty"
        assert list(frame.columns) == TABLES[name].column_names


def test_nothing_is_recorded_after_as_of():
    world = make_crm(500, seed=3, as_of="2025-03-20")
    t = world.tables
    assert t.as_of == pd.Timestamp("2025-03-20")
    for frame, column in [
        (t.deals, "created_at"),
        (t.deals, "closed_at"),
        (t.deal_history, "changed_at"),
        (t.activities, "at"),
        (t.signals, "at"),
    ]:
        assert frame[column].max() <= t.as_of, column
    # a month's revenue is known once it has ended
    assert (t.revenue["period"] + pd.offsets.MonthBegin(1)).max() <= t.as_of


def test_deals_row_is_the_last_history_state():
    t = make_crm(600, seed=4).tables
    last = t.deal_history.groupby("deal_id").tail(1).set_index("deal_id")
    deals = t.deals.set_index("deal_id")
    assert (last["stage"] == deals.loc[last.index, "stage"]).all()
    np.testing.assert_allclose(last["amount"], deals.loc[last.index, "amount"])
    assert (t.deal_history.groupby("deal_id")["changed_at"].min() == deals["created_at"]).all()


def test_open_outcome_matches_stage_and_close():
    deals = make_crm(600, seed=5).tables.deals
    is_open = deals["outcome"] == "open"
    assert deals.loc[is_open, "stage"].isin(OPEN_STAGES).all()
    assert deals.loc[is_open, "closed_at"].isna().all()
    assert (deals.loc[~is_open, "closed_at"] >= deals.loc[~is_open, "created_at"]).all()
    assert (deals.loc[deals["outcome"] == "won", "stage"] == "closed_won").all()


def test_truth_win_probability_falls_with_stages_ahead():
    world = make_crm(300, seed=6)
    ids = world.tables.deals["deal_id"].head(50)
    early = world.truth.win_probability(ids, pd.Series(["prospecting"] * 50))
    late = world.truth.win_probability(ids, pd.Series(["negotiation"] * 50))
    assert (early <= late).all()
    assert ((early > 0) & (late < 1)).all()
    with pytest.raises(ValueError, match="open stages"):
        world.truth.win_probability(ids.head(1), pd.Series(["closed_won"]))


def test_truth_churn_probability_is_zero_far_from_renewals():
    world = make_crm(2000, seed=8)
    accounts = world.truth.account_months["account_id"].drop_duplicates()
    far_future = world.tables.as_of + pd.Timedelta(days=3650)
    assert (world.truth.churn_probability(accounts, as_of=far_future) == 0).all()
    now = world.truth.churn_probability(accounts, as_of=world.tables.as_of - pd.Timedelta(days=200))
    assert 0 < now.mean() < 0.5


def test_dirt_keeps_the_world_valid_but_untidy():
    clean, dirty = make_crm(800, seed=9), make_crm(800, seed=9, dirt=0.05)
    assert len(dirty.tables.activities) > len(clean.tables.activities)
    assert dirty.tables.accounts["employees"].isna().sum() > 0
    assert clean.tables.accounts["employees"].isna().sum() == 0


@pytest.mark.parametrize("kwargs", [{"n_deals": 10}, {"n_deals": 500, "dirt": 0.9}])
def test_bad_parameters_are_named(kwargs):
    with pytest.raises(ValueError, match=r"n_deals|dirt"):
        make_crm(**kwargs)
