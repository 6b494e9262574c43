"""Training windows fit the data: full when the history holds them, fitted otherwise, or given."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecast.data.world import make_crm
from forecast.training.task import NotEnoughDataError
from forecast.training.win_task import (
    FULL_WINDOWS,
    MIN_WINDOW_DAYS,
    WindowChoice,
    Windows,
    WinParams,
)


@pytest.fixture(scope="module")
def world():
    return make_crm(1500, seed=11)


def _last_days(tables, days: int):
    start = tables.as_of - pd.Timedelta(days=days)
    return tables.replace(deals=tables.deals[tables.deals["created_at"] >= start])


def test_a_long_history_gets_the_full_windows(world):
    choice = WindowChoice.fit(world.tables, WinParams())
    assert (choice.label_lag_days, choice.test_days, choice.calibration_days) == FULL_WINDOWS
    assert "full windows" in choice.why


def test_a_nine_month_export_gets_windows_fitted_to_its_cycle_lengths(world):
    tables = _last_days(world.tables, 270)
    choice = WindowChoice.fit(tables, WinParams())
    closed = tables.deals.dropna(subset=["closed_at"])
    cycle = (closed["closed_at"] - closed["created_at"]).dt.days
    assert choice.label_lag_days == int(np.clip(np.ceil(cycle.quantile(0.9)), 14, 120))
    assert choice.test_days == choice.calibration_days
    assert choice.test_days % 7 == 0 and MIN_WINDOW_DAYS <= choice.test_days <= 91
    assert "fitted to a 2" in choice.why and "90th percentile" in choice.why
    windows = Windows.before(tables, WinParams())
    assert windows.choice == choice and windows.describe()["choice"] == choice.why


def test_windows_given_on_the_command_line_are_kept_and_said(world):
    tables = _last_days(world.tables, 270)
    choice = WindowChoice.fit(tables, WinParams(label_lag_days=30, test_days=35))
    assert (choice.label_lag_days, choice.test_days) == (30, 35)
    assert "set on the command line: label lag 30, test 35" in choice.why


def test_too_short_a_history_is_refused_saying_what_to_do(world):
    tables = _last_days(world.tables, 60)
    with pytest.raises(NotEnoughDataError, match="--label-lag-days"):
        Windows.before(tables, WinParams())


def test_the_train_slice_drops_deals_seen_again_later_and_only_the_train_slice():
    from forecast.training.win_task import split

    day = pd.Timestamp("2026-01-01")
    windows = Windows(day, day + pd.Timedelta(days=30), day + pd.Timedelta(days=60),
                      day + pd.Timedelta(days=90), day + pd.Timedelta(days=120))  # fmt: skip
    rows = []
    # D1 spans train and test, D2 train and calibration, D3 train only; D4, D5 later only
    for deal, days, won in (
        ("D1", (10, 20, 70, 80), 1), ("D2", (15, 40), 0), ("D3", (5, 25), 1),
        ("D4", (45, 50), 1), ("D5", (75, 85), 0), ("D6", (12,), 0), ("D7", (55,), 0),
        ("D8", (65,), 1),
    ):  # fmt: skip
        rows += [(deal, day + pd.Timedelta(days=d), won) for d in days]
    frame = pd.DataFrame(rows, columns=["deal_id", "as_of", "won"])
    slices = split(frame, windows)
    # a tree could learn D1 and D2 from their earlier snapshots and meet them again later
    assert set(slices.train["deal_id"]) == {"D3", "D6"}
    assert set(slices.calibration["deal_id"]) == {"D2", "D4", "D7"}  # not purged
    assert set(slices.test["deal_id"]) == {"D1", "D5", "D8"}
    assert len(slices.history) == len(frame[frame["as_of"] <= windows.calibration_end])
