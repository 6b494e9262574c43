"""The backtest's parts that need no world: leaning on a source by its earlier error, and the
weighted pipeline's typical cycle for deals without an expected close."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecast.revenue.lean import FALLBACK, MIN_LEAN_QUARTERS, lean_by_error
from forecast.revenue.timing import expected_inside


def quarter(i: int) -> str:
    """The i-th backtest quarter (0: 2024Q1)."""
    return str(pd.Period("2024Q1", "Q") + i)


def points(errors: dict[str, dict[str, list[float]]], actual: float = 100.0) -> pd.DataFrame:
    """Backtest points: node -> method -> forecast - actual per quarter (2024Q1 on)."""
    rows = []
    for node, by_method in errors.items():
        for method, errs in by_method.items():
            for i, err in enumerate(errs):
                value = actual + err
                rows.append(
                    dict(quarter=quarter(i), week=1, as_of=pd.Timestamp("2025-01-01"),
                         method=method, level="rep", node=node, mean=value, p10=value,
                         p50=value, p90=value, target=np.nan, actual=actual, parent="T",
                         booked=0.0)
                )  # fmt: skip
    return pd.DataFrame(rows)


def chosen(frame: pd.DataFrame) -> dict[tuple[str, str], str]:
    leaned = lean_by_error(frame)
    assert (leaned["method"] == FALLBACK).all()
    return {(r.node, r.quarter): r.source for r in leaned.itertuples()}


def test_a_node_leans_on_the_source_that_erred_least_before():
    frame = points(
        {
            "good_pipeline": {"simulation": [5] * 6, "mean_last_four": [40] * 6},
            "thin_pipeline": {"simulation": [60] * 6, "mean_last_four": [10] * 6},
        }
    )
    picks = chosen(frame)
    assert MIN_LEAN_QUARTERS == 4
    assert picks[("good_pipeline", quarter(4))] == "simulation"
    assert picks[("thin_pipeline", quarter(4))] == "mean_last_four"
    # before four earlier quarters there is too little to judge by: the simulation
    assert {picks[("thin_pipeline", quarter(i))] for i in range(4)} == {"simulation"}


def test_a_quarter_own_error_never_decides_its_source():
    # the series is perfect in the first four quarters, then fails in the fifth: the fifth
    # still leans on it (what was known)
    frame = points({"n": {"simulation": [20] * 6, "statsforecast": [0, 0, 0, 0, 90, 0]}})
    picks = chosen(frame)
    assert picks[("n", quarter(4))] == "statsforecast"
    # by the sixth the series' error so far (90 over 500) is above the simulation's (100 over
    # 500, counted 40 % lower)
    assert picks[("n", quarter(5))] == "simulation"
    leaned = lean_by_error(frame).set_index("quarter")
    assert leaned.loc[quarter(4), "mean"] == 190.0  # the series' own forecast, as it was


def test_a_tie_goes_to_the_simulation():
    frame = points({"n": {"simulation": [10] * 6, "naive_last_quarter": [-10] * 6}})
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
    frame = points({"n": {"simulation": [12] * 6, "mean_last_four": [10] * 6}})
    assert set(chosen(frame).values()) == {"simulation"}
    without = lean_by_error(frame, margin=0.0)
    judged = without["quarter"] >= quarter(MIN_LEAN_QUARTERS)
    assert set(without.loc[judged, "source"]) == {"mean_last_four"}
