"""Renewal probabilities against what happened: segment rates and the churn model, per segment.

For the stored CRM of the current FORECAST_HOME (the default world after `make run`): at weeks 5
and 13 of a few past quarters, every renewal decision still pending inside the quarter gets its
probability from the segment rates, from a churn model trained on what the quarter's start knew
(`forecast.training.churn.fit_churn_renewal`) alone, and from that model with each segment's churn
brought to the rates' level (what the live forecast and the backtest's `simulation_churn` use); each
is set against the share of those decisions that renewed.

    python benchmarks/renewal_calibration.py [--quarters 2025Q2,2025Q4,2026Q2]

Prints the table; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def main() -> None:
    import numpy as np
    import pandas as pd

    from forecast.data.store import read_store
    from forecast.model import TreeParams
    from forecast.revenue import RevenueParams, Window, renewal_book
    from forecast.revenue.bookings import decisions_from_months, recurring_months
    from forecast.revenue.churn import fit_churn_renewal
    from forecast.settings import disable_telemetry

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quarters", default="2025Q2,2025Q4,2026Q2")
    args = parser.parse_args()
    disable_telemetry()
    tables = read_store()
    params = RevenueParams()
    everything = recurring_months(tables, tables.as_of)
    outcomes = decisions_from_months(everything, tables.as_of.to_period("M").start_time)
    outcome = outcomes.set_index(["account_id", "month"])["outcome"]
    rows = []
    for quarter in args.quarters.split(","):
        period = pd.Period(quarter, "Q")
        churn = fit_churn_renewal(
            tables, period.start_time, tree=TreeParams(n_estimators=200, n_jobs=2)
        )
        for week in (5, 13):
            as_of = period.start_time + pd.Timedelta(weeks=week - 1)
            window = Window.of(period, as_of)
            months = recurring_months(tables, as_of)
            methods = (
                ("segment rates", None, False),
                ("churn model alone", churn, True),
                ("churn at rate level", churn, False),  # what the forecast uses
            )
            for method, scorer, alone in methods:
                book = renewal_book(months, window, params, scorer)
                steps = book.steps[book.steps["in_quarter"]].copy()
                steps["p"] = np.clip(scorer(steps), 0, 1) if alone else steps["prob"]
                keys = zip(steps["account_id"], steps["month"], strict=True)
                steps["actual"] = [outcome.get(key, "pending") for key in keys]
                for segment, group in steps.groupby("segment"):
                    known = group[group["actual"].isin(["renewed", "churned"])]
                    rows.append(
                        {
                            "quarter": quarter,
                            "week": week,
                            "segment": segment,
                            "method": method,
                            "decisions": len(group),
                            "mean P(renew)": round(float(group["p"].mean()), 3),
                            "renewed": round(float((known["actual"] == "renewed").mean()), 3),
                            "value": round(float(group["value"].sum())),
                            "expected": float((known["p"] * known["value"]).sum()),
                            "booked": float(known["value"][known["actual"] == "renewed"].sum()),
                            "brier": float(
                                ((known["p"] - (known["actual"] == "renewed")) ** 2).sum()
                            ),
                            "known": len(known),
                        }
                    )
    table = pd.DataFrame(rows)
    print(table.drop(columns=["expected", "booked", "brier", "known"]).to_string(index=False))
    # over every quarter and week: the renewals' value expected against what was booked, and
    # how well single decisions are told apart (Brier score: lower is better)
    summary = table.groupby(["segment", "method"]).sum(numeric_only=True)
    summary["value error"] = (summary["expected"] - summary["booked"]) / summary["booked"]
    summary["brier"] = summary["brier"] / summary["known"]
    print()
    print(summary[["known", "value error", "brier"]].round(4).to_string())


if __name__ == "__main__":
    main()
