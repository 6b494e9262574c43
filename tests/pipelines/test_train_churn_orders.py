"""Inactivity churn end to end, the way a user of a transactional business runs it: an order-line
export and a mapping, `forecast data import`, `forecast train churn`, `forecast score accounts`.

The export is a generated buy-till-you-die business (tests/orders_world.py) written as invoice
lines with quantities and unit prices, cancellations under `C` ids and lines without a customer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from forecast.cli import app
from forecast.data.store import read_store
from forecast.features.orders import customer_snapshots
from forecast.revenue.churn import revenue_at_risk, revenue_at_risk_by
from forecast.settings import get_settings
from forecast.training.churn_task import MODEL_NAME, definition_of
from forecast.training.registry import champion_version, load_champion
from tests.orders_world import make_orders

MAPPING = """\
as_of: {as_of:%Y-%m-%d}
tables:
  orders:
    file: invoices.csv
    date_format: "%d/%m/%Y %H:%M"
    columns: {{order_id: Invoice, account_id: Customer, at: Date, product_id: Item,
              quantity: Qty, unit_price: Price}}
  accounts:
    file: invoices.csv
    date_format: "%d/%m/%Y %H:%M"
    one_row_per: account_id
    columns: {{account_id: Customer, region: Country, created_at: Date}}
"""
COUNTRIES = ("Germany", "France", "Spain")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict, str, pd.DataFrame, Path]:
    """A fresh FORECAST_HOME after import, training and scoring through the CLI."""
    home = tmp_path_factory.mktemp("orders-home")
    export = tmp_path_factory.mktemp("orders-export")
    tables, _ = make_orders(1500, seed=2)
    lines = tables.orders
    quantity = np.where(lines["amount"] < 0, -2, 2)
    pd.DataFrame(
        {
            "Invoice": lines["order_id"],
            "Customer": lines["account_id"].fillna(""),
            "Date": lines["at"].dt.strftime("%d/%m/%Y %H:%M"),
            "Item": lines["product_id"],
            "Qty": quantity,
            "Price": (lines["amount"] / quantity).round(4),
            # a customer's country on every line, as the online-retail export has it
            "Country": [
                "" if pd.isna(c) else COUNTRIES[int(str(c).lstrip("C").lstrip("0") or 0) % 3]
                for c in lines["account_id"]
            ],
        }
    ).to_csv(export / "invoices.csv", index=False)
    (export / "mapping.yaml").write_text(MAPPING.format(as_of=tables.as_of))
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FORECAST_HOME", str(home))
        get_settings.cache_clear()
        mapping = str(export / "mapping.yaml")
        imported = runner.invoke(app, ["data", "import", str(export), "--mapping", mapping])
        assert imported.exit_code == 0, imported.output
        shown = runner.invoke(app, ["train", "churn", "--json"])
        assert shown.exit_code == 0, shown.output
        scores = home / "scores.csv"
        scored = runner.invoke(app, ["score", "accounts", "--all", "--out", str(scores)])
        assert scored.exit_code == 0, scored.output
    get_settings.cache_clear()
    outputs = imported.output + scored.output
    return home, json.loads(shown.stdout), outputs, pd.read_csv(scores), export


@pytest.fixture
def home(trained, monkeypatch) -> Path:
    monkeypatch.setenv("FORECAST_HOME", str(trained[0]))
    get_settings.cache_clear()
    return trained[0]


def test_an_order_export_trains_inactivity_churn_that_beats_the_recency_rule(trained):
    _, outcome, output, *_ = trained
    assert "orders" in output and outcome["promoted"], outcome["reason"]
    m = outcome["metrics"]
    assert m["model"]["n"] == m["rate_table"]["n"] == m["base_rate"]["n"]
    assert m["model"]["log_loss"] < m["rate_table"]["log_loss"] < m["base_rate"]["log_loss"]
    assert m["model"]["auc"] > m["rate_table"]["auc"] > 0.6
    assert m["model"]["ece"] < 0.05
    assert "truth" not in m  # the subscription truth does not describe this business


def test_the_card_says_which_churn_and_why(trained):
    card = (trained[0] / "models" / "account-churn.md").read_text()
    assert "Churn definition: **inactivity** (the export has orders" in card
    assert "a customer makes no purchase within 90 days" in card
    assert "recency table (days since last purchase x one purchase)" in card
    assert "days_since_last_purchase" in card and "mrr" not in card


def test_every_customer_with_a_purchase_in_the_year_is_scored(trained, home):
    scores = trained[3]
    tables = read_store()
    expected = customer_snapshots(tables, [tables.as_of])["account_id"]
    assert sorted(scores["account_id"]) == sorted(expected)
    assert set(scores["definition"]) == {"inactivity"}
    assert scores["churn_probability"].between(0, 1).all()
    assert (scores["revenue_at_risk"] <= scores["arr"] + 1e-9).all()
    assert scores["mrr"].isna().all() and (scores["arr"] >= 0).all()
    assert scores["revenue_at_risk"].is_monotonic_decreasing


def test_revenue_at_risk_is_expected_spend_lost_and_totals_by_segment(home):
    tables = read_store()
    model = load_champion(MODEL_NAME, champion_version(MODEL_NAME))
    assert definition_of(model).name == "inactivity"
    at_risk = revenue_at_risk(tables, model, as_of=tables.as_of)
    lost = at_risk["churn_probability"] * at_risk["arr"]
    assert np.allclose(at_risk["revenue_at_risk"], lost)
    # a customer's year of spend net of returns: what they take away if they stop buying
    year = tables.orders[tables.orders["at"] > tables.as_of - pd.Timedelta(days=365)]
    net = year.groupby("account_id")["amount"].sum().clip(lower=0)
    assert np.allclose(at_risk["arr"], net.reindex(at_risk["account_id"]).fillna(0))
    totals = revenue_at_risk_by(at_risk, "team")
    assert totals["revenue_at_risk"].sum() == pytest.approx(at_risk["revenue_at_risk"].sum())


def test_customers_who_stopped_buying_score_higher_than_those_still_buying(home):
    tables = read_store()
    model = load_champion(MODEL_NAME, champion_version(MODEL_NAME))
    at_risk = revenue_at_risk(tables, model, as_of=tables.as_of - pd.Timedelta(days=120))
    frame = definition_of(model).features_at(tables, tables.as_of - pd.Timedelta(days=120))
    quiet = frame.set_index("account_id")["days_since_last_purchase"] > 120
    p = at_risk.set_index("account_id")["churn_probability"]
    assert p[quiet[quiet].index].mean() > p[quiet[~quiet].index].mean() + 0.2


def test_no_driver_says_a_value_pushes_against_what_customers_who_stayed_show(home):
    """A logistic's correlated recency terms split one signal: without the guard, "days since
    the last purchase: 320 days" was said to lower the risk. A driver is stated only in the
    direction its value against customers who stayed supports."""
    from forecast.explain.account_scoring import retained_account_yardsticks, score_accounts
    from forecast.explain.catalogue import load_catalogue
    from forecast.explain.scorers import scorer_for

    tables = read_store()
    model = load_champion(MODEL_NAME, champion_version(MODEL_NAME))
    definition = definition_of(model)
    typical = retained_account_yardsticks(tables, as_of=tables.as_of, definition=definition)
    assert typical is not None and typical.loc["*", "days_since_last_purchase"] > 0
    scores = score_accounts(tables, scorer_for(model, definition.features), typical=typical)
    helps = {name: e.helps for name, e in load_catalogue().account.items() if e.helps}
    checked = against = 0
    for score in scores:
        for reason in score.explanation.reasons:
            yardstick = typical.loc["*"].get(reason.feature, np.nan)
            if reason.feature not in helps or pd.isna(yardstick) or reason.value == yardstick:
                continue
            checked += 1
            helpful = (reason.value > yardstick) == (helps[reason.feature] == "up")
            against += helpful != (reason.direction == "lowers")
    assert checked > 1000 and against == 0, (checked, against)


def test_the_doctor_finds_nothing_blocking_what_an_order_export_is_for(home):
    runner = CliRunner()
    doctor = runner.invoke(app, ["data", "doctor"], env={"COLUMNS": "120"})
    assert doctor.exit_code == 0, doctor.output
    assert "Deals: none in the export" in doctor.output
    assert "nothing blocks training churn" in doctor.output
    assert "the export has no deals" in doctor.output  # no bookings forecast, said why
    revenue = runner.invoke(app, ["revenue"], env={"COLUMNS": "120"})
    assert revenue.exit_code == 1
    assert "no bookings forecast from the stored data: the export has no deals" in revenue.output


def test_the_service_serves_the_inactivity_champion_on_stored_customers(trained, home):
    from service.app import create_app
    from tests.service.conftest import home_env, serve
    from tests.service.test_dashboard_access import _request, _sign_in

    scores = trained[3].set_index("account_id")
    customer = str(scores.index[0])  # the most revenue at risk
    with home_env(trained[0]), serve(create_app()) as api:
        # no deals in an order export: readiness does not wait for a deal-win champion
        ready = api.get("/readyz")
        assert ready.status == 200 and ready.body["problems"] == [], ready.body
        assert "no closed deals" in ready.body["unsupported"]["deal-win"]
        assert ready.body["models"]["account-churn"] == "1"  # the churn champion serves
        admin = api.key("admin")
        quarter = api.get("/v1/forecast/2026Q1", key=admin)  # what it cannot give: 409, why
        assert quarter.status == 409, quarter.body
        assert (
            "no bookings forecast from the stored data: the export has no deals"
            in quarter.body["detail"]
        )
        one = api.get(f"/v1/accounts/{customer}", key=admin)
        assert one.status == 200, one.body
        assert one.body["churn"]["definition"] == "inactivity"
        assert one.body["churn"]["horizon_days"] == 90
        # the same figures as `forecast score accounts --all`
        assert one.body["churn_probability"] == pytest.approx(
            scores.loc[customer, "churn_probability"], abs=1e-9
        )
        assert one.body["arr"] == pytest.approx(scores.loc[customer, "arr"])
        assert one.body["segment"] == scores.loc[customer, "segment"]  # a purchase band
        texts = " ".join(d["text"] for d in one.body["drivers"])
        assert "purchase" in texts and one.body["retention_actions"] == []
        lapsed = api.get("/v1/accounts/NOT-A-CUSTOMER", key=admin)
        assert lapsed.status == 404
        totals = api.get("/v1/churn/at-risk?level=team", key=admin)
        assert totals.status == 200, totals.body
        assert sum(t["accounts"] for t in totals.body["totals"]) == len(scores)
        assert sum(t["revenue_at_risk"] for t in totals.body["totals"]) == pytest.approx(
            scores["revenue_at_risk"].sum()
        )
        # no sales team: by region is by the customers' own country
        regions = api.get("/v1/churn/at-risk?level=region", key=admin).body["totals"]
        assert {t["name"] for t in regions} == set(COUNTRIES), regions
        assert sum(t["accounts"] for t in regions) == len(scores)
        posted = api.post(
            "/v1/accounts:score", {"accounts": [{"account_id": customer}]}, key=api.key("crm")
        )
        assert posted.status == 409 and "inactivity-churn model" in posted.body["detail"]
        assert "GET /v1/accounts/{account_id}" in posted.body["detail"]
        # ... which the CRM's own key may call: its account pages show the risk
        read = api.get(f"/v1/accounts/{customer}", key=api.key("crm"))
        assert (
            read.status == 200 and read.body["churn_probability"] == one.body["churn_probability"]
        )
        cookie = _sign_in(api, admin)
        start = _request(api, "GET", "/dashboard", cookie=cookie)  # the first page it can fill
        assert start.status == 303 and start.headers["location"] == "/dashboard/churn"
        forecast = _request(api, "GET", "/dashboard/forecast", cookie=cookie)  # typed in
        assert forecast.status == 409 and "the export has no deals" in forecast.text
        page = _request(api, "GET", "/dashboard/churn", cookie=cookie)
        assert page.status == 200, page.text
        assert 'href="/dashboard/forecast"' not in page.text
        assert 'href="/dashboard/coaching"' not in page.text
        assert "Revenue at risk by region</summary>" in page.text  # no rep or team: no table
        assert "the chance that a customer makes no purchase within 90 days" in page.text
        assert f"{len(scores):,} accounts" in page.text or f"{len(scores)} accounts" in page.text
        assert "Traceback" not in page.text


def test_a_horizon_set_by_hand_is_the_one_trained_and_carded(trained, forecast_home):
    export = trained[4]
    runner = CliRunner()
    mapping = str(export / "mapping.yaml")
    assert runner.invoke(app, ["data", "import", str(export), "--mapping", mapping]).exit_code == 0
    shown = runner.invoke(app, ["train", "churn", "--horizon-days", "60", "--json"])
    assert shown.exit_code == 0, shown.output
    card = (forecast_home / "models" / "account-churn.md").read_text()
    assert "a customer makes no purchase within 60 days" in card
    refused = runner.invoke(app, ["train", "churn", "--definition", "subscription"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "subscription churn needs recurring revenue rows" in refused.output
