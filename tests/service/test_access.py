"""Who sees what: every role against every object kind, inside and outside its reach."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from forecast.explain.account_scoring import billed_account_ids
from forecast.explain.scoring import open_deal_ids
from service.predlog import audit_log

# (role, acting as) -> object -> expected status. In the generated world M001 manages R0001-3
# (team "NA 1") under director D01; R0004 is in team "EMEA 1" under M002.
# Forecast nodes: a rep's own node, another team's rep, the company.
OBJECTS = (
    "own_deal", "other_deal", "own_rep", "other_rep", "own_team", "other_team",
    "own_account", "other_account", "own_forecast", "other_forecast", "company_forecast",
)  # fmt: skip
MATRIX = {
    # the CRM's integration reads any account's churn risk (its account pages), nothing else
    ("crm", None): (403, 403, 403, 403, 403, 403, 200, 200, 403, 403, 403),
    ("rep", "R0001"): (200, 404, 200, 404, 403, 403, 200, 404, 200, 404, 404),
    ("manager", "M001"): (200, 404, 200, 404, 200, 404, 200, 404, 200, 404, 404),
    # a director: a manager higher up
    ("manager", "D01"): (200, 404, 200, 404, 200, 404, 200, 404, 200, 404, 404),
    # the top of the tree sees it all
    ("manager", "E01"): (200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200),
    # a key for someone not in the tree
    ("rep", "NOBODY"): (404, 404, 404, 404, 403, 403, 404, 404, 404, 404, 404),
    ("admin", None): (200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200),
}


@pytest.fixture(scope="module")
def paths(api):
    tables = api.state.tables
    open_now = set(open_deal_ids(tables, tables.as_of))
    deals = tables.deals[tables.deals["deal_id"].isin(open_now)]

    def open_deal_of(rep_id: str) -> str:
        return str(deals.loc[deals["rep_id"] == rep_id, "deal_id"].iloc[0])

    billed = tables.accounts[
        tables.accounts["account_id"].isin(billed_account_ids(tables, tables.as_of))
    ]

    def billed_account_of(rep_id: str) -> str:
        return str(billed.loc[billed["owner_rep_id"] == rep_id, "account_id"].iloc[0])

    quarter = tables.as_of.to_period("Q")
    return {
        "own_account": f"/v1/accounts/{billed_account_of('R0001')}",
        "other_account": f"/v1/accounts/{billed_account_of('R0004')}",
        "own_forecast": f"/v1/forecast/{quarter}?level=rep&node=R0001",
        "other_forecast": f"/v1/forecast/{quarter}?level=rep&node=R0004",
        "company_forecast": f"/v1/forecast/{quarter}?level=company&node=company",
        "own_deal": f"/v1/deals/{open_deal_of('R0001')}",
        "other_deal": f"/v1/deals/{open_deal_of('R0004')}",
        "own_rep": "/v1/coaching/reps/R0001",
        "other_rep": "/v1/coaching/reps/R0004",
        "own_team": "/v1/coaching/teams/NA%201",
        "other_team": "/v1/coaching/teams/EMEA%201",
    }


@pytest.mark.parametrize(("role", "rep_id"), list(MATRIX))
def test_access_matrix(api, paths, role, rep_id):
    key = api.key(role, rep_id=rep_id)
    got = tuple(api.get(paths[kind], key).status for kind in OBJECTS)
    assert got == MATRIX[(role, rep_id)], dict(zip(OBJECTS, got, strict=True))


def test_out_of_reach_looks_exactly_like_unknown(api, paths):
    key = api.key("rep", rep_id="R0001")
    other = api.get(paths["other_deal"], key)
    unknown = api.get("/v1/deals/NO-SUCH-DEAL", key)
    assert other.status == unknown.status == 404
    other_id = paths["other_deal"].rsplit("/", 1)[1]
    assert other.body["detail"] == unknown.body["detail"].replace("NO-SUCH-DEAL", other_id)


def test_an_out_of_reach_account_looks_exactly_like_an_unknown_one(api, paths):
    key = api.key("rep", rep_id="R0001")
    other = api.get(paths["other_account"], key)
    other_id = paths["other_account"].rsplit("/", 1)[1]
    assert other.status == 404 and other.body["detail"] == f"no account {other_id!r}"
    assert api.get("/v1/accounts/NO-SUCH", key).body["detail"] == "no account 'NO-SUCH'"


def test_every_read_without_a_key_is_401(api, paths):
    for path in paths.values():
        assert api.get(path).status == 401


def test_a_team_view_shows_only_reps_in_reach(api):
    body = api.get("/v1/coaching/teams/NA%201", api.key("manager", rep_id="M001")).body
    assert {r["rep_id"] for r in body["reps"]} == {"R0001", "R0002", "R0003"}


def test_every_read_is_audit_logged_who_what_when(api, paths):
    key = api.key("manager", rep_id="M001")
    key_id = key.split("_")[1]
    api.get(paths["own_deal"], key)
    api.get(paths["other_rep"], key)
    api.state.logs.flush()  # rows are written in batches, off the request path
    query = sa.select(audit_log).where(audit_log.c.caller == key_id).order_by(audit_log.c.id)
    with api.state.engine.connect() as conn:
        rows = conn.execute(query).all()
    assert [(r.path, r.status) for r in rows] == [
        (paths["own_deal"], 200),
        (paths["other_rep"].replace("%20", " "), 404),
    ]
    assert all(r.role == "manager" and r.at is not None for r in rows)


def test_the_org_tree_missing_fails_closed(api, monkeypatch):
    monkeypatch.setattr(api.state, "tables", None)
    answer = api.get("/v1/deals/ANY", api.key("manager", rep_id="M001"))
    assert answer.status == 503 and "org tree" in answer.body["detail"]


def test_forecast_nodes_are_in_reach_only_when_everyone_under_them_is():
    from service.deps import forecast_nodes_in_reach, subtree

    reps = pd.DataFrame(
        {
            "rep_id": ["E", "D", "M1", "M2", "R1", "R2", "R3"],
            "manager_id": [None, "E", "D", "D", "M1", "M1", "M2"],
            "team": ["top", "lead", "T1", "T2", "T1", "T1", "T2"],
            "region": ["G", "R", "R", "R", "R", "R", "R"],
        }
    )
    assert forecast_nodes_in_reach(reps, None) is None
    rep = forecast_nodes_in_reach(reps, frozenset({"R1"}))
    assert rep == {"rep": {"R1"}, "team": set(), "region": set(), "company": set()}
    manager = forecast_nodes_in_reach(reps, subtree(reps, "M1"))
    assert manager["team"] == {"T1"} and manager["region"] == set()
    director = forecast_nodes_in_reach(reps, subtree(reps, "D"))
    assert director["team"] == {"T1", "T2", "lead"} and director["region"] == {"R"}
    assert director["company"] == set()
    assert forecast_nodes_in_reach(reps, subtree(reps, "E"))["company"] == {"company"}


def test_a_rep_in_a_small_team_gets_no_team_figures_a_manager_does(api):
    """NA 1 holds three reps: two teammates are fewer than the five others it takes to hide
    one of them in the team's figures (API and dashboard alike)."""
    own = api.get("/v1/coaching/reps/R0001", api.key("rep", rep_id="R0001")).body
    assert own["withheld"] and "fewer than 5 other people" in own["withheld"]
    assert own["team_win_rate"] is None and own["win_rate"] is not None
    assert not any(k.startswith("team_") for row in own["funnel"] for k in row)
    assert all(f["team"] is None and f["gap"] is None for f in own["findings"])
    manager = api.get("/v1/coaching/reps/R0001", api.key("manager", rep_id="M001")).body
    assert manager["team_win_rate"] is not None
    assert any(k.startswith("team_") for row in manager["funnel"] for k in row)
    # the company's other three sellers are out of the manager's sight: too few to show it
    assert manager["withheld"].startswith("The company figures are withheld")
    assert not any(k.startswith("company_") for row in manager["funnel"] for k in row)
    admin = api.get("/v1/coaching/reps/R0001", api.key("admin")).body
    assert admin["withheld"] is None and any(k.startswith("company_") for k in admin["funnel"][0])
