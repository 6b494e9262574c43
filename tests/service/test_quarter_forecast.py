"""The service's quarter forecast: the same figures as the library's, scenarios re-drawn."""

from __future__ import annotations

import pickle

import pandas as pd
import pytest

from forecast.revenue import SEGMENT_RATES, Scenario, forecast_quarter
from forecast.revenue.churn import ChurnRenewals
from forecast.settings import get_settings
from service.state import ServiceConfig, ServiceState


@pytest.fixture
def state(at_trained_home, monkeypatch) -> ServiceState:
    # a scenario takes seconds alone and has taken past the service's minute beside the suite
    monkeypatch.setenv("FORECAST_SCENARIO_BUDGET_SECONDS", "600")
    get_settings.cache_clear()
    state = ServiceState(get_settings(), ServiceConfig(forecast_draws=2_000))
    state.start()
    return state


def test_the_forecast_is_the_librarys_with_the_serving_champions(state):
    tables = state.store()
    quarter = str(tables.as_of.to_period("Q"))
    served = state.quarter_forecast(quarter)
    serving, churn = state.champion("deal-win"), state.champion("account-churn")
    direct = forecast_quarter(
        tables,
        quarter=quarter,
        as_of=tables.as_of,
        win_scorer=serving.probability,
        renewal_probability=ChurnRenewals(churn.probability, tables),
        draws=2_000,
    )
    # the bookings figures are the library's; revenue at risk is the churn champion's, beside them
    pd.testing.assert_frame_equal(served.nodes.drop(columns="revenue_at_risk"), direct.nodes)
    assert state.quarter_forecast(quarter) is served, "the plain forecast is drawn once"
    assert state.quarter_forecast(quarter, seed=1) is not served
    state.load_store()  # a new store generation: drawn again, with the same figures
    again = state.quarter_forecast(quarter)
    assert again is not served and again.nodes.equals(served.nodes)


def test_renewals_come_from_the_churn_champion_this_quarter_and_next_only(state):
    tables = state.store()
    now = tables.as_of.to_period("Q")
    churn = state.champion("account-churn")
    model = f"account-churn v{churn.version}"
    for ahead, expected in ((0, model), (1, model), (2, SEGMENT_RATES)):
        forecast = state.quarter_forecast(str(now + ahead))
        assert forecast.inputs.renewals_source == expected, ahead
        assert forecast.to_dict("company")["renewals_from"] == expected
    # the churn model moves the recurring line: it is not the segment rates' under another name
    quarter = str(now)
    by_rates = forecast_quarter(
        tables,
        quarter=quarter,
        as_of=tables.as_of,
        win_scorer=state.champion("deal-win").probability,
        draws=2_000,
    )
    served = state.quarter_forecast(quarter).level("company").iloc[0]["recurring"]
    assert served != pytest.approx(by_rates.level("company").iloc[0]["recurring"], rel=1e-6)


def test_a_scenario_redraws_and_leaves_the_base_forecast_alone(state):
    quarter = str(state.store().as_of.to_period("Q"))
    base = state.quarter_forecast(quarter)
    biggest = base.drivers.loc[base.drivers["level"] == "company", "deal_id"].iloc[0]
    removed = state.quarter_forecast(quarter, Scenario(name="lost", remove=(biggest,)))
    company = base.level("company").iloc[0]
    assert removed.level("company").iloc[0]["mean"] < company["mean"]
    assert state.quarter_forecast(quarter).level("company").iloc[0]["mean"] == company["mean"]
    with pytest.raises(KeyError, match="D-nope"):
        state.quarter_forecast(quarter, Scenario(remove=("D-nope",)))
    with pytest.raises(ValueError, match="2026Q9"):
        state.quarter_forecast("2026Q9")


def test_a_scenario_comes_back_with_one_nodes_draws_every_figure_and_less_to_unpickle(
    state,
):
    quarter = str(state.store().as_of.to_period("Q"))
    team = state.quarter_forecast(quarter).level("team").iloc[0]["node"]
    base, changed = state.scenario_forecasts(quarter, Scenario(name="none"), "team", team)
    whole = state.quarter_forecast(quarter)
    assert base.node_view("team", team) == whole.node_view("team", team)
    assert base.nodes.equals(whole.nodes) and changed.nodes.equals(whole.nodes), "every figure"
    assert (base.samples("team", team) == whole.samples("team", team)).all()
    with pytest.raises(KeyError):
        base.samples("company", "company")  # the other nodes' draws stay where they were made
    assert list(changed.node_draws["team"][0]) == [team] and list(changed.node_draws) == ["team"]
    assert changed.deals.empty
    assert len(pickle.dumps(changed)) < len(pickle.dumps(whole)) / 2
