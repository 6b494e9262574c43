"""Scoring through the service on a real (small) champion: answers, validation, the log."""

from __future__ import annotations

import math

import pytest

from forecast.explain.scoring import open_deal_ids
from service.predlog import predictions_for

ROW = {
    "deal_id": "CRM-1",
    "stage": "proposal",
    "amount": 25000.0,
    "days_in_stage": 12,
    "days_since_last_activity": 30,
    "activities_30d": 2,
    "has_next_step": 0,
    "industry": "software",
}


def test_a_batch_is_scored_with_reasons_recommendations_model_and_as_of(api):
    key = api.key("crm")
    rows = [ROW, {"stage": "qualification", "amount": 5000.0}, {}]
    answer = api.post(
        "/v1/deals:scoreFeatures", {"deals": rows, "as_of": "2026-11-15T00:00:00Z"}, key
    )
    assert answer.status == 200, answer.detail
    body = answer.body
    assert body["model"] == {"name": "deal-win", "version": "1"}
    assert len(body["scores"]) == 3 and body["scores"][0]["deal_id"] == "CRM-1"
    for score in body["scores"]:
        assert 0.0 <= score["probability"] <= 1.0
        assert score["grade"] in {"A", "B", "C", "D"}
        assert score["model"] == body["model"] and score["as_of"].startswith("2026-11-15")
    assert body["scores"][0]["reasons"], "a scored deal says why"
    assert answer.headers["x-request-id"] == body["request_id"]


def test_every_score_is_in_the_prediction_log(api):
    key = api.key("crm")
    answer = api.post("/v1/deals:scoreFeatures", {"deals": [ROW, {"stage": "proposal"}]}, key)
    api.state.logs.flush()  # rows are written in batches, off the request path
    rows = predictions_for(api.state.engine, answer.body["request_id"])
    assert [r["subject"] for r in rows] == ["CRM-1", None]
    assert {r["model"] for r in rows} == {"deal-win"} and {r["model_version"] for r in rows} == {
        "1"
    }
    assert rows[0]["caller"] == key.split("_")[1]  # the key's id, never the secret
    assert rows[0]["output"]["probability"] == answer.body["scores"][0]["probability"]
    assert len({r["input_hash"] for r in rows}) == 2


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ({}, "every feature missing"),
        ({"stage": "no-such-stage", "industry": "martian mining"}, "unseen categories"),
        ({"amount": "NaN", "days_in_stage": "Infinity"}, "NaN and infinity"),
        ({"amount": 1e300, "deal_age_days": -5}, "absurd numbers"),
        ({"amount": "12.5"}, "a number sent as text"),
    ],
)
def test_odd_but_valid_rows_are_scored_not_failed(api, row, why):
    answer = api.post("/v1/deals:scoreFeatures", {"deals": [row]}, api.key("crm"))
    assert answer.status == 200, f"{why}: {answer.detail}"
    assert math.isfinite(answer.body["scores"][0]["probability"])


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"deals": [{"amount": "lots"}]}, "amount"),
        ({"deals": [{"stage": 3}]}, "stage"),
        ({"deals": [{"amout": 5.0}]}, "amout"),
        ({"deals": []}, "deals"),
        ({}, "deals"),
        ({"deals": [{}], "as_of": "yesterday-ish"}, "as_of"),
        ({"deals": "all of them"}, "deals"),
        ({"deals": [{}] * 1001}, "1000"),
    ],
)
def test_bad_input_is_422_naming_the_field_or_limit(api, body, named):
    answer = api.post("/v1/deals:scoreFeatures", body, api.key("crm"))
    assert answer.status == 422, answer.detail
    assert named in answer.detail


def test_not_json_at_all_is_422_not_500(api):
    answer = api.call("POST", "/v1/deals:scoreFeatures", key=api.key("crm"), data=b"{not json")
    assert answer.status == 422


def test_a_full_batch_of_1000_is_scored(api):
    answer = api.post("/v1/deals:scoreFeatures", {"deals": [ROW] * 1000}, api.key("crm"))
    assert answer.status == 200 and len(answer.body["scores"]) == 1000


def test_a_stored_deal_scores_like_the_library(api):
    tables = api.state.tables
    deal_id = str(open_deal_ids(tables, tables.as_of).iloc[0])
    answer = api.get(f"/v1/deals/{deal_id}", api.key("admin"))
    assert answer.status == 200, answer.detail
    assert answer.body["deal_id"] == deal_id and answer.body["as_of"].startswith("2026-11-15")


def test_models_readyz_and_metrics_show_the_champion(api):
    assert api.get("/readyz").status == 200
    models = api.get("/v1/models", api.key("crm")).body["models"]
    assert [(m["name"], m["version"], m["status"]) for m in models] == [
        ("account-churn", "1", "serving"),
        ("deal-win", "1", "serving"),
    ]
    api.post("/v1/deals:scoreFeatures", {"deals": [ROW]}, api.key("crm"))
    text = api.get("/metrics").body
    assert 'forecast_model_version{model="deal-win"} 1' in text
    assert 'forecast_predictions_total{model="deal-win"}' in text
    assert 'route="/v1/deals:scoreFeatures",status="200"' in text


def test_reload_is_for_admins_and_keeps_the_serving_version(api, at_trained_home):
    assert api.post("/v1/admin/reload", key=api.key("manager", rep_id="M01")).status == 403
    answer = api.post("/v1/admin/reload", key=api.key("admin"))
    assert answer.status == 200, answer.detail
    assert answer.body["changed"] == []
    assert [m["version"] for m in answer.body["models"]] == ["1", "1"]


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/v1/deals:scoreFeatures", b'{"deals": [{"deal_id": NaN}]}'),
        ("/v1/deals:scoreFeatures", b'{"deals": [{"deal_id": "\\ud800"}]}'),
        ("/v1/deals:scoreFeatures", b'{"deals": [{"amount": Infinity, "\\ud800": 1}]}'),
        ("/v1/accounts:score", b'{"accounts": [{"account_id": "\\ud800", "mrr": "x"}]}'),
        ("/v1/forecast/2026Q4:scenario", b'{"remove": [NaN]}'),
        ("/v1/forecast/2026Q4:scenario", b'{"slip": {"\\ud800": 10}}'),
    ],
)
def test_values_json_cannot_carry_are_a_422_on_every_route(api, path, raw):
    """NaN, infinities and lone surrogates: the 422 names them without echoing what cannot be
    rendered (it used to be a 500)."""
    answer = api.call("POST", path, key=api.key("admin"), data=raw)
    assert answer.status == 422, answer.detail
    assert answer.body["detail"] and all("loc" in e for e in answer.body["detail"])
