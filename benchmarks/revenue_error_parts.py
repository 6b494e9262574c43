"""Where the revenue forecast misses: the backtest error at company level split into its parts.

For every backtest quarter, at one week, forecasts the stored world's quarter (as
`forecast revenue-backtest` does, fewer draws) and splits forecast - actual into closed, open
(deals open at as_of that were won inside the quarter), new (deals created after as_of and won
inside it) and recurring (renewals passed inside the quarter); each part's error is shown as a
share of the quarter's actual bookings, and against its own independent-item standard deviation
(z). Also prints the spreads of the shared factors learned at each point.

    FORECAST_HOME=... python benchmarks/revenue_error_parts.py --week 5 --scorer trained
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from forecast.data.ingest import read_world
from forecast.revenue import RevenueParams, forecast_quarter, moments
from forecast.revenue.backtest import _features_for, backtest_quarters, week_as_of
from forecast.revenue.bookings import parse_quarter, renewal_decisions, won_deals
from forecast.revenue.win_scorers import TrainingFrame, fit_win_scorer, truth_scorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--week", type=int, default=5)
    parser.add_argument("--scorer", choices=("trained", "truth"), default="trained")
    parser.add_argument("--draws", type=int, default=2_000)
    args = parser.parse_args()
    world = read_world()
    if world is None:
        raise SystemExit("the store holds no generated world (its truth is needed)")
    tables, truth = world.tables, world.truth
    quarters = backtest_quarters(tables)
    params = RevenueParams()
    as_ofs = [week_as_of(q, args.week) for q in quarters]
    features = _features_for(tables, as_ofs, params)
    won = won_deals(tables)
    created = tables.deals.set_index("deal_id")["created_at"]
    won["created_at"] = created.reindex(won["deal_id"]).to_numpy()
    decisions = renewal_decisions(tables)
    training = TrainingFrame.build(tables, tables.as_of) if args.scorer == "trained" else None
    rows = []
    for quarter, as_of in zip(quarters, as_ofs, strict=True):
        start, end = parse_quarter(quarter).start_time, (parse_quarter(quarter) + 1).start_time
        scorer = (
            truth_scorer(truth) if training is None else fit_win_scorer(training, start, seed=0)
        )
        fc = forecast_quarter(
            tables, quarter=quarter, as_of=as_of, win_scorer=scorer, draws=args.draws,
            seed=0, params=params, features=features,
        )  # fmt: skip
        company = fc.level("company").iloc[0]
        inside = won[(won["closed_at"] >= start) & (won["closed_at"] < end)]
        closed = inside.loc[inside["closed_at"] <= as_of, "amount"].sum()
        new = inside.loc[inside["created_at"] > as_of, "amount"].sum()
        renewed = decisions[
            (decisions["month"] >= start)
            & (decisions["month"] < end)
            & (decisions["outcome"] == "renewed")
        ]
        actual = {
            "closed": closed,
            "open": inside["amount"].sum() - closed - new,
            "new": new,
            "recurring": renewed["value"].sum(),
        }
        total = sum(actual.values())
        variance = moments(fc.inputs.simulation_inputs()).variance
        row = {"quarter": quarter, "error": company["mean"] / total - 1}
        # the share of the company's variance the shared factors (quarter and teams) bring
        independent = sum(float(v.sum()) for v in variance.values())
        row["shared"] = 1 - independent / company["std"] ** 2
        row["inside"] = company["p10"] <= total <= company["p90"]
        row["sd"] = company["std"] / company["mean"]
        for part, value in actual.items():
            row[part] = (company[part] - value) / total
        for part in ("open", "new", "recurring"):
            sd = float(np.sqrt(variance[part].sum()))  # 0 when nothing of the part is ahead
            row[f"z_{part}"] = (company[part] - actual[part]) / sd if sd > 0 else np.nan
        spreads = fc.inputs.spreads
        row |= {"spread_open": spreads.open, "spread_new": spreads.new}
        row |= {"spread_renewals": spreads.renewals, "churn_sd": fc.inputs.churn_shock_sd}
        row |= {"spread_team_open": spreads.team_open, "spread_team_new": spreads.team_new}
        row |= {"joint_scale": spreads.scale}
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("quarter")
    pd.set_option("display.width", 200)
    shares = ["error", "sd", "closed", "open", "new", "recurring", "shared"]
    print(f"{args.scorer} scorer, week {args.week}: forecast - actual, % of the actual")
    print((frame[shares] * 100).round(2).assign(inside=frame["inside"]).to_string())
    print("mean:", (frame[shares].mean() * 100).round(2).to_dict())
    print(f"coverage {frame['inside'].mean():.0%} of {len(frame)} quarters")
    z = frame[[c for c in frame if c.startswith("z_")]]
    print("z of each part against its items' own sd:")
    print(z.round(2).to_string())
    print("rms z:", np.sqrt((z**2).mean()).round(2).to_dict())
    spreads = [c for c in frame if c.startswith("spread") or c in ("churn_sd", "joint_scale")]
    print(frame[spreads].round(4).to_string())


if __name__ == "__main__":
    main()
