"""P10-P90 coverage and MAPE of the revenue backtest over several generated worlds.

One world gives 11 backtest quarters, so a company-level coverage cell is 11 yes/no answers:
even a perfectly calibrated 80 % interval lands inside 70-90 % in only about half of such
cells (8 or 9 of 11). This pools the cells of several worlds (the default size, seeds given),
each backtested as `forecast revenue-backtest` does with the trained win scorer
(`fit_win_scorer`), to tell a miscalibrated interval from an unlucky world. Also prints, per
world and pooled, the simulation's MAPE against the weighted pipeline with historical rates, the
coverage and MAPE of what is served once a backtest is logged (`simulation_or_series`: nodes
leaning on a series where it erred clearly less, every node the sum of its children), and the
root mean square of (actual - mean) / sd at company level (1.0 when the spread is right).

    python benchmarks/revenue_coverage.py --seeds 0,1,2,3,4 [--weeks 1,5,9,13] [--draws 2000]

Generated worlds only (nothing is stored or logged). Prints the tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def main() -> None:
    import numpy as np
    import pandas as pd

    from forecast.data.world import make_crm
    from forecast.revenue.backtest import backtest, backtest_quarters
    from forecast.revenue.backtest_card import backtest_metrics
    from forecast.revenue.win_scorers import TrainingFrame, fit_win_scorer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--weeks", default="1,5,9,13")
    parser.add_argument("--draws", type=int, default=2_000)
    parser.add_argument("--deals", type=int, default=30_000)
    args = parser.parse_args()
    weeks = [int(w) for w in args.weeks.split(",")]
    pd.set_option("display.width", 160)

    points = []
    for seed in (int(s) for s in args.seeds.split(",")):
        started = time.perf_counter()
        tables = make_crm(args.deals, seed=seed).tables
        training = TrainingFrame.build(tables, tables.as_of)
        result = backtest(
            tables,
            quarters=backtest_quarters(tables),
            scorers={"simulation": partial(fit_win_scorer, training, seed=seed)},
            weeks=weeks,
            draws=args.draws,
        )
        world = result.points.assign(world=seed)
        points.append(world)
        print(f"\nworld seed {seed} ({time.perf_counter() - started:.0f} s)")
        print(_summary(world, backtest_metrics, np).to_string())
    pooled = pd.concat(points, ignore_index=True)
    print(f"\npooled over worlds {args.seeds}")
    print(_summary(pooled, backtest_metrics, np).to_string())


def _summary(points, backtest_metrics, np):
    from forecast.revenue.lean import FALLBACK

    """Coverage and MAPE per level x week, the baseline's MAPE, and company-level rms z."""
    metrics = backtest_metrics(points).set_index(["method", "level", "week"])
    simulation = metrics.loc["simulation"][["n", "coverage", "mape"]]
    baseline = metrics.loc["weighted_pipeline_history"]["mape"].rename("mape_wp_history")
    # what `forecast revenue` and the API serve once a backtest is logged: nodes leaning on a
    # series where it erred clearly less, every node the sum of its children
    served = metrics.loc[FALLBACK][["coverage", "mape"]].add_suffix("_served")
    table = simulation.join(baseline).join(served)
    company = points[(points["method"] == "simulation") & (points["level"] == "company")]
    # the P10-P90 width of a normal is 2 x 1.2816 sd
    sd = (company["p90"] - company["p10"]) / (2 * 1.2816)
    z = ((company["actual"] - company["mean"]) / sd).groupby(company["week"])
    table["rms_z"] = np.nan
    for week, values in z:
        table.loc[("company", week), "rms_z"] = float(np.sqrt((values**2).mean()))
    return table.round(3)


if __name__ == "__main__":
    main()
