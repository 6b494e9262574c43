"""`forecast revenue` says when a quarter is far from the data's as-of."""

from __future__ import annotations

import pandas as pd
import pytest

from forecast.cli.revenue import _far_quarter


@pytest.mark.parametrize(
    ("quarter", "says"),
    [
        ("2026Q4", None),
        ("2027Q3", None),
        ("2027Q4", "4 quarters after the as-of's quarter 2026Q4"),
        ("2030Q1", "13 quarters after"),
        ("2026Q3", "ended before the as-of's quarter 2026Q4"),
    ],
)
def test_a_far_or_past_quarter_is_said(quarter, says):
    warning = _far_quarter(pd.Period(quarter, "Q"), pd.Period("2026Q4", "Q"))
    assert warning is None if says is None else says in warning
