"""Rep and team coaching on a generated world whose reps' weak stages are known."""

from __future__ import annotations

import pandas as pd
import pytest

from forecast.coaching import coach_rep, coach_team, funnel
from forecast.data.contract import OPEN_STAGES
from forecast.data.world import make_crm


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
    # a rep asked for by name is told the id to use
    rep = world.tables.reps.iloc[3]
    with pytest.raises(KeyError) as by_name:
        coach_rep(world.tables, rep["name"].upper())
    assert f"is {rep['rep_id']!r}" in str(by_name.value)
    no_reps = world.tables.replace(reps=world.tables.reps.iloc[:0])
    with pytest.raises(KeyError, match="the stored CRM has no reps"):
        coach_team(no_reps, "NA 1")


def test_every_finding_of_every_rep_is_in_plain_words_with_units(world):
    """Over the whole sales floor: no raw names, no NaN, each figure with its unit."""
    sellers = world.tables.reps.loc[world.tables.reps["role"] == "rep", "rep_id"]
    checked = 0
    for rep_id in sellers:
        for finding in coach_rep(world.tables, rep_id).findings:
            checked += 1
            text = finding.text
            assert "_" not in text and "nan" not in text.lower(), text
            assert "(team " in text and ("%" in text or " days" in text), text
            if finding.unit == "share":
                assert f"{finding.rep:.0%}" in text and f"team {finding.team:.0%}" in text
    assert checked > len(sellers)


def test_a_rep_with_too_few_closed_deals_is_not_judged_on_rates(world):
    t = world.tables
    as_of = pd.Timestamp("2026-11-15")
    rep_id = t.reps.loc[t.reps["role"] == "rep", "rep_id"].iloc[0]
    # keep only two of the rep's closes in the window: the rest of the team as it was
    history = t.deal_history
    mine = t.deals.loc[t.deals["rep_id"] == rep_id, "deal_id"]
    closes = history[
        history["deal_id"].isin(mine) & history["stage"].isin(["closed_won", "closed_lost"])
    ]
    dropped = closes.sort_values("changed_at")["deal_id"].iloc[:-2]
    few = t.replace(deal_history=history[~history["deal_id"].isin(dropped)])
    view = coach_rep(few, rep_id, as_of=as_of)
    assert view.closed_deals <= 2
    assert view.note is not None and "Too few deals to judge" in view.note and "10" in view.note
    assert view.bottleneck is None
    assert all(f.topic in ("stale", "pushed", "no_next_step") for f in view.findings)
    enough = coach_rep(t, rep_id, as_of=as_of)
    assert enough.note is None and enough.closed_deals >= 10


def _teams_of(world, sizes: dict[str, int]):
    """The world with its sellers regrouped into teams of the given sizes (the rest apart)."""
    from dataclasses import replace

    reps = world.tables.reps.copy()
    sellers = reps.loc[reps["role"] == "rep", "rep_id"].tolist()
    assigned, start = {}, 0
    for team, size in sizes.items():
        assigned |= dict.fromkeys(sellers[start : start + size], team)
        start += size
    reps["team"] = [assigned.get(r, f"apart {r}") for r in reps["rep_id"]]
    return replace(world.tables, reps=reps), assigned


def _group_figures(view) -> dict:
    """Every figure of the team in a rep's view, as the caller would receive it."""
    out = view.to_dict()
    figures = {"team_win_rate": out["team_win_rate"]}
    figures |= {
        f"funnel.{row['stage']}.{k}": v
        for row in out["funnel"]
        for k, v in row.items()
        if k.startswith("team_")
    }
    figures |= {f"finding.{f['topic']}": f["team"] for f in out["findings"]}
    for table in ("activity_mix", "win_rate_by_segment", "win_rate_by_product"):
        figures |= {f"{table}.{i}": row.get("team") for i, row in enumerate(out[table] or [])}
    return {k: v for k, v in figures.items() if v is not None and v == v}  # NaN: none


@pytest.mark.parametrize(("size", "withheld"), [(2, True), (3, True), (6, False)])
def test_a_rep_never_sees_team_figures_that_would_reveal_a_teammate(world, size, withheld):
    from forecast.coaching import withhold_small_groups

    tables, assigned = _teams_of(world, {"T": size})
    members = [r for r, t in assigned.items() if t == "T"]
    for rep_id in members:
        view = coach_rep(tables, rep_id, window_days=730)
        own = withhold_small_groups(view, frozenset({rep_id}), min_others=5)
        assert bool(own.withheld) is withheld
        assert bool(_group_figures(own)) is not withheld, _group_figures(own)
        assert own.win_rate == view.win_rate and own.funnel["rep_rate"].equals(
            view.funnel["rep_rate"]
        ), "the rep's own figures stay whole"
        # where withheld, the rep still learns where they are behind (a rank), never the gap
        assert [f.topic for f in own.findings] == [f.topic for f in view.findings]
        if withheld:
            assert all(f.gap != f.gap and "behind the team" in f.text for f in own.findings)
        # a manager who sees the whole team is shown everything
        whole = withhold_small_groups(view, frozenset(members), min_others=5)
        assert whole.withheld is None and _group_figures(whole) == _group_figures(view)


def test_in_a_team_of_two_the_unguarded_figures_would_give_the_teammate_exactly(world):
    """Why the guard exists: team minus own is the teammate (the leak the guard closes)."""
    tables, assigned = _teams_of(world, {"T": 2})
    me, mate = [r for r, t in assigned.items() if t == "T"]
    mine, theirs = (coach_rep(tables, r, window_days=730) for r in (me, mate))
    f = mine.funnel
    assert (f["team_deals"] - f["rep_deals"]).equals(theirs.funnel["rep_deals"])


def test_without_stage_history_no_funnel_is_made_up(world):
    """A deals-only export's derived history jumps from creation to the close: every closed deal
    would seem to pass every stage (100 %), so no funnel, bottleneck or stage finding is shown."""
    from forecast.data.derive import deals_only

    tables = deals_only(world.tables)
    rep = tables.deals["rep_id"].value_counts().index[0]
    view = coach_rep(tables, rep)
    assert view.funnel.empty and view.bottleneck is None
    assert "No stage history in the export" in (view.funnel_note or "")
    assert view.note is None  # "too few deals" is another note: the team page and digest read it
    assert not [f for f in view.findings if f.topic.startswith("conversion out of")]
    assert view.closed_deals > 0 and view.win_rate == view.win_rate  # the rest still judged
    assert coach_rep(world.tables, rep).funnel.shape[0] == len(OPEN_STAGES)
