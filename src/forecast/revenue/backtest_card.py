"""The backtest's metrics and its model card."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forecast.revenue.baselines import PROBABILISTIC, QUANTILES
from forecast.revenue.lean import FALLBACK, LEAN_MARGIN, MIN_LEAN_QUARTERS
from forecast.revenue.tree import LEVELS
from forecast.training.evaluate import STAGE_PROBABILITIES

if TYPE_CHECKING:  # the backtest reads its metrics from here
    from forecast.revenue.backtest import BacktestResult


EXPERIMENT = "revenue-forecast"


def pinball(actual: np.ndarray, predicted: np.ndarray, q: float) -> np.ndarray:
    diff = actual - predicted
    return np.maximum(q * diff, (q - 1) * diff)


def backtest_metrics(points: pd.DataFrame) -> pd.DataFrame:
    """MAPE, WAPE, bias, scaled pinball loss and P10-P90 coverage per method, level and week.

    `mape` scores the mean; `mape_p50` the median, the figure the Forecast page and the API
    head with (a point forecast's P50 is its mean). Where a node's quarter is lumpy (a rep's
    few large deals) the two part: the mean carries the rare large quarter, which MAPE, an
    average of errors relative to each actual, punishes in the many small ones. `wape` (the
    mean's absolute errors over what was booked, summed) weighs each quarter by its size: a
    rep's near-empty quarter cannot rule it, as it can MAPE (where forecasting 0 scores 100 %)."""
    data = points[points["actual"] > 0].copy()
    data["error"] = (data["mean"] - data["actual"]).abs()
    data["ape"] = data["error"] / data["actual"]
    data["actual_forecast"] = data["actual"].where(data["error"].notna())  # what WAPE weighs
    data["ape_p50"] = (data["p50"] - data["actual"]).abs() / data["actual"]
    data["pe"] = (data["mean"] - data["actual"]) / data["actual"]
    loss = sum(
        pinball(data["actual"].to_numpy(), data[f"p{round(q * 100)}"].to_numpy(), q)
        for q in QUANTILES
    ) / len(QUANTILES)
    data["pinball"] = loss
    data["inside"] = (data["actual"] >= data["p10"]) & (data["actual"] <= data["p90"])
    grouped = data.groupby(["method", "level", "week"])
    out = grouped.agg(
        n=("ape", "size"),
        mape=("ape", "mean"),
        mape_p50=("ape_p50", "mean"),
        bias=("pe", "mean"),
        error_sum=("error", "sum"),
        forecast_sum=("actual_forecast", "sum"),
        pinball_sum=("pinball", "sum"),
        actual_sum=("actual", "sum"),
        coverage=("inside", "mean"),
    )
    forecast = out.pop("forecast_sum")
    out["wape"] = (out.pop("error_sum") / forecast).where(forecast > 0)
    out["pinball"] = out.pop("pinball_sum") / out.pop("actual_sum")
    probabilistic = out.index.get_level_values("method").isin(PROBABILISTIC)
    out.loc[~probabilistic, "coverage"] = np.nan
    return out.reset_index()


def headline(metrics: pd.DataFrame, *, week: int = 5, level: str = "company") -> pd.DataFrame:
    """One row per method at one week and level, sorted by MAPE."""
    rows = metrics[(metrics["week"] == week) & (metrics["level"] == level)]
    columns = ["n", "mape", "mape_p50", "bias", "pinball", "coverage"]
    return rows.set_index("method")[columns].sort_values("mape")


def coverage_table(metrics: pd.DataFrame, method: str = "simulation") -> pd.DataFrame:
    """P10-P90 coverage of one method: a row per level (company first), a column per week."""
    rows = metrics[metrics["method"] == method]
    table = rows.pivot_table(index="level", columns="week", values="coverage")
    return table.reindex([lv for lv in ("company", "region", "team", "rep") if lv in table.index])


def _table(frame: pd.DataFrame, percent: Sequence[str] = ()) -> str:
    def cell(column: str, value: object) -> str:
        if isinstance(value, float):
            if np.isnan(value):
                return ""
            return f"{value:.1%}" if column in percent else f"{value:,.4f}"
        return str(value)

    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = [
        "| " + " | ".join(cell(c, v) for c, v in zip(frame.columns, row, strict=True)) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([head, rule, *body])


def card_text(
    result: BacktestResult, metrics: pd.DataFrame, run_id: str, tags: Mapping[str, str]
) -> str:
    """The model card: definition, method, backtest figures, limits."""
    quarters = sorted(result.points["quarter"].unique())
    percent = ("mape", "mape_p50", "bias", "coverage")
    sections = []
    for level in ("company", "region", "team", "rep"):
        for week in sorted(result.points["week"].unique()):
            table = headline(metrics, week=int(week), level=level).reset_index()
            sections.append(f"**{level}, week {week}**\n\n{_table(table, percent)}\n")
    parts = [
        _card_head(run_id),
        _CARD_WHAT,
        _card_how(result),
        _card_backtest(result, quarters),
        _summary(result.points, metrics, len(quarters)),
        _sources_table(result.points),
        "\n".join(sections),
        "\n".join(f"- {k}: {v}" for k, v in tags.items()),
        _card_limits(len(quarters)),
    ]
    return "\n\n".join(parts) + "\n"


def _card_head(run_id: str) -> str:
    return f"""# Model card: quarterly revenue forecast (`revenue-forecast`)

A distribution of the quarter's **bookings** at every node of the org tree (rep, team, region,
company), from what the CRM recorded by the forecast's as-of. MLflow run `{run_id}` (experiment
`{EXPERIMENT}`)."""


_CARD_WHAT = """## What is forecast

Bookings of a quarter = the amounts of deals won (closed_won) with their close in the quarter
(for subscriptions, the annual contract value) **plus renewal bookings**: each renewal decision of
a subscribed account falling in the quarter that the account passes (its recurring revenue goes
on), worth 12 x the monthly recurring bill for annual (non-SMB) contracts and 1 x the bill for SMB
monthly renewals. Targets are on the same basis. Actuals are computed from the tables the same way
(`forecast.revenue.bookings`): won deals from deal_history's close rows; renewals from the revenue
table (annual: the month where `contract_end` moves out while revenue continues; SMB: every billed
month followed by another billed month)."""


def _card_how(result: BacktestResult) -> str:
    return f"""## How

`forecast.revenue.forecast_quarter(tables, quarter=..., as_of=..., win_scorer=...)`: closed so far
+ open deals (win probability from the deal-win champion x P(close inside the quarter | won) from a
close-timing model by stage, expected-close bucket, segment and win-probability band, learned at
the same point of earlier quarters; amounts scaled by each stage's booked/current ratio) + deals
not yet created (Poisson per team with a quarter-of-year index, amounts from the team's past)
+ renewal decisions still to come (renewal rates by segment and years billed, with Beta
posteriors; bills grown by expansions drawn from past ones; `renewal_probability` is the seam for
the churn model) + the
renewals of accounts not billed yet at as_of (SMB subscriptions starting since renew monthly
inside the quarter; learned per owner at the same point of the latest four settled quarters).
Three factors shared by a whole draw (open deals, new deals, churn) carry how far earlier quarters
moved beyond their items' own chance, each quarter judged by a model that did not learn from it
(close timing fitted without that quarter; the new-deal level of the quarters before it; renewals
by the segment rates known then, beyond those rates' own uncertainty), so a company is not as sure
as the sum of independent deals. The parts' misses were not independent (a quarter whose open
deals booked more renewed less as often as not), so the three are scaled together by how far the
company's total moved beyond chance against the sum of the parts' own (`joint_scale`). The churn
factor adds the uncertainty of today's renewal rates (their Beta posteriors). Below them each
team has its own quarter (a team's month): one factor per team and draw on what its open deals
book and one on what its new deals book, sized by how far the earlier quarters' team totals moved
beyond chance and beyond the company's factor (pooled over teams).
{result.draws:,} draws, seed {result.seed}, summed up the tree (a parent's draws are its children's
sum). Parameters: {result.params.flat()}.

The backtest's win scorer (`simulation`) is a calibrated LightGBM (200 trees) trained at each
quarter's first day on weekly snapshots up to 120 days before it, labelled by the outcomes known
that day (`fit_win_scorer`)."""


def _card_backtest(result: BacktestResult, quarters: list[str]) -> str:
    return f"""## Backtest

Quarters {quarters[0]} to {quarters[-1]} ({len(quarters)}), as_of at the first day + 7 x (week - 1)
days of weeks {", ".join(map(str, sorted(result.points["week"].unique())))}. Contenders:
`simulation` (win scorer trained only on labels known at each quarter's start),
`simulation_truth` (the generator's true win probability: an upper bound, generated worlds only),
`simulation_churn` (as `simulation`, but each renewal decision drawn from a churn model trained on
what the quarter's start knew, `forecast.training.churn.fit_churn_renewal`, with each segment's
churn at the segment rates' level: what the live forecast does for the current and next quarter),
`weighted_pipeline` (closed + fixed stage probabilities {dict(STAGE_PROBABILITIES)} x amount
of deals expected to close in the quarter + the same expected renewals), `weighted_pipeline_history`
(the same with stage win rates learned by as_of; a deal without an expected close counts when
the typical cycle of the deals won by then ends inside the quarter), `naive_last_quarter`,
`naive_last_year`, `mean_last_four`, `statsforecast` (AutoETS, season 4, on each node's
quarterly series; 80 % interval as P10-P90), and `{FALLBACK}`: per node, the simulation, or
the time-series baseline with the lowest error on that node in the earlier backtest quarters at
the same week when that error is {LEAN_MARGIN:.0%} below the simulation's, once there are
{MIN_LEAN_QUARTERS} earlier quarters (`lean_by_error`; the table below says which source each
level leaned on), every node kept the sum of its children as the live forecast keeps it (P10-P90
above what is booked scaled as the mean).
MAPE and bias over nodes x quarters, of the mean; `mape_p50` is the MAPE of the P50, the figure
the Forecast page and the API head with (the same as `mape` for a point forecast); pinball = mean
of the 0.1/0.5/0.9 pinball losses / mean actual; coverage = share of actuals inside P10-P90."""


def _card_limits(n_quarters: int) -> str:
    return f"""## Known limits

- `simulation` forecasts renewals with segment rates (per segment and years billed, not per
  account); the live forecast uses the churn champion for the current and next quarter, which
  `simulation_churn` stands for here.
- A renewal's value is the last known bill grown by past expansions; the expansion deals
  themselves are also forecast as new business (their ACV), as the definition counts both.
- Renewals of accounts not billed yet (SMB subscriptions starting after the last month ended by
  as_of, 1-6 % of a quarter's renewals on the default world) are the average of earlier
  quarters, not tied to the SMB deals the simulation wins: a quarter with unusually many new SMB
  subscriptions renews more than forecast.
- New deals use the team's level of the last four quarters: growth since then is missed (about
  2-3 % of that part on the default world), and a team that changes size shows only as its
  reps' recent share of created deals.
- Items are independent given their probabilities, the quarter's three shared factors and their
  team's two; those factors are learned from at most eight earlier quarters, so their size is
  itself uncertain. Regions have no factor of their own. The open deals' and the renewals' own
  outcomes moved against each other on generated worlds (week 13), which independent items cannot
  express: there the company's interval is wider than its misses.
- The open deals' spread is measured with the win scorer's probabilities on earlier quarters'
  snapshots, which the trained scorer learned from: its error on a new quarter is larger. On the
  default world it under-forecast the open deals of 2024Q3, 2026Q2 and 2026Q3 by 1-1.6 % of the
  quarter's bookings more than the truth's probabilities did (week 5), and those quarters ended
  0.1-3 % above P90.
- Coverage at company level rests on {n_quarters} quarters per week: one quarter more or less
  inside moves it by {1 / max(n_quarters, 1):.0%}."""


def sources_by_level(points: pd.DataFrame) -> pd.DataFrame:
    """Share of node-quarters that leaned on each source, per level (company first) and week."""
    leaned = points[points["method"] == FALLBACK]
    if leaned.empty or "source" not in leaned:
        return pd.DataFrame()
    shares = leaned.groupby(["level", "week"])["source"].value_counts(normalize=True)
    table = shares.unstack(fill_value=0.0).reset_index()
    table["order"] = table["level"].map({lv: i for i, lv in enumerate(LEVELS[::-1])})
    return table.sort_values(["order", "week"]).drop(columns="order").reset_index(drop=True)


def _sources_table(points: pd.DataFrame) -> str:
    table = sources_by_level(points)
    if table.empty:
        return ""
    shares = [c for c in table.columns if c not in ("level", "week")]
    intro = f"Which source `{FALLBACK}` leaned on (share of node-quarters):"
    return f"{intro}\n\n{_table(table, shares)}"


def _summary(points: pd.DataFrame, metrics: pd.DataFrame, n_quarters: int) -> str:
    """The headline sentences: MAPE against the weighted pipelines, and coverage."""
    lines = []
    company5 = headline(metrics, week=5, level="company")
    if {"simulation", "weighted_pipeline"} <= set(company5.index):
        r = company5.loc["simulation", "mape"] / company5.loc["weighted_pipeline", "mape"]
        lines.append(
            f"At week 5, company level, the simulation's MAPE is {r:.2f} x the weighted "
            f"pipeline's (fixed stage probabilities); its P10-P90 interval held the actual in "
            f"{company5.loc['simulation', 'coverage']:.0%} of the {n_quarters} quarters."
        )
    if {"simulation", "weighted_pipeline_history"} <= set(company5.index):
        r = company5.loc["simulation", "mape"] / company5.loc["weighted_pipeline_history", "mape"]
        lines.append(
            f"Against the weighted pipeline with historical stage win rates the ratio is {r:.2f}: "
            "renewals, most of a quarter, are forecast the same way by both, so their point "
            "forecasts differ only in new business; the simulation's distribution is what the "
            "pinball loss rewards."
        )
    inside = points[points["method"] == "simulation"]
    inside = inside[inside["actual"] > 0]
    if len(inside):
        share = ((inside["actual"] >= inside["p10"]) & (inside["actual"] <= inside["p90"])).mean()
        lines.append(
            f"Over every node (rep, team, region, company), week and quarter, P10-P90 held "
            f"{share:.0%} of the {len(inside):,} actuals."
        )
    return "\n".join(f"- {line}" for line in lines)
