"""Backtests of the quarterly revenue forecast against the numbers a sales team already has.

At weeks 1, 5, 9 and 13 of past quarters (as_of = the quarter's first day + 7 x (week - 1)
days) every contender forecasts the quarter's bookings at every node of the org tree, from what
was recorded by as_of, and is scored against what was then realised (`forecast.revenue.bookings`):

- `simulation`: `forecast.revenue.forecast_quarter` with a deal-win scorer trained only on data
  known at the quarter's start (`fit_win_scorer`, the honest one) or with the generator's truth
  (`simulation_truth`, an upper bound on generated worlds).
- `weighted_pipeline`: closed so far + the CRM's fixed stage probability (the deal-win baseline,
  `forecast.training.evaluate.STAGE_PROBABILITIES`) x amount of every open deal expected to close in
  the quarter + the same expected renewals as the simulation (so the two differ only in new
  business).
- `weighted_pipeline_history`: the same with each stage's historical win rate (learned by as_of).
- `naive_last_quarter`, `naive_last_year`: the bookings of the quarter before and of the same
  quarter a year before, as known at as_of (renewal decisions not yet known count at the
  historical rate).
- `statsforecast`: AutoETS (season 4, Naive fallback) on each node's quarterly bookings series as
  known at as_of, with its 80 % interval as P10-P90.

Metrics per contender, level and week: MAPE, bias (mean signed percentage error), pinball loss
(mean of the 0.1 / 0.5 / 0.9 losses, divided by the mean actual; a point forecast is its own
quantiles) and the share of actuals inside P10-P90. `log_backtest` logs everything to the MLflow
experiment `revenue-forecast` with plots and writes the model card `models/revenue-forecast.md`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from forecast.data.tables import CrmTables
from forecast.features.deals import deal_features, deal_snapshots
from forecast.revenue.backtest_card import backtest_metrics
from forecast.revenue.baselines import (
    known_series,
    naive_and_ets,
    point_rows,
    realised_by_node,
    stage_rates,
    weighted_pipelines,
)
from forecast.revenue.bookings import (
    parse_quarter,
)
from forecast.revenue.inputs import org_tree
from forecast.revenue.lean import lean_by_error
from forecast.revenue.params import RevenueParams, WinScorer
from forecast.revenue.quarter import forecast_quarter

log = logging.getLogger(__name__)

WEEKS = (1, 5, 9, 13)

ScorerFactory = Callable[[pd.Timestamp], WinScorer]
"""cutoff -> a win scorer built only from what was known at the cutoff."""


def week_as_of(quarter: str | pd.Period, week: int) -> pd.Timestamp:
    """The as_of of week `week` (1..13) of a quarter: its first day + 7 x (week - 1) days."""
    if not 1 <= week <= 14:
        raise ValueError(f"week {week}: a quarter has weeks 1 to 14")
    return parse_quarter(quarter).start_time + pd.Timedelta(days=7 * (week - 1))


def backtest_quarters(tables: CrmTables, *, first: str | None = None) -> list[str]:
    """Quarters whose bookings are fully known in `tables` (every renewal decision settled),
    from `first` (default: the quarter a year after the first deal, so there is history)."""
    start = tables.deals["created_at"].min().to_period("Q") + 4
    first_q = parse_quarter(first) if first else start
    # a quarter's last renewal decisions are known two months after it ends
    last = (tables.as_of - pd.DateOffset(months=1)).to_period("Q") - 1
    if last < first_q:
        return []
    return [str(q) for q in pd.period_range(first_q, last, freq="Q")]


@dataclass(frozen=True)
class BacktestResult:
    """Every contender's forecast at every node and backtest point, with the actuals."""

    points: (
        pd.DataFrame
    )  # quarter, week, as_of, method, level, node, mean, p10, p50, p90, target, actual
    params: RevenueParams
    draws: int
    seed: int

    def metrics(self) -> pd.DataFrame:
        return backtest_metrics(self.points)


def backtest(
    tables: CrmTables,
    *,
    quarters: Sequence[str],
    scorers: Mapping[str, ScorerFactory],
    weeks: Sequence[int] = WEEKS,
    draws: int = 10_000,
    seed: int = 0,
    params: RevenueParams | None = None,
    baselines: bool = True,
    on_step: Callable[[str], None] | None = None,
    renewals: Mapping[str, Callable[[pd.Timestamp], Callable]] | None = None,
) -> BacktestResult:
    """Forecast every quarter at every week with every contender; join what was realised.

    Args:
        tables: the CRM (its export must reach past the quarters' renewal decisions).
        quarters: quarters to backtest (see `backtest_quarters`).
        scorers: method name -> factory of a win scorer from a cutoff (the quarter's first day:
            it is at or before every as_of of the quarter). E.g. {"simulation": trained,
            "simulation_truth": lambda cutoff: truth_scorer(truth)}.
        weeks: weeks of the quarter to forecast at.
        draws, seed: of each simulation.
        params: see `RevenueParams`.
        baselines: also score the weighted pipelines, the naive forecasts and statsforecast.
        on_step: called with a label per backtest point (progress).
        renewals: method name -> factory of a `renewal_probability` from a cutoff (e.g. a churn
            model trained on what the quarter's start knew); each is simulated with the first
            win scorer, so against that scorer's row only the renewals differ.
    """
    params = params or RevenueParams()
    step = on_step or (lambda label: None)
    as_ofs = {(q, w): week_as_of(q, w) for q in quarters for w in weeks}
    point = _Point(tables, params, draws, seed, _features_for(tables, as_ofs.values(), params))
    rows = []
    for quarter in quarters:
        cutoff = parse_quarter(quarter).start_time
        built = {name: factory(cutoff) for name, factory in scorers.items()}
        renewal_built = {name: factory(cutoff) for name, factory in (renewals or {}).items()}
        for week in weeks:
            step(f"{quarter} week {week}")
            as_of = as_ofs[(quarter, week)]
            rows += point.rows(quarter, week, as_of, built, renewal_built, baselines=baselines)
    points = _with_actuals(pd.concat(rows, ignore_index=True), tables, quarters)
    if baselines and "simulation" in scorers:
        points = pd.concat([points, lean_by_error(points)], ignore_index=True)
    return BacktestResult(points=points, params=params, draws=draws, seed=seed)


@dataclass(frozen=True)
class _Point:
    """One backtest point (a quarter at a week): every contender's forecast of every node."""

    tables: CrmTables
    params: RevenueParams
    draws: int
    seed: int
    features: pd.DataFrame

    def rows(
        self,
        quarter: str,
        week: int,
        as_of: pd.Timestamp,
        scorers: Mapping[str, WinScorer],
        renewals: Mapping[str, Callable],
        *,
        baselines: bool,
    ) -> list[pd.DataFrame]:
        rows, first = [], None
        for name, scorer in scorers.items():
            fc = self._forecast(quarter, as_of, scorer)
            first = first or fc
            rows.append(_tag(point_rows(fc, name), quarter, week, as_of))
        base_scorer = next(iter(scorers.values()))
        for name, renewal_probability in renewals.items():
            fc = self._forecast(quarter, as_of, base_scorer, renewal_probability)
            rows.append(_tag(point_rows(fc, name), quarter, week, as_of))
        if baselines and first is not None:
            for name, values in self._baselines(first, quarter, as_of).items():
                rows.append(_tag(point_rows(first, name, values), quarter, week, as_of))
        return rows

    def _forecast(self, quarter: str, as_of: pd.Timestamp, scorer, renewal_probability=None):
        return forecast_quarter(
            self.tables, quarter=quarter, as_of=as_of, win_scorer=scorer, draws=self.draws,
            seed=self.seed, params=self.params, features=self.features,
            renewal_probability=renewal_probability,
        )  # fmt: skip

    def _baselines(self, first, quarter: str, as_of: pd.Timestamp) -> dict:
        """The weighted pipelines, the naive series and ETS, on the first contender's nodes."""
        history_rates = stage_rates(self.tables, as_of)
        contenders = weighted_pipelines(first, history_rates)
        series = known_series(self.tables, as_of, self.params)
        return contenders | naive_and_ets(
            series, first.inputs.tree, first.nodes, parse_quarter(quarter)
        )


def _with_actuals(points: pd.DataFrame, tables: CrmTables, quarters: Sequence[str]):
    """`points` with what each node booked in its quarter (0 where it booked nothing)."""
    actual = realised_by_node(tables, org_tree(tables), quarters).rename(
        columns={"value": "actual"}
    )
    points = points.merge(actual, on=["quarter", "level", "node"], how="left")
    points["actual"] = points["actual"].fillna(0.0)
    return points


def _tag(frame: pd.DataFrame, quarter: str, week: int, as_of: pd.Timestamp) -> pd.DataFrame:
    return frame.assign(quarter=quarter, week=week, as_of=as_of)


def _features_for(
    tables: CrmTables, as_ofs: Iterable[pd.Timestamp], params: RevenueParams
) -> pd.DataFrame:
    """Deal features at every as_of and at the same point of the earlier quarters, at once."""
    moments: set[pd.Timestamp] = set()
    for as_of in as_ofs:
        quarter = as_of.to_period("Q")
        offset = as_of - quarter.start_time
        moments.add(as_of)
        for back in range(1, params.history_quarters + 2):
            moments.add((quarter - back).start_time + offset)
    dates = sorted(d for d in moments if d >= tables.deals["created_at"].min())
    return deal_features(tables, deal_snapshots(tables, dates)).reset_index(drop=True)
