"""The backtest's parts that need no world: leaning on a source by its earlier error, and the
weighted pipeline's typical cycle for deals without an expected close."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecast.revenue_backtest import FALLBACK, expected_inside, lean_by_error


def points(errors: dict[str, dict[str, list[float]]], actual: float = 100.0) -> pd.DataFrame:
    """Backtest points: node -> method -> forecast - actual per quarter (2025Q1 on)."""
    rows = []
    for node, by_method in errors.items():
        for method, errs in by_method.items():
            for i, err in enumerate(errs):
                value = actual + err
                rows.append(
                    dict(quarter=f"2025Q{i + 1}", week=1, as_of=pd.Timestamp("2025-01-01"),
                         method=method, level="rep", node=node, mean=value, p10=value,
                         p50=value, p90=value, target=np.nan, actual=actual)
                )  # fmt: skip
    return pd.DataFrame(rows)


def chosen(frame: pd.DataFrame) -> dict[tuple[str, str], str]:
    leaned = lean_by_error(frame)
    assert (leaned["method"] == FALLBACK).all()
    return {(r.node, r.quarter): r.source for r in leaned.itertuples()}


def test_a_node_leans_on_the_source_that_erred_least_before():
    frame = points(
        {
            "good_pipeline": {"simulation": [5, 5, 5, 5], "mean_last_four": [40, 40, 40, 40]},
            "thin_pipeline": {"simulation": [60, 60, 60, 60], "mean_last_four": [10, 10, 10, 10]},
        }
    )
    picks = chosen(frame)
    assert picks[("good_pipeline", "2025Q3")] == "simulation"
    assert picks[("thin_pipeline", "2025Q3")] == "mean_last_four"
    # the first quarter has nothing earlier to judge by: the simulation
    assert picks[("thin_pipeline", "2025Q1")] == "simulation"


def test_a_quarter_own_error_never_decides_its_source():
    # the series is perfect in Q1-Q2, then fails in Q3: Q3 still leans on it (what was known)
    frame = points({"n": {"simulation": [20, 20, 20, 20], "statsforecast": [0, 0, 90, 0]}})
    picks = chosen(frame)
    assert picks[("n", "2025Q2")] == "statsforecast"
    assert picks[("n", "2025Q3")] == "statsforecast"
    # by Q4 the series' error so far (90 over 300) is above the simulation's (60 over 300)
    assert picks[("n", "2025Q4")] == "simulation"
    leaned = lean_by_error(frame).set_index("quarter")
    assert leaned.loc["2025Q3", "mean"] == 190.0  # the series' own forecast, as it was


def test_a_tie_goes_to_the_simulation():
    frame = points({"n": {"simulation": [10, 10, 10], "naive_last_quarter": [-10, -10, -10]}})
    assert set(chosen(frame).values()) == {"simulation"}


def test_a_deal_without_expected_close_counts_by_the_typical_cycle():
    as_of = pd.Timestamp("2025-04-01")
    deals = pd.DataFrame(
        {
            "as_of": as_of,
            "expected_close": [pd.NaT, pd.NaT, pd.NaT, pd.Timestamp("2025-05-01")],
            "deal_age_days": [100.0, 10.0, 60.0, 10.0],
        }
    )
    end = pd.Timestamp("2025-07-01")  # 91 days after as_of
    inside = expected_inside(deals, end, cycle_days=90.0)
    # overdue: due now; 80 days to go: inside; 30 days to go: inside; its own date: inside
    assert inside.tolist() == [True, True, True, True]
    assert expected_inside(deals, end, cycle_days=200.0).tolist() == [False, False, False, True]
    # no cycle known (nothing won yet): only deals with a date can count
    assert expected_inside(deals, end, cycle_days=float("nan")).tolist() == [
        False, False, False, True,
    ]  # fmt: skip


def test_a_series_only_a_little_better_is_not_leaned_on():
    # 10 against 12: within the margin a few quarters cannot tell apart
    frame = points({"n": {"simulation": [12, 12, 12, 12], "mean_last_four": [10, 10, 10, 10]}})
    assert set(chosen(frame).values()) == {"simulation"}
    without = lean_by_error(frame, margin=0.0)
    assert set(without.loc[without["quarter"] != "2025Q1", "source"]) == {"mean_last_four"}
