"""A store that cannot give an answer at all says what the export lacks: a 409, never a 500 or a
503 that sends the caller to train what cannot be trained; readiness does not wait for a model
the data cannot train; a record scored "now" against a store that ends long before is told so."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from forecast.data.store import read_store, write_store
from forecast.training.registry import client
from service.app import create_app
from service.state import CHURN_MODEL, ServiceConfig
from tests.service.conftest import home_env, serve


@pytest.fixture(scope="module")
def thin(trained_home, tmp_path_factory):
    """The trained home's copy whose store lost its amounts, recurring revenue and orders (as a
    deals-only export without an amount column imports), with no churn champion."""
    home = tmp_path_factory.mktemp("thin-home")
    shutil.copytree(trained_home, home, symlinks=True, dirs_exist_ok=True)
    with home_env(home):
        tables = read_store()
        thin = tables.replace(
            deals=tables.deals.assign(amount=np.nan),
            revenue=tables.revenue.iloc[:0],
            orders=tables.orders.iloc[:0],
        )
        write_store(thin, source="deals without amounts", imported_at=pd.Timestamp("2026-11-16"))
        client().delete_registered_model_alias(CHURN_MODEL, "champion")
        # a store is stale after a day here: the warning is checked whatever today's date
        with serve(create_app(config=ServiceConfig(stale_store_days=0))) as api:
            yield api


def test_readiness_does_not_wait_for_a_model_the_data_cannot_train(thin):
    ready = thin.get("/readyz")
    assert ready.status == 200 and ready.body["ready"] and ready.body["problems"] == []
    assert "churn cannot be defined" in ready.body["unsupported"][CHURN_MODEL]
    assert ready.body["models"]["deal-win"] is not None


def test_what_the_data_cannot_give_is_409_naming_what_it_lacks(thin):
    admin = thin.key("admin")
    quarter = str(pd.Timestamp(thin.state.tables.as_of).to_period("Q"))
    forecast = thin.get(f"/v1/forecast/{quarter}", key=admin)
    assert forecast.status == 409, forecast.detail
    assert "no stored deal carries an amount" in forecast.body["detail"]
    assert "deals.amount" in forecast.body["detail"]
    at_risk = thin.get("/v1/churn/at-risk", key=admin)
    assert at_risk.status == 409, at_risk.detail
    assert "account-churn cannot be trained on the stored data" in at_risk.body["detail"]
    assert "forecast train churn" not in at_risk.body["detail"]


def test_a_record_scored_now_long_after_the_store_ends_is_warned(thin):
    record = {
        "deal_id": "CRM-1",
        "stage": "qualification",
        "amount": 20000,
        "created_at": "2026-10-01T00:00:00Z",
    }
    as_of = pd.Timestamp(thin.state.tables.as_of).tz_localize("UTC").isoformat()
    crm = thin.key("crm")
    pinned = thin.post("/v1/deals:score", {"as_of": as_of, "deals": [record]}, key=crm)
    assert pinned.status == 200 and pinned.body["warnings"] == []
    now = thin.post("/v1/deals:score", {"deals": [record]}, key=crm)
    assert now.status == 200
    days = (pd.Timestamp.now(tz="UTC").tz_localize(None) - thin.state.tables.as_of).days
    assert days > 0  # the fixture's store ends 2026-11-15
    (warning,) = now.body["warnings"]
    assert f"{days:,} days after the stored CRM's data ends" in warning
    assert "send `as_of`" in warning


def test_the_menu_leaves_out_a_page_the_data_cannot_fill_and_its_error_keeps_the_menu(thin):
    from tests.service.test_dashboard_access import _request, _sign_in

    cookie = _sign_in(thin, thin.key("admin"))
    models = _request(thin, "GET", "/dashboard/models", cookie=cookie)
    assert models.status == 200
    assert 'href="/dashboard/pipeline"' in models.text
    assert 'href="/dashboard/churn"' not in models.text  # no churn model can be trained
    # deals without amounts give no bookings forecast: no Forecast in the menu, nor to land on
    assert 'href="/dashboard/forecast"' not in models.text
    start = _request(thin, "GET", "/dashboard", cookie=cookie)
    assert start.status == 303 and start.headers["location"] == "/dashboard/pipeline"
    churn = _request(thin, "GET", "/dashboard/churn", cookie=cookie)  # typed or bookmarked
    assert churn.status == 409 and "churn cannot be defined" in churn.text
    assert 'href="/dashboard/pipeline"' in churn.text and "Sign out" in churn.text


@pytest.fixture(scope="module")
def one_table(trained_home, tmp_path_factory):
    """The trained home's copy whose store is what a one-table export keeps (no activities,
    next steps, stage history or expected close dates), its champion the same."""
    from forecast.data.derive import deals_only

    home = tmp_path_factory.mktemp("one-table-home")
    shutil.copytree(trained_home, home, symlinks=True, dirs_exist_ok=True)
    with home_env(home):
        write_store(
            deals_only(read_store()), source="one table", imported_at=pd.Timestamp("2026-11-16")
        )
        with serve(create_app()) as api:
            yield api


def test_no_action_for_any_deal_is_said_once_with_why(one_table):
    """Every action acts on what the export lacks: said once, in words, not as an empty list
    per deal that reads as 'nothing to do'."""
    from tests.service.test_dashboard_access import _request, _sign_in

    as_of = pd.Timestamp(one_table.state.tables.as_of).tz_localize("UTC").isoformat()
    record = {"deal_id": "CRM-1", "stage": "qualification", "amount": 20000,
              "created_at": "2026-10-01T00:00:00Z"}  # fmt: skip
    answer = one_table.post("/v1/deals:score", {"as_of": as_of, "deals": [record]},
                            key=one_table.key("crm"))  # fmt: skip
    assert answer.status == 200, answer.detail
    assert answer.body["scores"][0]["recommendations"] == []
    (why,) = answer.body["warnings"]
    assert why.startswith("No action is recommended to any deal: the catalogue's actions act on")
    assert "days since the last touch" in why and "the stored CRM holds none of them" in why
    cookie = _sign_in(one_table, one_table.key("admin"))
    page = _request(one_table, "GET", "/dashboard/pipeline", cookie=cookie)
    assert page.status == 200
    assert page.text.count("No action is recommended to any deal") == 1
    assert "No action (see above)." in page.text
    assert "No action in the catalogue moves this deal." not in page.text
    deal_id = sorted(one_table.state.deal_scores(one_table.state.champion("deal-win")))[0]
    deal = _request(one_table, "GET", f"/dashboard/deals/{deal_id}", cookie=cookie)
    assert deal.status == 200 and "No action is recommended to any deal" in deal.text


def test_explain_deal_says_why_no_action_applies(one_table):
    from typer.testing import CliRunner

    from forecast.cli import app

    deal_id = sorted(one_table.state.deal_scores(one_table.state.champion("deal-win")))[0]
    with home_env(one_table.state.settings.home):
        shown = CliRunner().invoke(app, ["explain", "deal", deal_id])
    assert shown.exit_code == 0, shown.output
    assert "No action is recommended to any deal" in " ".join(shown.output.split())


@pytest.fixture(scope="module")
def few_closed(trained_home, tmp_path_factory):
    """The trained home's copy whose store kept 30 closed deals, with no deal-win champion:
    training's own checks refuse it, so "train one" would send the user round in circles."""
    from forecast.data.derive import derive_history

    home = tmp_path_factory.mktemp("few-closed-home")
    shutil.copytree(trained_home, home, symlinks=True, dirs_exist_ok=True)
    with home_env(home):
        tables = read_store()
        deals = tables.deals
        closed = deals[deals["outcome"] != "open"].head(30)
        kept = pd.concat([closed, deals[deals["outcome"] == "open"]])
        few = tables.replace(deals=kept, deal_history=derive_history(kept),
                             activities=tables.activities.iloc[:0])  # fmt: skip
        write_store(few, source="30 closed deals", imported_at=pd.Timestamp("2026-11-16"))
        client().delete_registered_model_alias("deal-win", "champion")
        with serve(create_app()) as api:
            yield api


def test_a_win_model_training_would_refuse_is_said_so_not_train_one(few_closed):
    admin = few_closed.key("admin")
    listed = {m["name"]: m for m in few_closed.get("/v1/models", admin).body["models"]}
    detail = listed["deal-win"]["detail"]
    assert "no deal-win model can be trained on the stored data" in detail, detail
    assert "at least 40 of each" in detail and "train one" not in detail
    ready = few_closed.get("/readyz")
    assert ready.status == 503
    assert any("no deal-win model can be trained" in p for p in ready.body["problems"])
    record = {"deal_id": "CRM-1", "stage": "proposal", "created_at": "2026-10-01T00:00:00Z"}
    scored = few_closed.post("/v1/deals:score", {"deals": [record]}, few_closed.key("crm"))
    assert scored.status == 409 and "at least 40 of each" in scored.body["detail"]
