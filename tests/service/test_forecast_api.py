"""The quarter forecast and scenarios over HTTP: the library's figures, scoped by the org tree."""

from __future__ import annotations

import pytest

from forecast.explain.scoring import open_deal_ids
from service.deps import subtree


@pytest.fixture(scope="module")
def quarter(api) -> str:
    return str(api.state.tables.as_of.to_period("Q"))


def test_the_company_forecast_is_the_services_own_figures(api, quarter):
    answer = api.get(f"/v1/forecast/{quarter}", api.key("admin"))
    assert answer.status == 200, answer.detail
    body = answer.body
    company = api.state.quarter_forecast(quarter).level("company").iloc[0]
    node = body["node"]
    assert (node["level"], node["node"]) == ("company", "company")
    for name in ("mean", "p10", "p50", "p90", "closed", "open", "new", "recurring"):
        assert node[name] == pytest.approx(float(company[name])), name
    assert node["p10"] <= node["p50"] <= node["p90"]
    parts = node["closed"] + node["open"] + node["new"] + node["recurring"]
    assert parts == pytest.approx(node["mean"], rel=1e-6)
    assert {c["level"] for c in body["children"]} == {"region"}
    assert sum(c["mean"] for c in body["children"]) == pytest.approx(node["mean"], rel=1e-6)
    assert body["drivers"] and body["drivers"][0]["rank"] == 1
    assert body["model"] == {"name": "deal-win", "version": "1"} and body["draws"] == 10_000
    assert body["renewals_from"] == "account-churn v1"  # the churn champion, this quarter
    # no revenue backtest in this home: every node is the simulation's
    assert body["leaning"] is None and node["source"] == "simulation"
    assert node["simulation_mean"] == pytest.approx(node["mean"])


def test_a_manager_sees_their_team_by_default_and_only_deals_in_reach(api, quarter):
    answer = api.get(f"/v1/forecast/{quarter}", api.key("manager", rep_id="M001"))
    assert answer.status == 200, answer.detail
    body = answer.body
    assert (body["node"]["level"], body["node"]["node"]) == ("team", "NA 1")
    mine = subtree(api.state.tables.reps, "M001")
    assert {c["node"] for c in body["children"]} <= mine
    assert body["drivers"] and {d["rep_id"] for d in body["drivers"]} <= mine


def test_a_rep_defaults_to_their_own_node_and_cannot_name_another(api, quarter):
    key = api.key("rep", rep_id="R0001")
    own = api.get(f"/v1/forecast/{quarter}", key)
    assert own.status == 200 and own.body["node"]["node"] == "R0001"
    assert own.body["children"] == []
    other = api.get(f"/v1/forecast/{quarter}?level=team&node=EMEA%201", key)
    unknown = api.get(f"/v1/forecast/{quarter}?level=team&node=NO%20SUCH", key)
    assert other.status == unknown.status == 404
    assert other.body["detail"] == "no team 'EMEA 1'"


@pytest.mark.parametrize(
    ("path", "status", "said"),
    [
        ("/v1/forecast/1999Q1", 404, "can be forecast"),  # too far from the data's as-of
        ("/v1/forecast/2026Q9", 422, "quarter"),
        ("/v1/forecast/next", 422, "quarter"),
        ("/v1/forecast/{q}?level=galaxy", 422, "level"),
        # several teams: name one (an admin is shown some, as anyone else)
        ("/v1/forecast/{q}?level=team", 422, "in your reach, e.g. APAC 1, "),
        ("/v1/forecast/{q}?level=region&node=Atlantis", 404, "Atlantis"),
    ],
)
def test_bad_quarters_levels_and_nodes_say_what_is_wrong(api, quarter, path, status, said):
    answer = api.get(path.replace("{q}", quarter), api.key("admin"))
    assert answer.status == status and said in answer.detail, answer.detail


def test_the_crm_role_may_not_read_forecasts(api, quarter):
    assert api.get(f"/v1/forecast/{quarter}", api.key("crm")).status == 403


def _biggest_driver(api, quarter, key) -> str:
    return api.get(f"/v1/forecast/{quarter}", key).body["drivers"][0]["deal_id"]


def test_a_scenario_answers_base_and_changed_figures(api, quarter):
    key = api.key("manager", rep_id="M001")
    deal = _biggest_driver(api, quarter, key)
    body = {"name": "lost it", "remove": [deal]}
    answer = api.post(f"/v1/forecast/{quarter}:scenario", body, key)
    assert answer.status == 200, answer.detail
    out = answer.body
    assert out["name"] == "lost it" and out["base"]["node"] == out["scenario"]["node"] == "NA 1"
    assert out["scenario"]["mean"] < out["base"]["mean"]
    assert out["change_in_mean"] == pytest.approx(out["scenario"]["mean"] - out["base"]["mean"])
    assert deal not in {d["deal_id"] for d in out["drivers"]}
    again = api.get(f"/v1/forecast/{quarter}", key).body["node"]["mean"]
    assert again == pytest.approx(out["base"]["mean"]), "a scenario leaves the base alone"


def test_a_scenario_can_slip_restage_and_add(api, quarter):
    key = api.key("manager", rep_id="M001")
    deal = _biggest_driver(api, quarter, key)
    added = {
        "deal_id": "NEW-1",
        "rep_id": "R0002",
        "amount": 80000.0,
        "stage": "negotiation",
        "expected_close": str(api.state.tables.as_of.date()),
        "win_probability": 0.9,
    }
    body = {"slip": {deal: 200}, "stage": {deal: "proposal"}, "add": [added]}
    answer = api.post(f"/v1/forecast/{quarter}:scenario", body, key)
    assert answer.status == 200, answer.detail
    assert answer.body["scenario"]["open"] != answer.body["base"]["open"]


def test_a_scenario_naming_a_deal_out_of_reach_is_404_naming_it(api, quarter):
    other = _biggest_driver(api, quarter, api.key("manager", rep_id="M002"))
    key = api.key("manager", rep_id="M001")
    answer = api.post(f"/v1/forecast/{quarter}:scenario", {"remove": [other]}, key)
    assert answer.status == 404 and answer.body["detail"] == f"no deal {other!r}"
    unknown = api.post(f"/v1/forecast/{quarter}:scenario", {"slip": {"D-nope": 5}}, key)
    assert unknown.status == 404 and unknown.body["detail"] == "no deal 'D-nope'"
    away = {"add": [{"deal_id": "N", "rep_id": "R0004", "amount": 1.0, "stage": "proposal",
                     "expected_close": "2026-12-01"}]}  # fmt: skip
    assert api.post(f"/v1/forecast/{quarter}:scenario", away, key).status == 404


def test_a_scenario_with_a_closed_deal_or_unknown_stage_is_422_naming_it(api, quarter):
    tables = api.state.tables
    open_now = set(open_deal_ids(tables, tables.as_of))
    closed = tables.deals[~tables.deals["deal_id"].isin(open_now)]
    deal = str(closed.loc[closed["rep_id"] == "R0001", "deal_id"].iloc[0])
    key = api.key("rep", rep_id="R0001")
    answer = api.post(f"/v1/forecast/{quarter}:scenario", {"remove": [deal]}, key)
    assert answer.status == 422 and deal in answer.detail, answer.detail
    own = _biggest_driver(api, quarter, key)
    staged = api.post(f"/v1/forecast/{quarter}:scenario", {"stage": {own: "signed"}}, key)
    assert staged.status == 422 and "signed" in staged.detail and "stage" in staged.detail


def test_a_director_defaults_to_their_region_and_an_outsider_to_nothing(api, quarter):
    from service.deps import forecast_nodes_in_reach

    reps = api.state.tables.reps
    regions = forecast_nodes_in_reach(reps, subtree(reps, "D01"))["region"]
    answer = api.get(f"/v1/forecast/{quarter}", api.key("manager", rep_id="D01"))
    assert answer.status == 200, answer.detail
    assert (answer.body["node"]["level"], {answer.body["node"]["node"]}) == ("region", regions)
    nobody = api.get(f"/v1/forecast/{quarter}", api.key("rep", rep_id="NOBODY"))
    assert nobody.status == 404 and nobody.body["detail"] == "no rep in your reach"


def test_an_added_deal_may_reuse_any_crm_id_without_revealing_it(api, quarter):
    outside = _biggest_driver(api, quarter, api.key("manager", rep_id="M002"))
    key = api.key("manager", rep_id="M001")
    close = str(api.state.tables.as_of.date())
    added = {"deal_id": outside, "rep_id": "R0001", "amount": 5e6, "stage": "negotiation",
             "expected_close": close, "win_probability": 0.99}  # fmt: skip
    answer = api.post(f"/v1/forecast/{quarter}:scenario", {"add": [added]}, key)
    assert answer.status == 200, answer.detail
    assert answer.body["drivers"][0]["deal_id"] == f"new:{outside}"


def test_every_node_shows_the_revenue_at_risk_of_the_accounts_owned_under_it(api, quarter):
    from service.state import CHURN_MODEL

    state = api.state
    scores = list(state.account_scores(state.champion(CHURN_MODEL)).values())
    reps = state.store().reps.set_index("rep_id")
    body = api.get(f"/v1/forecast/{quarter}", api.key("admin")).body
    owned = [s for s in scores if s.owner_rep_id is not None]
    assert body["node"]["revenue_at_risk"] == pytest.approx(sum(s.revenue_at_risk for s in owned))
    assert body["node"]["revenue_at_risk"] > 0
    for region in body["children"]:
        under = [s for s in owned if reps.at[s.owner_rep_id, "region"] == region["node"]]
        assert region["revenue_at_risk"] == pytest.approx(sum(s.revenue_at_risk for s in under))
    assert sum(c["revenue_at_risk"] for c in body["children"]) == pytest.approx(
        body["node"]["revenue_at_risk"]
    )
