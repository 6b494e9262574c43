"""Quarterly bookings from a deals-only export: every contender's MAPE, at every level.

The default world (30,000 deals, seed 0) as a CRM's one-table export would give it
(`forecast.data.derive.deals_only`: no expected close dates, a derived history, no activities or
bills), backtested at week 1 of its 11 quarters with the trained win scorer, as
`tests/pipelines/test_deals_only_bookings.py` holds it. Prints MAPE of the mean and of the P50,
WAPE of the mean and the P10-P90 coverage, per method and level; then whether the leaning
forecast's nodes add up (the largest gap between a node and the sum of its children, over every
quarter).

    python benchmarks/deals_only_bookings.py [--deals 30000] [--seed 0] [--draws 1000]

Generated data only (nothing is stored or logged); under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def main() -> None:
    import pandas as pd

    from forecast.data.derive import deals_only
    from forecast.data.world import make_crm
    from forecast.revenue.backtest import backtest, backtest_quarters
    from forecast.revenue.backtest_card import backtest_metrics
    from forecast.revenue.lean import FALLBACK
    from forecast.revenue.tree import LEVELS
    from forecast.revenue.win_scorers import TrainingFrame, fit_win_scorer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=1_000)
    args = parser.parse_args()
    pd.set_option("display.width", 160)

    started = time.perf_counter()
    tables = deals_only(make_crm(args.deals, seed=args.seed).tables)
    training = TrainingFrame.build(tables, tables.as_of)
    result = backtest(
        tables,
        quarters=backtest_quarters(tables),
        weeks=(1,),
        scorers={"simulation": lambda cutoff: fit_win_scorer(training, cutoff, seed=args.seed)},
        draws=args.draws,
    )
    metrics = backtest_metrics(result.points)
    table = metrics.pivot_table(
        index="method", columns="level", values=["mape", "mape_p50", "wape", "coverage"]
    )
    print(f"deals-only export, week 1 ({time.perf_counter() - started:.0f} s)")
    print(table.round(3).to_string())

    # what rules the rep-level MAPE of the mean: the quarters that booked almost nothing
    for floor in (5_000, 10_000):
        kept = result.points[result.points["actual"] >= floor]
        rep = backtest_metrics(kept).query("level == 'rep'").set_index("method")["mape"]
        print(f"rep MAPE of the mean, quarters booking {floor:,} or more: {rep.round(3).to_dict()}")

    leaned = result.points[result.points["method"] == FALLBACK]
    gap = 0.0
    for _, point in leaned.groupby(["quarter", "week"]):
        for child, up in itertools.pairwise(LEVELS):
            sums = point[point["level"] == child].groupby("parent")["mean"].sum()
            own = point[point["level"] == up].set_index("node")["mean"].reindex(sums.index)
            gap = max(gap, float((sums - own).abs().max()))
    print(f"{FALLBACK}: largest gap between a node and its children's sum: {gap:.2e}")


if __name__ == "__main__":
    main()
