"""Rep and team coaching on a generated world whose reps' weak stages are known."""

from __future__ import annotations

import pandas as pd
import pytest

from forecast.coaching import coach_rep, coach_team, funnel
from forecast.datasets import make_crm
from forecast.schema import OPEN_STAGES


@pytest.fixture(scope="module")
def world():
    return make_crm(30_000, seed=0)


def test_a_rep_with_a_lowered_proposal_conversion_is_told_so(world):
    truth = world.truth.reps
    weak = truth.loc[truth["weak_stage"] == "proposal", "rep_id"].tolist()
    assert weak, "the default world has reps with a weak proposal stage"
    for rep_id in weak:
        view = coach_rep(world.tables, rep_id, window_days=730)
        assert view.bottleneck == "proposal", (rep_id, view.funnel)
        topics = [f.topic for f in view.findings]
        assert "conversion out of proposal" in topics
        finding = view.findings[topics.index("conversion out of proposal")]
        assert finding.gap < 0 and "proposal" in finding.focus.lower()


def test_weak_stages_are_found_for_most_reps_that_have_one(world):
    truth = world.truth.reps.dropna(subset=["weak_stage"])
    found = [
        coach_rep(world.tables, r, window_days=730).bottleneck == s
        for r, s in zip(truth["rep_id"], truth["weak_stage"], strict=True)
    ]
    assert sum(found) / len(found) >= 0.7


def test_coaching_reads_only_the_past(world):
    t = world.tables
    as_of = pd.Timestamp("2025-06-30")
    rep_id = t.reps.loc[t.reps["role"] == "rep", "rep_id"].iloc[3]
    before = coach_rep(t, rep_id, as_of=as_of)
    history = t.deal_history.copy()
    later = history["changed_at"] > as_of
    history.loc[later, "stage"] = "closed_lost"
    acts = t.activities[t.activities["at"] <= as_of]
    after = coach_rep(t.replace(deal_history=history, activities=acts), rep_id, as_of=as_of)
    pd.testing.assert_frame_equal(before.funnel, after.funnel)
    assert before.findings == after.findings


def test_funnel_rates_are_shares_of_deals_reaching_each_stage():
    closed = pd.DataFrame({"furthest": [0, 1, 1, 2, 4, 4]})
    f = funnel(closed)
    assert list(f.index) == list(OPEN_STAGES)
    assert f.loc["prospecting", "deals"] == 6
    assert f.loc["prospecting", "rate"] == pytest.approx(5 / 6)
    assert f.loc["negotiation", "rate"] == pytest.approx(1.0)


def test_team_view_orders_reps_by_revenue_at_stake(world):
    team = world.tables.reps.loc[world.tables.reps["role"] == "rep", "team"].iloc[0]
    views = coach_team(world.tables, team)
    stakes = [v.revenue_at_stake for v in views]
    assert stakes == sorted(stakes, reverse=True)
    assert {v.team for v in views} == {team}


def test_unknown_rep_and_team_are_named(world):
    with pytest.raises(KeyError, match="R9999"):
        coach_rep(world.tables, "R9999")
    with pytest.raises(KeyError, match="Atlantis"):
        coach_team(world.tables, "Atlantis")
