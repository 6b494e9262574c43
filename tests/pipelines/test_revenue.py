"""Quarterly revenue forecast: actuals against a plain loop, blind to the future, coherent up the
org tree, scenarios that change only what they touch, backtests and the command."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from forecast.data.tables import CrmTables
from forecast.data.world import make_crm
from forecast.features.asof import tables_as_of
from forecast.model import TreeParams
from forecast.revenue import (
    LEVELS,
    PARTS,
    AddedDeal,
    Scenario,
    Window,
    chain_moments,
    forecast_quarter,
    pending_renewals,
    prepare_quarter,
    simulate_quarter,
)
from forecast.revenue.backtest import backtest, week_as_of
from forecast.revenue.backtest_card import backtest_metrics, coverage_table
from forecast.revenue.backtest_log import log_backtest
from forecast.revenue.baselines import SERIES, known_series, naive_and_ets
from forecast.revenue.bookings import (
    UNASSIGNED,
    quarter_bounds,
    realised_bookings,
    recurring_months,
    renewal_decisions,
)
from forecast.revenue.lean import FALLBACK, live_lean, node_sources
from forecast.revenue.win_scorers import truth_scorer

QUARTER = "2025Q3"
AS_OF = pd.Timestamp("2025-08-04")  # week 6 of the quarter
DRAWS = 2_000


@pytest.fixture(scope="module")
def world():
    return make_crm(3_000, seed=5, start="2023-07-01", as_of="2025-11-20")


@pytest.fixture(scope="module")
def scorer(world):
    return truth_scorer(world.truth)


@pytest.fixture(scope="module")
def forecast(world, scorer):
    return forecast_quarter(
        world.tables, quarter=QUARTER, as_of=AS_OF, win_scorer=scorer, draws=DRAWS, seed=1
    )


# --- actuals ------------------------------------------------------------------------------------


def slow_bookings(t: CrmTables) -> dict[tuple[str, str], float]:
    """Won deals and renewals per (quarter, rep) by plain loops: the oracle."""
    out: dict[tuple[str, str], float] = {}

    def add(when: pd.Timestamp, rep: object, value: float) -> None:
        key = (str(when.to_period("Q")), UNASSIGNED if pd.isna(rep) else str(rep))
        out[key] = out.get(key, 0.0) + value

    rep_of = dict(zip(t.deals["deal_id"], t.deals["rep_id"], strict=True))
    for row in t.deal_history.itertuples():
        if row.stage == "closed_won":
            add(row.changed_at, rep_of[row.deal_id], float(row.amount))
    accounts = t.accounts.set_index("account_id")
    recurring = t.revenue[t.revenue["kind"] == "recurring"]
    for account, rows in recurring.groupby("account_id"):
        bills = rows.groupby("period")["amount"].sum()
        ends = rows.groupby("period")["contract_end"].max()
        segment = accounts.loc[account, "segment"]
        for month, bill in bills.items():
            term_ends_here = ends[month].to_period("M") == month.to_period("M")
            continues = (month + pd.offsets.MonthBegin(1)) in bills.index
            if term_ends_here and continues:
                add(
                    month,
                    accounts.loc[account, "owner_rep_id"],
                    bill * (1 if segment == "smb" else 12),
                )
    return out


def test_realised_bookings_equal_a_plain_loop(world):
    fast = realised_bookings(world.tables)
    expected = slow_bookings(world.tables)
    got = {(q, r): b for q, r, b in fast[["quarter", "rep_id", "bookings"]].itertuples(index=False)}
    keys = {k for k, v in got.items() if v} | set(expected)
    for key in keys:
        assert got.get(key, 0.0) == pytest.approx(expected.get(key, 0.0), rel=1e-9, abs=1e-6), key


def test_bookings_match_the_targets_basis(world):
    """Quotas are set on the same basis: over the history they are met about on average."""
    t = world.tables
    actual = realised_bookings(t).groupby("quarter")["bookings"].sum()
    target = t.targets[t.targets["level"] == "company"].set_index("period")["amount"]
    ratio = (actual / target).dropna()
    ratio = ratio[(ratio.index > "2024Q2") & (ratio.index < "2025Q4")]
    assert 0.8 < ratio.mean() < 1.25


# --- point in time ------------------------------------------------------------------------------


def _with_future_changes(t: CrmTables, as_of: pd.Timestamp) -> CrmTables:
    """Change or add rows dated after `as_of` in every table; the past stays as it was."""
    hist = t.deal_history.copy()
    later = hist["changed_at"] > as_of
    hist.loc[later, "amount"] = hist.loc[later, "amount"] * 3 + 1
    hist.loc[later, "stage"] = "closed_won"
    revenue = t.revenue.copy()
    revenue.loc[revenue["period"] >= as_of.to_period("M").start_time, "amount"] *= 10
    deals = t.deals.copy()
    deals["amount"] = deals["amount"] * 7  # the final state is never read
    signals = t.signals.copy()
    signals.loc[signals["at"] > as_of, "value"] = -1
    return t.replace(deal_history=hist, revenue=revenue, deals=deals, signals=signals)


@pytest.mark.parametrize("as_of", ["2025-07-01", "2025-08-04", "2025-09-29"])
def test_the_forecast_ignores_the_future(world, scorer, as_of):
    as_of = pd.Timestamp(as_of)
    t = world.tables
    kwargs = {"quarter": QUARTER, "as_of": as_of, "win_scorer": scorer, "draws": 500, "seed": 3}
    before = forecast_quarter(t, **kwargs)
    for changed in (tables_as_of(t, as_of), _with_future_changes(t, as_of)):
        after = forecast_quarter(changed, **kwargs)
        pd.testing.assert_frame_equal(after.nodes, before.nodes)
        pd.testing.assert_frame_equal(after.deals, before.deals)


# --- the distribution ---------------------------------------------------------------------------


def test_every_parent_is_the_sum_of_its_children(forecast):
    tree = forecast.inputs.tree
    for child, parent in itertools.pairwise(LEVELS):
        names, values = forecast.node_draws[child]
        parent_names, parent_values = forecast.node_draws[parent]
        parent_of = tree.parent(child).reindex(names).to_numpy()
        for i, name in enumerate(parent_names):
            children = np.asarray(values[parent_of == name], dtype=float)
            np.testing.assert_allclose(children.sum(axis=0), parent_values[i], rtol=1e-9)


def test_the_decomposition_adds_up_to_the_mean(forecast):
    nodes = forecast.nodes
    parts = nodes[list(PARTS)].sum(axis=1)
    np.testing.assert_allclose(parts, nodes["mean"], rtol=1e-5)
    assert (nodes["p10"] <= nodes["p50"]).all() and (nodes["p50"] <= nodes["p90"]).all()
    company = forecast.level("company").iloc[0]
    assert 0 <= company["p_reach_target"] <= 1
    assert company["closed"] > 0 and company["open"] > 0 and company["recurring"] > 0


def test_same_seed_same_forecast(world, scorer, forecast):
    again = forecast_quarter(
        world.tables, quarter=QUARTER, as_of=AS_OF, win_scorer=scorer, draws=DRAWS, seed=1
    )
    pd.testing.assert_frame_equal(again.nodes, forecast.nodes)


def test_a_quarter_already_over_is_what_was_booked(world, scorer):
    _start, end = quarter_bounds("2025Q1")
    late = end + pd.DateOffset(months=2)
    fc = forecast_quarter(world.tables, quarter="2025Q1", as_of=late, win_scorer=scorer, draws=200)
    actual = realised_bookings(world.tables, ["2025Q1"]).groupby("rep_id")["bookings"].sum()
    reps = fc.level("rep").set_index("node")
    np.testing.assert_allclose(reps["p10"], reps["p90"], rtol=1e-6)
    np.testing.assert_allclose(
        reps["mean"], actual.reindex(reps.index).fillna(0.0), rtol=1e-5, atol=1.0
    )


def test_without_a_users_table_each_owner_is_a_rep_of_their_own(world, scorer):
    """An export without users (a Dynamics opportunity list) still names the deals' owners: the
    rep level is theirs, not one unassigned row, and adds up to the company."""
    t = world.tables
    no_users = t.replace(reps=t.reps.iloc[0:0], targets=t.targets.iloc[0:0])
    _start, end = quarter_bounds("2025Q1")
    fc = forecast_quarter(
        no_users, quarter="2025Q1", as_of=end + pd.DateOffset(months=2), win_scorer=scorer,
        draws=200,
    )  # fmt: skip
    actual = realised_bookings(t, ["2025Q1"]).groupby("rep_id")["bookings"].sum()
    reps = fc.level("rep").set_index("node")
    assert set(actual.index) <= set(reps.index) and len(actual) >= 10
    np.testing.assert_allclose(reps["mean"].reindex(actual.index), actual, rtol=1e-5, atol=1.0)
    assert set(fc.level("team")["node"]) == {UNASSIGNED}
    np.testing.assert_allclose(reps["mean"].sum(), fc.level("company")["mean"].iloc[0], rtol=1e-9)


def test_the_drivers_are_the_deals_with_the_largest_variance(forecast):
    company = forecast.drivers[forecast.drivers["level"] == "company"]
    assert list(company["rank"]) == list(range(1, len(company) + 1))
    deals = forecast.deals[~forecast.deals["removed"]]
    top = deals.nlargest(len(company), "variance")["deal_id"].tolist()
    assert company["deal_id"].tolist() == top
    assert company["cumulative_share"].is_monotonic_increasing
    assert "of the uncertainty" in forecast.spread_sentence()
    # deals carrying next to nothing are not said to carry "0 %" as if that were a finding
    tiny = forecast.drivers.assign(variance_share=forecast.drivers["variance_share"] / 1_000)
    said = dataclasses.replace(forecast, drivers=tiny).spread_sentence()
    assert "0%" not in said and "no open deal carries much of the uncertainty" in said


# --- renewals -----------------------------------------------------------------------------------


def test_pending_renewals_fall_at_the_end_of_each_term(world):
    t = world.tables
    window = Window.of(QUARTER, AS_OF)
    chains, steps = pending_renewals(t, window)
    assert len(chains) and steps["month"].max() < window.end
    months = recurring_months(t, AS_OF)
    last = months[months["period"] == (AS_OF.to_period("M") - 1).start_time].set_index("account_id")
    annual = steps[steps["segment"] != "smb"]
    ends = last["contract_end"].reindex(annual["account_id"]).dt.to_period("M").to_numpy()
    assert (annual["month"].dt.to_period("M").to_numpy() == ends).all()
    smb = steps[steps["segment"] == "smb"].groupby("chain")["month"]
    assert (smb.diff().dropna().dt.days.between(28, 31)).all()
    assert steps.loc[~steps["in_quarter"], "value"].eq(0).all()


def test_the_churn_model_says_which_accounts_and_the_rates_how_many(world, scorer):
    t = world.tables
    common = {"quarter": QUARTER, "as_of": AS_OF, "win_scorer": scorer}
    by_rates = prepare_quarter(t, **common)

    def risky_half(steps: pd.DataFrame) -> np.ndarray:  # P(renew): 0.6 for half the accounts
        return np.where(steps["account_id"].str[-1].isin(list("01234")), 0.6, 0.95)

    by_model = prepare_quarter(t, **common, renewal_probability=risky_half)
    assert by_model.chains.equals(by_rates.chains)
    real = by_model.chain_value > 0  # decisions inside the quarter (padding passes surely)
    risky = by_model.chains["account_id"].str[-1].isin(list("01234")).to_numpy()
    for segment in by_model.chains["segment"].unique():
        here = (by_model.chains["segment"] == segment).to_numpy()
        churn_model, churn_rates = 1 - by_model.chain_prob, 1 - by_rates.chain_prob
        # as many fail as the rates say ...
        assert churn_model[here][real[here]].mean() == pytest.approx(
            churn_rates[here][real[here]].mean(), rel=0.05
        )
        # ... and the model's risky accounts are the ones that do (0.40 : 0.05 churn)
        mask = real & here[:, None]
        ratio = (
            churn_model[mask & risky[:, None]].mean() / churn_model[mask & ~risky[:, None]].mean()
        )
        assert ratio == pytest.approx(8.0, rel=0.1)
    # a model that sees no churn at all: every decision passes, all values are booked
    everyone = prepare_quarter(t, **common, renewal_probability=lambda f: np.ones(len(f)))
    keep = simulate_quarter(everyone, draws=4_000).level("company").iloc[0]
    booked = float(everyone.renewals_booked["value"].sum()) + float(everyone.unbilled.sum())
    assert keep["recurring"] == pytest.approx(booked + everyone.chain_value.sum(), rel=5e-3)


def test_renewals_of_accounts_not_billed_yet_are_forecast(world, scorer):
    # SMB subscriptions starting after the last month ended by as_of renew monthly inside the
    # quarter; the renewal book cannot see them, so they are learned from earlier quarters
    t = world.tables
    quarter = "2025Q2"
    as_of = week_as_of(quarter, 5)
    start, end = quarter_bounds(quarter)
    decisions = renewal_decisions(t)
    months = recurring_months(t)
    billed = months.loc[months["period"] == (as_of.to_period("M") - 1).start_time, "account_id"]
    unseen = decisions[
        (decisions["outcome"] == "renewed")
        & (decisions["month"] >= start)
        & (decisions["month"] < end)
        & ~decisions["account_id"].isin(billed)
    ]
    assert len(unseen) > 10 and set(unseen["segment"]) == {"smb"}
    inputs = prepare_quarter(t, quarter=quarter, as_of=as_of, win_scorer=scorer)
    expected = float(inputs.unbilled.sum())
    assert expected == pytest.approx(float(unseen["value"].sum()), rel=0.35)
    # they are in the recurring part of the forecast, owned by the accounts' reps
    company = simulate_quarter(inputs, draws=500).level("company").iloc[0]
    book, _ = chain_moments(inputs.chain_prob, inputs.chain_value)
    booked = float(inputs.renewals_booked["value"].sum())
    assert company["recurring"] == pytest.approx(booked + book.sum() + expected, rel=2e-2)
    assert set(inputs.unbilled.index) <= set(t.reps["rep_id"]) | {UNASSIGNED}


# --- scenarios ----------------------------------------------------------------------------------


def test_removing_a_deal_changes_only_that_deal(world, scorer, forecast):
    top = forecast.drivers[forecast.drivers["level"] == "company"].iloc[0]
    scenario = Scenario(name="lose it", remove=(top["deal_id"],))
    changed = simulate_quarter(scenario.apply(forecast.inputs, scorer), draws=DRAWS, seed=1)
    diff = forecast.samples("company", "company") - changed.samples("company", "company")
    amount = forecast.deals.set_index("deal_id").loc[top["deal_id"], "expected_amount"]
    tolerance = 1e-6 * forecast.samples("company", "company").max()
    assert np.all((np.abs(diff) <= tolerance) | (np.abs(diff - amount) <= tolerance))
    assert changed.level("company")["mean"].iloc[0] < forecast.level("company")["mean"].iloc[0]
    assert changed.scenario == "lose it"


def test_slipping_winning_and_adding_deals(world, scorer, forecast):
    known = set(world.tables.deals["deal_id"])

    def any_deal(features: pd.DataFrame) -> np.ndarray:
        """The truth for deals the world holds (0.6 for one it never saw), halved per push of
        the close date: a model that reads pushes as a warning."""
        ids = features["deal_id"].isin(known).to_numpy()
        out = np.full(len(features), 0.6)
        if ids.any():
            out[ids] = scorer(features[ids])
        return out * 0.5 ** features["close_pushes"].to_numpy(float)

    deals = forecast.deals[forecast.deals["p_inside"] > 0.2]
    slip, win = deals["deal_id"].iloc[0], deals["deal_id"].iloc[1]
    rep = deals["rep_id"].iloc[0]
    scenario = Scenario(
        slip_days={slip: 120},
        stage={win: "closed_won"},
        add=(AddedDeal("NEW-1", rep, 250_000.0, "negotiation", AS_OF + pd.Timedelta(days=20)),),
    )
    inputs = scenario.apply(forecast.inputs, any_deal)
    after = inputs.open_deals.set_index("deal_id")
    before = forecast.inputs.open_deals.set_index("deal_id")
    assert after.loc[slip, "close_pushes"] == before.loc[slip, "close_pushes"] + 1
    assert after.loc[slip, "bucket"] == "later"
    assert after.loc[slip, "p_win"] < before.loc[slip, "p_win"]
    assert after.loc[slip, "p_inside"] < before.loc[slip, "p_inside"]
    assert after.loc[win, "p_inside"] == 0 and win in set(inputs.won["deal_id"])
    assert 0 < after.loc["NEW-1", "p_inside"] < 1
    result = simulate_quarter(inputs, draws=DRAWS, seed=1)
    company = result.level("company").iloc[0]
    assert company["closed"] > forecast.level("company")["closed"].iloc[0]
    with pytest.raises(KeyError, match="not open"):
        Scenario(remove=("D-nope",)).apply(forecast.inputs, scorer)


# --- backtests and the command ------------------------------------------------------------------


def test_a_small_backtest_scores_every_contender(world, scorer, tmp_path):
    result = backtest(
        world.tables,
        quarters=["2025Q2"],
        weeks=(1, 5),
        scorers={"simulation": lambda cutoff: scorer},
        draws=300,
    )
    metrics = result.metrics()
    methods = set(metrics["method"])
    assert {"simulation", "weighted_pipeline", "weighted_pipeline_history", "naive_last_quarter",
            "naive_last_year", "mean_last_four", "statsforecast", FALLBACK} <= methods  # fmt: skip
    company = metrics[(metrics["level"] == "company") & (metrics["method"] == "simulation")]
    assert company["mape"].between(0, 1).all() and company["coverage"].between(0, 1).all()
    assert (result.points["as_of"] == week_as_of("2025Q2", 5)).any()
    run_id, card = log_backtest(result, card_dir=tmp_path)
    text = card.read_text()
    assert run_id in text and "bookings" in text.lower()
    assert all(f"**{level}, week 5**" in text for level in ("company", "region", "team", "rep"))
    assert f"Which source `{FALLBACK}` leaned on" in text
    assert backtest_metrics(result.points).equals(metrics)
    coverage = coverage_table(metrics)
    assert list(coverage.index) == ["company", "region", "team", "rep"]
    assert list(coverage.columns) == [1, 5]
    rep5 = metrics[(metrics["level"] == "rep") & (metrics["week"] == 5)]
    assert coverage.at["rep", 5] == rep5.set_index("method").at["simulation", "coverage"]


@pytest.fixture
def stored_world(world, monkeypatch, scorer):
    from forecast.cli import revenue as cli_revenue
    from forecast.data.ingest import store_world

    store_world(world, source="test", imported_at=pd.Timestamp("2025-11-20"))
    monkeypatch.setattr(cli_revenue, "champion_scorer", lambda tables: (scorer, "7"))
    monkeypatch.setattr(cli_revenue, "console", Console(width=200))  # a wide terminal
    return world


def test_the_command_prints_a_table_and_json(stored_world):
    from forecast.cli import app

    runner = CliRunner()
    shown = runner.invoke(
        app, ["revenue", "--quarter", "2025Q4", "--level", "team", "--draws", "500"]
    )
    assert shown.exit_code == 0, shown.output
    assert "Bookings 2025Q4" in shown.output and "P(target)" in shown.output
    # no --quarter: the quarter of the data's as-of (2025-11-20)
    as_json = runner.invoke(app, ["revenue", "--level", "region", "--json", "--draws", "500"])
    assert as_json.exit_code == 0, as_json.output
    payload = json.loads(as_json.stdout)  # notes (no churn champion here) go to stderr
    assert payload["quarter"] == "2025Q4" and payload["nodes"]
    assert {n["level"] for n in payload["nodes"]} == {"region"}
    assert payload["model"] == {"name": "deal-win", "version": "7"}


def test_the_command_says_how_to_get_a_champion(world):
    from forecast.cli import app
    from forecast.data.ingest import store_world

    store_world(world, source="test", imported_at=pd.Timestamp("2025-11-20"))
    result = CliRunner().invoke(app, ["revenue", "--quarter", "2025Q4"])
    assert result.exit_code == 1
    assert "forecast train win" in result.output


def test_an_open_deal_without_an_expected_close_is_in_the_pipeline_when_due(forecast):
    """A CRM without expected close dates (maven's export) showed an open pipeline of 0 for
    every node: a deal counts once the typical cycle of the deals won by then ends inside."""
    from dataclasses import replace

    from forecast.revenue.timing import expected_inside, with_timing

    inputs = forecast.inputs
    cycle = inputs.timing.cycle_days
    assert 30 < cycle < 365  # the default world's median days from creation to a win
    undated = inputs.open_deals.assign(days_to_expected_close=np.nan)
    timed = with_timing(undated, inputs.window, inputs.timing, inputs.params)
    due = timed["in_quarter_pipeline"].to_numpy(bool)
    assert due.tolist() == expected_inside(timed, inputs.window.end, cycle).tolist()
    assert due.any()
    unknown = replace(inputs.timing, cycle_days=float("nan"))  # nothing won yet: none is due
    assert not with_timing(undated, inputs.window, unknown, inputs.params)[
        "in_quarter_pipeline"
    ].any()


@pytest.mark.parametrize("quarter", ["2025Q1", "2025Q2", "2025Q3"])
def test_a_young_crm_still_forecasts(quarter):
    """Little or no earlier quarter to learn from: the forecast still comes out, and sane."""
    young = make_crm(300, seed=2, start="2025-01-01", as_of="2025-05-10")
    t = young.tables
    fc = forecast_quarter(
        t, quarter=quarter, as_of=t.as_of, win_scorer=truth_scorer(young.truth), draws=300
    )
    company = fc.level("company").iloc[0]
    assert company["p10"] <= company["p50"] <= company["p90"]
    assert company["mean"] >= company["closed"] >= 0


def test_the_backtest_can_draw_renewals_from_a_churn_model():
    """The churn seam: the same win scorer, renewals from a churn model of the quarter's start."""
    from forecast.revenue.backtest import backtest
    from forecast.revenue.backtest_card import backtest_metrics
    from forecast.revenue.churn import fit_churn_renewal
    from forecast.revenue.win_scorers import truth_scorer

    world = make_crm(8000, seed=3)
    tables = world.tables
    quarters = ["2026Q2"]
    result = backtest(
        tables,
        quarters=quarters,
        scorers={"simulation": lambda cutoff: truth_scorer(world.truth)},
        renewals={
            "simulation_churn": lambda cutoff: fit_churn_renewal(
                tables, cutoff, tree=TreeParams(n_estimators=30, n_jobs=1)
            )
        },
        weeks=(5,),
        draws=500,
        baselines=False,
    )
    metrics = backtest_metrics(result.points).reset_index()
    company = metrics[metrics["level"] == "company"].set_index("method")
    assert set(company.index) == {"simulation", "simulation_churn"}
    # only the renewals differ, and a churn model does not forecast them the same way
    assert company.loc["simulation", "mape"] != company.loc["simulation_churn", "mape"]


SLIPS = (1, 7, 30, 60, 120, 365)


def test_a_slip_never_raises_the_quarter_it_leaves_over_the_whole_book(forecast, scorer):
    """Every open deal slipped by each of SLIPS days: a later date never raises its chance of
    closing inside the quarter; past the quarter's end it cannot close inside at all."""
    inputs = forecast.inputs
    book = inputs.open_deals.set_index("deal_id")
    window = inputs.window
    # overdue deals too: they can close any day from the as-of, inside this quarter
    inside = book["expected_close"] < window.end
    previous = book["p_inside"]
    checked = violations = 0
    for days in SLIPS:
        slipped = Scenario(slip_days=dict.fromkeys(book.index, days)).apply(inputs, scorer)
        after = slipped.open_deals.set_index("deal_id")["p_inside"].reindex(book.index)
        left = book["expected_close"] + pd.Timedelta(days=days) >= window.end
        checked += int(inside.sum())
        violations += int((after[inside] > previous[inside] + 1e-12).sum())  # monotone in days
        violations += int((after[inside & left] != 0).sum())
        previous = previous.where(~inside, after)
    assert checked > 600  # about 110 deals inside the quarter, six slips each
    assert violations == 0


def test_a_slip_into_the_next_quarter_never_lowers_it(world, forecast, scorer):
    """The same slips seen from the next quarter: the deals that move into it count at least as
    much there as before."""
    nxt = prepare_quarter(world.tables, quarter="2025Q4", as_of=AS_OF, win_scorer=scorer)
    book = nxt.open_deals.set_index("deal_id")
    window = nxt.window
    checked = 0
    for days in SLIPS:
        after = Scenario(slip_days=dict.fromkeys(book.index, days)).apply(nxt, scorer)
        moved = book["expected_close"] + pd.Timedelta(days=days)
        arrives = (book["expected_close"] < window.start) & (moved >= window.start)
        arrives &= moved < window.end
        p = after.open_deals.set_index("deal_id")["p_inside"].reindex(book.index)
        checked += int(arrives.sum())
        assert (p[arrives] >= book.loc[arrives, "p_inside"] - 1e-12).all()
    assert checked > 200


def test_removing_or_losing_deals_never_raises_the_quarter(forecast, scorer):
    inputs = forecast.inputs
    ids = inputs.open_deals["deal_id"].tolist()
    base = float((inputs.open_deals["p_inside"] * inputs.open_deals["expected_amount"]).sum())
    for chosen, scenario in (
        (ids[::2], Scenario(remove=tuple(ids[::2]))),
        (ids[1::2], Scenario(stage=dict.fromkeys(ids[1::2], "closed_lost"))),
    ):
        deals = scenario.apply(inputs, scorer).open_deals
        assert float((deals["p_inside"] * deals["expected_amount"]).sum()) < base
        gone = deals["removed"].to_numpy()
        assert gone.sum() == len(chosen) and (deals.loc[gone, "p_inside"] == 0).all()


def test_a_slip_moves_a_deals_chance_between_quarters_and_never_creates_any(
    world, forecast, scorer
):
    """Over the whole book and every slip: what a deal's chance of closing in this quarter loses,
    the next quarter gains at most (a pushed close date is itself a sign that lowers the chance
    to win at all, so the two quarters together never gain)."""
    this = forecast.inputs
    nxt = prepare_quarter(world.tables, quarter="2025Q4", as_of=AS_OF, win_scorer=scorer)
    ids = this.open_deals["deal_id"]
    assert set(ids) == set(nxt.open_deals["deal_id"])

    def chances(inputs, scenario=None):
        deals = (scenario.apply(inputs, scorer) if scenario else inputs).open_deals
        return deals.set_index("deal_id")["p_inside"].reindex(ids.to_numpy())

    before = chances(this) + chances(nxt)
    checked = created = moved = 0
    for days in SLIPS:
        slip = Scenario(slip_days=dict.fromkeys(ids, days))
        now, later = chances(this, slip), chances(nxt, slip)
        created += int(((now + later) > before + 1e-9).sum())
        moved += int(((now < chances(this) - 1e-9) & (later > chances(nxt) + 1e-9)).sum())
        checked += len(ids)
    assert checked > 600 and created == 0  # about 130 open deals, six slips each
    assert moved > 100  # the slips do move chance from this quarter into the next


# --- leaning on a time series where the backtest found it better ---------------------------------


@pytest.fixture(scope="module")
def backtested(world, scorer):
    """Four backtest quarters at week 5, before the forecast's quarter (2025Q3)."""
    return backtest(
        world.tables,
        quarters=["2024Q3", "2024Q4", "2025Q1", "2025Q2"],
        weeks=(5,),
        scorers={"simulation": lambda cutoff: scorer},
        draws=300,
    )


def test_a_node_leans_on_the_series_its_backtest_favoured(world, scorer, backtested):
    inputs = prepare_quarter(world.tables, quarter=QUARTER, as_of=AS_OF, win_scorer=scorer)
    leaned = live_lean(world.tables, inputs, backtested.points, "backtest of the test")
    plain = simulate_quarter(inputs, draws=DRAWS, seed=1)
    leaning = simulate_quarter(leaned, draws=DRAWS, seed=1)
    sources = node_sources(backtested.points, week=6)
    chosen = leaning.nodes.merge(sources, on=["level", "node"], suffixes=("", "_chosen"))
    moved = chosen[chosen["source"] != "simulation"]
    assert len(moved) >= 1, sources["source"].value_counts()  # a rep of this world leans
    assert (chosen["source"] == chosen["source_chosen"]).all()
    assert set(moved["source"]) <= set(SERIES)

    # each leaning node's mean is its series' forecast, with the simulation's shape above
    # what is booked (the same draws, scaled)
    series = naive_and_ets(
        known_series(world.tables, AS_OF, inputs.params), inputs.tree,
        moved[["level", "node"]], pd.Period(QUARTER, "Q"),
    )  # fmt: skip
    for row in moved.itertuples():
        forecast = series[row.source].set_index(["level", "node"]).at[(row.level, row.node), "mean"]
        assert row.mean == pytest.approx(forecast, rel=0.03), row
        before = plain.samples(row.level, row.node) - row.booked
        after = leaning.samples(row.level, row.node) - row.booked
        scale = after.sum() / before.sum()  # one factor for every draw
        np.testing.assert_allclose(after, before * scale, rtol=1e-4, atol=1.0)
        assert scale != pytest.approx(1.0, abs=1e-3)
        if not np.isnan(row.target):
            assert row.p_reach_target == pytest.approx((after + row.booked >= row.target).mean())
        assert row.simulation_mean == pytest.approx(before.mean() + row.booked)

    # every node is still the sum of its children, draw by draw
    for child, up in itertools.pairwise(LEVELS):
        names, values = leaning.node_draws[child]
        parents = inputs.tree.parent(child).reindex(names).to_numpy()
        up_names, up_values = leaning.node_draws[up]
        summed = pd.DataFrame(values).groupby(parents).sum().reindex(up_names.astype(str))
        np.testing.assert_allclose(summed.to_numpy(), up_values, rtol=1e-5, atol=1.0)

    # a node above leaning reps moves by exactly what they moved; the rest is untouched
    assert set(moved["level"]) == {"rep"}  # in this world only reps lean
    change = (leaning.nodes["mean"] - plain.nodes["mean"]).set_axis(
        pd.MultiIndex.from_frame(leaning.nodes[["level", "node"]])
    )
    reps = leaning.level("rep").set_index("node")
    moved_reps = change.loc["rep"][reps["source"] != "simulation"]
    team_of = inputs.tree.parent("rep")
    for team in team_of[moved_reps.index].unique():
        under = moved_reps[team_of[moved_reps.index] == team].sum()
        assert change.loc[("team", team)] == pytest.approx(under, rel=1e-4, abs=1.0)
    assert change.loc[("company", "company")] == pytest.approx(moved_reps.sum(), rel=1e-4, abs=1)
    untouched = ~reps.index.isin(moved_reps.index)
    np.testing.assert_allclose(change.loc["rep"][untouched], 0.0, atol=1e-6)
    assert leaning.to_dict()["leaning"] == "backtest of the test"


def test_a_slip_still_never_raises_a_leaning_quarter(world, scorer, backtested):
    inputs = prepare_quarter(world.tables, quarter=QUARTER, as_of=AS_OF, win_scorer=scorer)
    leaned = live_lean(world.tables, inputs, backtested.points, "backtest of the test")
    base = simulate_quarter(leaned, draws=DRAWS, seed=1)
    leaning_reps = base.nodes[
        (base.nodes["level"] == "rep") & (base.nodes["source"] != "simulation")
    ]
    own = base.deals[base.deals["rep_id"].isin(leaning_reps["node"])]
    assert len(own) >= 3  # the slips below move deals of a leaning rep
    deals = pd.concat([own.nlargest(10, "expected_bookings"), base.deals.nlargest(10, "amount")])
    for deal in deals.itertuples():
        slipped = simulate_quarter(
            Scenario(slip_days={deal.deal_id: 120}).apply(leaned, scorer), draws=DRAWS, seed=1
        )
        for level, node in (("rep", deal.rep_id), ("company", "company")):
            before = base.nodes.set_index(["level", "node"]).at[(level, node), "mean"]
            after = slipped.nodes.set_index(["level", "node"]).at[(level, node), "mean"]
            assert after <= before + 1e-6, (deal.deal_id, level)


def test_the_command_leans_where_the_latest_backtest_says(stored_world, backtested, tmp_path):
    from forecast.cli import app

    runner = CliRunner()
    asked = ["revenue", "--quarter", QUARTER, "--as-of", f"{AS_OF:%Y-%m-%d}", "--draws", "500"]
    before = runner.invoke(app, [*asked, "--level", "rep"])
    assert before.exit_code == 0, before.output
    assert "no revenue backtest yet" in before.output and "source" not in before.stdout

    run_id, _ = log_backtest(backtested, card_dir=tmp_path)  # what `revenue-backtest` logs
    shown = runner.invoke(app, [*asked, "--level", "rep"])
    assert shown.exit_code == 0, shown.output
    assert f"revenue backtest run {run_id[:8]}" in shown.stdout
    leaning = node_sources(backtested.points, week=6).query("source != 'simulation'")
    row = next(line for line in shown.stdout.splitlines() if f" {leaning['node'].iloc[0]} " in line)
    assert leaning["source"].iloc[0] in row

    payload = json.loads(runner.invoke(app, [*asked, "--level", "rep", "--json"]).stdout)
    sources = {n["node"]: n["source"] for n in payload["nodes"]}
    assert sources[leaning["node"].iloc[0]] == leaning["source"].iloc[0]
    assert payload["leaning"].startswith(f"revenue backtest run {run_id[:8]}")
    plain = runner.invoke(app, [*asked, "--level", "rep", "--json", "--no-lean"])
    assert {n["source"] for n in json.loads(plain.stdout)["nodes"]} == {"simulation"}


def test_the_service_leans_as_the_command_does(world, scorer, backtested, tmp_path):
    from service.state import _leaning

    inputs = prepare_quarter(world.tables, quarter=QUARTER, as_of=AS_OF, win_scorer=scorer)
    assert _leaning(world.tables, inputs) is inputs  # no backtest logged yet
    run_id, _ = log_backtest(backtested, card_dir=tmp_path)
    served = _leaning(world.tables, inputs).lean
    expected = live_lean(world.tables, inputs, backtested.points, "").lean
    assert served.basis.startswith(f"revenue backtest run {run_id[:8]}")
    pd.testing.assert_frame_equal(served.nodes, expected.nodes, check_exact=False, rtol=1e-9)

    # the dashboard's Forecast page says which source a leaning node's mean came from
    from service.pages import _quarter_view

    forecast = simulate_quarter(_leaning(world.tables, inputs), draws=500, seed=1)
    level, node, source = served.nodes[["level", "node", "source"]].iloc[0]
    view = _quarter_view(forecast, level, node)
    assert view["source"] == source and view["simulation_mean"] != pytest.approx(view["mean"])
