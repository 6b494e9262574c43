"""Account churn through the service on a real (small) champion: batches, stored accounts, log."""

from __future__ import annotations

import math

import pytest

from forecast.explain.account_scoring import billed_account_ids, score_accounts
from service.predlog import predictions_for

ROW = {
    "account_id": "CRM-A1",
    "segment": "mid_market",
    "industry": "software",
    "mrr": 4200.0,
    "satisfaction_last": 2.0,
    "tickets_90d": 9,
    "usage_change_3m": -0.4,
    "days_since_rep_touch": 80,
}


def test_a_batch_gets_churn_revenue_at_risk_drivers_actions_model_and_as_of(api):
    key = api.key("crm")
    rows = [ROW, {"segment": "smb"}, {}]
    body = {"accounts": rows, "as_of": "2026-11-15T00:00:00Z"}
    answer = api.post("/v1/accounts:score", body, key)
    assert answer.status == 200, answer.detail
    out = answer.body
    assert out["model"] == {"name": "account-churn", "version": "1"}
    first, no_mrr, _ = out["scores"]
    assert first["account_id"] == "CRM-A1" and first["as_of"].startswith("2026-11-15")
    assert first["arr"] == 12 * 4200.0
    assert first["revenue_at_risk"] == pytest.approx(first["churn_probability"] * 50400.0)
    assert first["drivers"], "a scored account says what drives its risk"
    assert no_mrr["arr"] is None and no_mrr["revenue_at_risk"] is None
    for score in out["scores"]:
        assert 0.0 <= score["churn_probability"] <= 1.0 and score["model"] == out["model"]
    for action in first["retention_actions"]:  # an action lowers the risk
        assert action["probability_after"] < action["probability_before"]
    api.state.logs.flush()  # rows are written in batches, off the request path
    logged = predictions_for(api.state.engine, out["request_id"])
    assert [r["subject"] for r in logged] == ["CRM-A1", None, None]
    assert {r["model"] for r in logged} == {"account-churn"}
    assert logged[0]["output"]["churn_probability"] == first["churn_probability"]


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ({"segment": "galactic", "region": "Mars"}, "unseen categories"),
        ({"mrr": "NaN", "tenure_days": "Infinity"}, "NaN and infinity"),
        ({"mrr": 1e308, "tickets_30d": -3}, "absurd numbers"),
    ],
)
def test_odd_but_valid_accounts_are_scored_not_failed(api, row, why):
    answer = api.post("/v1/accounts:score", {"accounts": [row]}, api.key("rep", rep_id="R0001"))
    assert answer.status == 200, f"{why}: {answer.detail}"
    score = answer.body["scores"][0]
    assert math.isfinite(score["churn_probability"])
    assert score["revenue_at_risk"] is None or math.isfinite(score["revenue_at_risk"])


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"accounts": [{"mrr": "plenty"}]}, "mrr"),
        ({"accounts": [{"segmnt": "smb"}]}, "segmnt"),
        ({"accounts": []}, "accounts"),
        ({"accounts": [{}] * 1001}, "1000"),
    ],
)
def test_bad_accounts_are_422_naming_the_field_or_limit(api, body, named):
    answer = api.post("/v1/accounts:score", body, api.key("crm"))
    assert answer.status == 422 and named in answer.detail, answer.detail


def test_a_stored_account_has_the_librarys_churn_risk(api):
    tables = api.state.tables
    account_id = str(billed_account_ids(tables, tables.as_of).iloc[0])
    answer = api.get(f"/v1/accounts/{account_id}", api.key("admin"))
    assert answer.status == 200, answer.detail
    serving = api.state.champion("account-churn")
    [direct] = score_accounts(tables, serving.scorer, account_ids=[account_id])
    assert answer.body["churn_probability"] == pytest.approx(direct.churn_probability)
    assert answer.body["revenue_at_risk"] == pytest.approx(direct.revenue_at_risk)
    assert answer.body["owner_rep_id"] == direct.owner_rep_id
    assert [d["feature"] for d in answer.body["drivers"]] == [
        r.feature for r in direct.explanation.reasons
    ]
    # which churn, within how long: the subscription model's, as its training run logged it
    assert answer.body["churn"]["definition"] == "subscription"
    assert answer.body["churn"]["horizon_days"] == 90


def test_an_account_not_billed_is_404_saying_so(api):
    tables = api.state.tables
    billed = set(billed_account_ids(tables, tables.as_of))
    idle = tables.accounts.loc[~tables.accounts["account_id"].isin(billed), "account_id"]
    answer = api.get(f"/v1/accounts/{idle.iloc[0]}", api.key("admin"))
    assert answer.status == 404
    assert "the model scores every account billed recurring revenue" in answer.body["detail"]
    assert (
        api.get("/v1/accounts/NO-SUCH", api.key("admin")).body["detail"] == "no account 'NO-SUCH'"
    )


def test_revenue_at_risk_totals_by_rep_team_and_region_stay_in_reach(api):
    from service.deps import subtree
    from service.state import CHURN_MODEL

    state = api.state
    scores = list(state.account_scores(state.champion(CHURN_MODEL)).values())
    everything = sum(s.revenue_at_risk for s in scores)
    admin = api.key("admin")
    for level in ("rep", "team", "region"):
        answer = api.get(f"/v1/churn/at-risk?level={level}", admin)
        assert answer.status == 200, answer.detail
        totals = answer.body["totals"]
        assert sum(t["revenue_at_risk"] for t in totals) == pytest.approx(everything)
        assert sum(t["accounts"] for t in totals) == len(scores)
        at_risk = [t["revenue_at_risk"] for t in totals]
        assert at_risk == sorted(at_risk, reverse=True)
    reps = state.store().reps
    manager = str(reps.loc[reps["role"] == "rep", "manager_id"].iloc[0])
    within = subtree(reps, manager)
    mine = [s for s in scores if s.owner_rep_id in within]
    answer = api.get("/v1/churn/at-risk?level=rep", api.key("manager", manager))
    assert answer.status == 200, answer.detail
    assert {t["name"] for t in answer.body["totals"]} <= within
    assert sum(t["revenue_at_risk"] for t in answer.body["totals"]) == pytest.approx(
        sum(s.revenue_at_risk for s in mine)
    )
    assert api.get("/v1/churn/at-risk", api.key("crm")).status == 403
    assert api.get("/v1/churn/at-risk?level=planet", admin).status == 422


def test_an_id_asked_for_as_a_float_is_told_the_id_the_import_kept(api, monkeypatch):
    """An export that wrote integer ids as floats (17850.0) is stored without the '.0': a caller
    asking with the export's spelling is told the id to use, if it may see that account."""
    owners = {**api.state.account_owners, "17850": "R0001"}
    monkeypatch.setattr(api.state, "account_owners", owners)
    answer = api.get("/v1/accounts/17850.0", api.key("admin"))
    assert answer.status == 404 and "ask for '17850'" in answer.body["detail"]
    rep = api.get("/v1/accounts/17850.0", api.key("rep", rep_id="R0004"))  # not theirs
    assert rep.status == 404 and rep.body["detail"] == "no account '17850.0'"
