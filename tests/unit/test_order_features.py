"""Inactivity churn from orders: point-in-time features, labels, returns, the horizon, the
contract's order lines and the choice of definition."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecast.data.describe import describe
from forecast.data.sources import RawTable
from forecast.data.tables import CrmTables
from forecast.data.validate import validate
from forecast.data.violations import ValidationError
from forecast.features.accounts import churn_snapshot_dates
from forecast.features.asof import tables_as_of
from forecast.features.orders import (
    INACTIVITY_FEATURE_NAMES,
    customer_snapshots,
    inactivity_features,
    inactivity_horizon,
    inactivity_labels,
)
from forecast.training.churn_baselines import RecencyTable
from forecast.training.churn_task import ChurnParams, resolve
from forecast.training.task import NotEnoughDataError
from tests.orders_world import make_orders

DAY = pd.Timedelta(days=1)
T0 = pd.Timestamp("2025-01-01")


def _tables(lines: list[tuple], *, as_of: pd.Timestamp = T0 + 400 * DAY) -> CrmTables:
    """Orders from (order_id, account_id, day, amount) tuples."""
    frame = pd.DataFrame(lines, columns=["order_id", "account_id", "day", "amount"])
    frame["at"] = T0 + frame.pop("day") * DAY
    return CrmTables.from_frames({"orders": frame}, as_of=as_of)


@pytest.fixture(scope="module")
def world() -> CrmTables:
    return make_orders(600, seed=4)[0]


def test_features_read_only_the_lines_known_at_each_as_of(world):
    dates = churn_snapshot_dates(world.orders["at"].min(), world.as_of)[2::4]
    snapshots = customer_snapshots(world, dates)
    full = inactivity_features(world, snapshots)
    for as_of in dates:
        rows = snapshots["as_of"] == as_of
        cut = inactivity_features(tables_as_of(world, as_of), snapshots[rows])
        pd.testing.assert_frame_equal(full[rows], cut, check_dtype=False)


def test_what_happens_after_the_as_of_changes_no_feature(world):
    as_of = world.as_of - 200 * DAY
    snapshots = customer_snapshots(world, [as_of])
    before = inactivity_features(world, snapshots)
    customer = snapshots["account_id"].iloc[0]
    later = pd.DataFrame(
        {
            "order_id": ["LATE-1", "CLATE-2"],
            "account_id": [customer, customer],
            "at": [as_of + DAY, as_of + 2 * DAY],
            "product_id": ["P01", "P01"],
            "amount": [5_000.0, -9_000.0],  # a big purchase, and a return of older purchases
        }
    )
    orders = pd.concat([world.orders, later], ignore_index=True)
    after = inactivity_features(world.replace(orders=orders), snapshots)
    pd.testing.assert_frame_equal(before, after)


def test_an_order_whose_lines_span_the_as_of_is_what_its_known_lines_make_it():
    # order 2: bought on day 10, cancelled under the same id on day 30 (nets to less than 0)
    tables = _tables([("1", "a", 0, 100.0), ("2", "a", 10, 80.0), ("2", "a", 30, -90.0)])
    at = pd.DataFrame({"account_id": ["a"], "as_of": [T0 + 20 * DAY]})
    row = inactivity_features(tables, at).iloc[0]
    assert row["purchases"] == 2 and row["days_since_last_purchase"] == 10
    cut = inactivity_features(tables_as_of(tables, T0 + 20 * DAY), at)
    pd.testing.assert_frame_equal(inactivity_features(tables, at), cut)
    assert customer_snapshots(tables, [T0 + 20 * DAY])["account_id"].tolist() == ["a"]


def test_labels_count_purchases_not_returns_and_leave_the_censored_unknown():
    tables = _tables(
        [
            ("1", "buys-again", 0, 100.0),
            ("2", "buys-again", 60, 80.0),
            ("3", "only-returns", 0, 100.0),
            ("C3", "only-returns", 30, -100.0),  # a return is not a purchase
            ("4", "late", 0, 50.0),
            ("5", "late", 390, 50.0),
        ],
        as_of=T0 + 400 * DAY,
    )
    snapshots = pd.DataFrame(
        {
            "account_id": ["buys-again", "only-returns", "late", "late"],
            "as_of": [T0 + 10 * DAY, T0 + 10 * DAY, T0 + 10 * DAY, T0 + 350 * DAY],
        }
    )
    label = inactivity_labels(tables, snapshots, horizon_days=90)
    # bought on day 60 (inside 90 days); never bought again; bought on day 390 (after 100);
    # day 350 + 90 is beyond the export's end: unknown, even though a purchase came
    assert label.iloc[:3].tolist() == [0.0, 1.0, 1.0]
    assert np.isnan(label.iloc[3])


def test_spend_is_net_of_the_returns_known_and_recency_counts_purchases_only():
    tables = _tables(
        [
            ("1", "a", 0, 100.0),
            ("2", "a", 50, 300.0),
            ("C2", "a", 70, -60.0),
            ("C9", "a", 95, -40.0),  # after the as-of below: not known there
        ]
    )
    at = pd.DataFrame({"account_id": ["a"], "as_of": [T0 + 80 * DAY]})
    row = inactivity_features(tables, at).iloc[0]
    assert row["purchases"] == 2 and row["days_since_last_purchase"] == 30
    assert row["days_since_first_purchase"] == 80 and row["mean_days_between_purchases"] == 50
    assert row["spend_365d"] == pytest.approx(340.0) and row["spend_90d"] == pytest.approx(340.0)
    assert row["returns_share_365d"] == pytest.approx(60 / 400)
    assert row["mean_purchase_value"] == pytest.approx(340.0 / 2)  # net of the return known
    assert list(inactivity_features(tables, at).columns[2:]) == list(INACTIVITY_FEATURE_NAMES)


def test_an_order_returned_in_full_is_no_purchase_of_value_and_one_day_is_one_visit():
    tables = _tables(
        [
            ("1", "returned", 0, 77_184.0),
            ("C1", "returned", 0, -77_184.0),  # online-retail's customer 12346
            ("2", "same-day", 0, 50.0),
            ("3", "same-day", 0, 70.0),
            ("4", "same-day", 30, 60.0),
            ("5", "one-day", 10, 20.0),
            ("6", "one-day", 10, 30.0),
        ]
    )
    at = pd.DataFrame({"account_id": ["returned", "same-day", "one-day"], "as_of": T0 + 40 * DAY})
    rows = inactivity_features(tables, at).set_index("account_id")
    assert rows.loc["returned", "mean_purchase_value"] == 0.0
    # three invoices on two days: one gap of 30 days, not two of 15
    assert rows.loc["same-day", "mean_days_between_purchases"] == 30
    assert rows.loc["same-day", "purchases"] == 3
    # two invoices on one day say nothing of the gap between visits
    assert np.isnan(rows.loc["one-day", "mean_days_between_purchases"])
    assert np.isnan(rows.loc["one-day", "recency_over_gap"])


def test_only_customers_who_bought_in_the_last_year_are_snapshotted():
    tables = _tables([("1", "recent", 300, 10.0), ("2", "gone", 0, 10.0)])
    snapshots = customer_snapshots(tables, [T0 + 380 * DAY])
    assert snapshots["account_id"].tolist() == ["recent"]


def test_the_horizon_covers_most_gaps_rounded_up_to_whole_months():
    lines = [(f"{c}-{k}", c, k * gap, 10.0) for c, gap in (("x", 20), ("y", 45)) for k in range(5)]
    # gaps: four of 20 days and four of 45: the 80th percentile is 45, rounded up to 60
    assert inactivity_horizon(_tables(lines)) == 60
    with pytest.raises(ValueError, match="no customer bought on two different days"):
        inactivity_horizon(_tables([("1", "x", 0, 10.0)]))


def test_the_recency_rule_learns_rates_by_recency_and_single_purchase():
    frame = pd.DataFrame({"days_since_last_purchase": [5, 5, 200, 200], "purchases": [3, 3, 1, 1]})
    rule = RecencyTable.learn(frame, np.array([0, 0, 1, 1]))
    p = rule.predict(frame)
    assert p[0] < rule.overall < p[2]


def test_an_order_line_needs_an_amount_or_a_quantity_and_a_price():
    frame = pd.DataFrame(
        {
            "order_id": ["1", "2", "C2"],
            "account_id": ["a", "a", ""],
            "at": ["2025-01-02", "2025-01-03", "2025-01-04"],
            "quantity": ["3", "", "-1"],
            "unit_price": ["2.5", "4", "2.5"],
        }
    )
    with pytest.raises(ValidationError) as refused:
        validate({"orders": RawTable("orders", frame, "lines.csv")}, as_of=T0 + 10 * DAY)
    (problem,) = refused.value.violations
    assert (problem.source, problem.location, problem.column) == ("lines.csv", "row 2", "amount")
    frame.loc[1, "quantity"] = "2"
    tables = validate({"orders": RawTable("orders", frame, "lines.csv")}, as_of=T0 + 10 * DAY)
    assert tables.orders["amount"].tolist() == [7.5, 8.0, -2.5]
    assert tables.orders["account_id"].isna().tolist() == [False, False, True]


def test_the_definition_follows_what_the_export_holds(world):
    params = resolve(ChurnParams(), world)
    assert (params.definition, params.horizon_days) == ("inactivity", inactivity_horizon(world))
    assert resolve(ChurnParams(horizon_days=45), world).horizon_days == 45
    with pytest.raises(NotEnoughDataError, match="subscription churn needs recurring revenue"):
        resolve(ChurnParams(definition="subscription"), world)
    empty = world.replace(orders=world.orders.iloc[:0])
    with pytest.raises(NotEnoughDataError, match="import a revenue or an orders table"):
        resolve(ChurnParams(), empty)


def test_the_description_counts_lines_orders_customers_and_returns():
    tables = _tables(
        [("1", "a", 0, 100.0), ("1", "a", 0, 50.0), ("C1", "a", 9, -30.0), ("2", None, 3, 20.0)]
    )
    summary = describe(tables).orders
    assert summary == {
        "lines": 4,
        "orders": 3,
        "customers": 1,
        "lines_without_customer": 1,
        "returned_share": pytest.approx(30 / 170),
    }
    assert describe(tables.replace(orders=tables.orders.iloc[:0])).orders == {}
