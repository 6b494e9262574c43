"""Bookings: quarters, and renewal decisions read from hand-made recurring revenue."""

from __future__ import annotations

import pandas as pd
import pytest

from forecast.revenue.bookings import decisions_from_months, parse_quarter, quarter_bounds


@pytest.mark.parametrize("text", ["2026Q4", "2026q4", " 2024Q1 "])
def test_quarters_are_read(text):
    assert str(parse_quarter(text)) == text.strip().upper()


@pytest.mark.parametrize("text", ["2026-Q4", "Q4 2026", "2026Q5", "2026", "", "2026-10"])
def test_bad_quarters_are_refused_with_an_example(text):
    with pytest.raises(ValueError, match="like 2026Q4"):
        parse_quarter(text)


def test_quarter_bounds_are_half_open():
    start, end = quarter_bounds("2025Q4")
    assert start == pd.Timestamp("2025-10-01") and end == pd.Timestamp("2026-01-01")


def _months(rows: list[tuple[str, str, str, float, str | None]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["account_id", "period", "segment", "bill", "contract_end"])
    frame["period"] = pd.to_datetime(frame["period"])
    frame["contract_end"] = pd.to_datetime(frame["contract_end"])
    frame["owner"] = "R1"
    return frame


# (case, rows, recorded until, expected decisions: (account, month, outcome, value))
CASES = [
    (
        "annual renewed: contract_end moves out while revenue continues",
        [
            ("A", "2025-05-01", "mid_market", 100.0, "2025-06-30"),
            ("A", "2025-06-01", "mid_market", 100.0, "2025-06-30"),
            ("A", "2025-07-01", "mid_market", 100.0, "2026-06-30"),
        ],
        "2025-08-01",
        [("A", "2025-06-01", "renewed", 1200.0)],
    ),
    (
        "annual churned: the month after the term has ended without revenue",
        [("B", "2025-06-01", "enterprise", 50.0, "2025-06-30")],
        "2025-08-01",
        [("B", "2025-06-01", "churned", 600.0)],
    ),
    (
        "annual pending: the month after the term has not ended yet",
        [("C", "2025-06-01", "enterprise", 50.0, "2025-06-30")],
        "2025-07-01",
        [("C", "2025-06-01", "pending", 600.0)],
    ),
    (
        "SMB: every billed month is a monthly decision",
        [
            ("D", "2025-05-01", "smb", 10.0, "2025-05-31"),
            ("D", "2025-06-01", "smb", 10.0, "2025-06-30"),
        ],
        "2025-08-01",
        [("D", "2025-05-01", "renewed", 10.0), ("D", "2025-06-01", "churned", 10.0)],
    ),
    (
        "SMB without contract_end still decides monthly",
        [("E", "2025-05-01", "smb", 10.0, None), ("E", "2025-06-01", "smb", 10.0, None)],
        "2025-07-01",
        [("E", "2025-05-01", "renewed", 10.0), ("E", "2025-06-01", "pending", 10.0)],
    ),
    (
        "a gap is a churn and a later start, not a renewal",
        [
            ("F", "2025-03-01", "mid_market", 20.0, "2025-03-31"),
            ("F", "2025-05-01", "mid_market", 20.0, "2026-04-30"),
        ],
        "2025-08-01",
        [("F", "2025-03-01", "churned", 240.0)],
    ),
]


@pytest.mark.parametrize(("case", "rows", "until", "expected"), CASES, ids=[c[0] for c in CASES])
def test_renewal_decisions(case, rows, until, expected):
    decisions = decisions_from_months(_months(rows), pd.Timestamp(until))
    got = [
        (r.account_id, f"{r.month:%Y-%m-%d}", r.outcome, r.value)
        for r in decisions.itertuples(index=False)
    ]
    assert got == expected, case
