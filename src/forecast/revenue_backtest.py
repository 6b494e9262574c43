"""Backtests of the quarterly revenue forecast against the numbers a sales team already has.

At weeks 1, 5, 9 and 13 of past quarters (as_of = the quarter's first day + 7 x (week - 1)
days) every contender forecasts the quarter's bookings at every node of the org tree, from what
was recorded by as_of, and is scored against what was then realised (`forecast.bookings`):

- `simulation`: `forecast.revenue.forecast_quarter` with a deal-win scorer trained only on data
  known at the quarter's start (`fit_win_scorer`, the honest one) or with the generator's truth
  (`simulation_truth`, an upper bound on generated worlds).
- `weighted_pipeline`: closed so far + the CRM's fixed stage probability (the deal-win baseline,
  `forecast.evaluate.STAGE_PROBABILITIES`) x amount of every open deal expected to close in the
  quarter + the same expected renewals as the simulation (so the two differ only in new business).
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
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecast.asof import tables_as_of
from forecast.bookings import (
    UNASSIGNED,
    parse_quarter,
    realised_bookings,
    recurring_months,
    renewal_decisions,
    won_deals,
)
from forecast.evaluate import STAGE_PROBABILITIES, StageRates
from forecast.features import DEAL_FEATURES, deal_features, deal_snapshots, snapshot_dates
from forecast.model import TreeParams, calibrate, make_lightgbm, model_input, win_probability
from forecast.revenue import (
    QuarterForecast,
    QuarterInputs,
    RenewalRates,
    RevenueParams,
    WinScorer,
    forecast_quarter,
    with_lean,
)
from forecast.simulate import LEVELS, OrgTree, moments
from forecast.tables import CrmTables

log = logging.getLogger(__name__)

EXPERIMENT = "revenue-forecast"
WEEKS = (1, 5, 9, 13)
QUANTILES = (0.1, 0.5, 0.9)
PROBABILISTIC = ("simulation", "simulation_truth", "simulation_churn", "statsforecast")
SERIES = ("naive_last_quarter", "naive_last_year", "mean_last_four", "statsforecast")
FALLBACK = "simulation_or_series"
# a node leans on a series only when its earlier error is this much below the simulation's: a
# few earlier quarters per node make a closer call mostly noise (on a deals-only export of the
# default world, a margin of 0 made company, region and team worse; 0.4 none of them)
LEAN_MARGIN = 0.4
# ... and only after this many earlier quarters: judged on one, a node leaned on a series in
# the second backtest quarter and erred 33 % against the simulation's 8 % (a 5,000-deal world,
# region and team); a year of quarters also lets the seasonal series show what they are worth
MIN_LEAN_QUARTERS = 4
LABEL_LAG_DAYS = 120
CALIBRATION_DAYS = 91
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


# --- the honest win scorer -----------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingFrame:
    """Weekly snapshots of every open deal with their features, and when each deal closed."""

    frame: pd.DataFrame
    closed_at: pd.Series  # deal_id -> close time (from deal_history)
    won: pd.Series  # deal_id -> 1.0 won / 0.0 lost

    @classmethod
    def build(cls, tables: CrmTables, end: pd.Timestamp) -> TrainingFrame:
        dates = snapshot_dates(tables.deals["created_at"].min(), end)
        frame = deal_features(tables, deal_snapshots(tables, dates))
        history = tables.deal_history
        closes = history[history["stage"].isin(["closed_won", "closed_lost"])]
        closes = closes.sort_values("changed_at").drop_duplicates("deal_id").set_index("deal_id")
        return cls(
            frame=frame,
            closed_at=closes["changed_at"],
            won=(closes["stage"] == "closed_won").astype(float),
        )


def fit_win_scorer(
    training: TrainingFrame,
    cutoff: pd.Timestamp,
    *,
    seed: int = 0,
    tree: TreeParams | None = None,
) -> WinScorer:
    """A calibrated LightGBM win model from the labels known at `cutoff` only.

    Snapshots up to `cutoff - 120 days` (so that most of their deals had closed by the cutoff),
    labelled by the outcomes recorded by the cutoff; deals still open then are left out. The last
    91 days of those snapshots calibrate (sigmoid or isotonic, chosen out of fold), the rest train;
    each deal sits only in its latest slice.
    """
    frame = training.frame
    known = training.closed_at.reindex(frame["deal_id"].to_numpy()).to_numpy() <= np.datetime64(
        cutoff
    )
    end = cutoff - pd.Timedelta(days=LABEL_LAG_DAYS)
    middle = end - pd.Timedelta(days=CALIBRATION_DAYS)
    rows = frame[known & (frame["as_of"] <= end).to_numpy()].copy()
    rows["won"] = training.won.reindex(rows["deal_id"].to_numpy()).to_numpy()
    calibration = rows[rows["as_of"] > middle]
    train = rows[(rows["as_of"] <= middle) & ~rows["deal_id"].isin(calibration["deal_id"])]
    if train["won"].nunique() < 2 or calibration["won"].nunique() < 2:
        raise ValueError(
            f"not enough closed deals before {cutoff:%Y-%m-%d} to train a win scorer "
            f"({len(train)} train and {len(calibration)} calibration snapshots)"
        )
    params = tree or TreeParams(n_estimators=200, n_jobs=1)
    model = make_lightgbm(DEAL_FEATURES, params=params, seed=seed)
    model.fit(model_input(train), train["won"].to_numpy(dtype=int))
    calibrated = calibrate(
        model,
        model_input(calibration),
        calibration["won"].to_numpy(dtype=int),
        calibration["deal_id"].to_numpy(),
    ).model

    def scorer(features: pd.DataFrame) -> np.ndarray:
        return win_probability(calibrated, model_input(features))

    return scorer


def truth_scorer(truth) -> WinScorer:
    """The generator's true win probability (an upper bound for any model of the data)."""

    def scorer(features: pd.DataFrame) -> np.ndarray:
        return truth.win_probability(features["deal_id"], features["stage"])

    return scorer


# --- realised and naive series ---------------------------------------------------------------


def realised_by_node(tables: CrmTables, tree: OrgTree, quarters: Iterable[str]) -> pd.DataFrame:
    """Realised bookings (won + renewals) per quarter and node of every level."""
    rb = realised_bookings(tables, list(quarters))
    return _roll(rb, tree, "bookings")


def _roll(per_rep: pd.DataFrame, tree: OrgTree, column: str) -> pd.DataFrame:
    """(quarter, rep_id, value) -> (quarter, level, node, value) for every level."""
    leaf = tree.leaf_index(per_rep["rep_id"].to_numpy(object))
    unassigned = tree.leaf_index(np.array([UNASSIGNED], dtype=object))[0]
    leaf = np.where(leaf < 0, unassigned, leaf)
    frames = []
    for level in LEVELS:
        codes, names = tree.groups[level]
        node = names.to_numpy(object)[codes[leaf]]
        values = per_rep[column].groupby([per_rep["quarter"].to_numpy(), node]).sum()
        values.index.names = ["quarter", "node"]
        frames.append(values.rename("value").reset_index().assign(level=level))
    return pd.concat(frames, ignore_index=True)[["quarter", "level", "node", "value"]]


def known_series(tables: CrmTables, as_of: pd.Timestamp, params: RevenueParams) -> pd.DataFrame:
    """Per rep and quarter, the bookings as known at as_of: renewal decisions still pending
    then count at the historical renewal rate of their segment."""
    seen = tables_as_of(tables, as_of)
    rb = realised_bookings(seen)
    decisions = renewal_decisions(seen)
    rates = RenewalRates.fit(decisions, recurring_months(seen), params)
    pending = decisions[decisions["outcome"] == "pending"]
    if len(pending):
        expected = pd.DataFrame(
            {
                "quarter": pending["month"].dt.to_period("Q").astype(str).to_numpy(),
                "rep_id": pending["owner"].astype(object).fillna(UNASSIGNED).to_numpy(),
                "bookings": pending["value"].to_numpy(float) * rates(pending),
            }
        )
        rb = pd.concat([rb[["quarter", "rep_id", "bookings"]], expected], ignore_index=True)
        rb = rb.groupby(["quarter", "rep_id"], as_index=False)["bookings"].sum()
    last_ended = as_of.to_period("Q") - 1
    quarter = pd.PeriodIndex(rb["quarter"], freq="Q")
    return rb[quarter <= last_ended].reset_index(drop=True)


# --- one backtest point ------------------------------------------------------------------------


def _point_rows(
    forecast: QuarterForecast, method: str, values: pd.DataFrame | None = None
) -> pd.DataFrame:
    nodes = forecast.nodes
    if values is None:
        values = nodes[["level", "node", "mean", "p10", "p50", "p90"]]
    return values.assign(method=method, target=nodes["target"].to_numpy())


def typical_cycle_days(tables: CrmTables, as_of: pd.Timestamp) -> float:
    """Median days from creation to the close of the deals won by `as_of` (NaN when none)."""
    won = won_deals(tables)
    won = won[won["closed_at"] <= as_of]
    created = tables.deals.set_index("deal_id")["created_at"].reindex(won["deal_id"].to_numpy())
    days = (won["closed_at"].to_numpy() - created.to_numpy()) / np.timedelta64(1, "D")
    return float(np.nanmedian(days)) if len(days) else float("nan")


def expected_inside(deals: pd.DataFrame, end: pd.Timestamp, cycle_days: float) -> np.ndarray:
    """Whether each open deal is expected to close before `end`: by its expected close, or, where
    the CRM has none, by the typical cycle (a deal older than it is due now)."""
    expected = deals["expected_close"]
    if not np.isnan(cycle_days):
        remaining = np.maximum(cycle_days - deals["deal_age_days"].to_numpy(float), 0.0)
        by_cycle = deals["as_of"] + pd.to_timedelta(np.nan_to_num(remaining), unit="D")
        expected = expected.fillna(by_cycle)
    return (expected < end).to_numpy()


def weighted_pipelines(
    forecast: QuarterForecast, history_rates: StageRates, cycle_days: float = float("nan")
) -> dict[str, pd.DataFrame]:
    """The two weighted pipelines at every node of the forecast (point forecasts); a deal
    without an expected close counts when the typical cycle (`cycle_days`) ends inside."""
    inputs = forecast.inputs
    tree = inputs.tree
    deals = inputs.open_deals
    sim = inputs.simulation_inputs()
    renewals = moments(sim).mean["recurring"]
    in_quarter = expected_inside(deals, inputs.window.end, cycle_days)
    leaf = inputs.leaf_of(deals["rep_id"])
    stages = deals["stage"].astype(object)
    out = {}
    for name, prob in (
        ("weighted_pipeline", stages.map(dict(STAGE_PROBABILITIES)).to_numpy(float)),
        ("weighted_pipeline_history", history_rates.predict(stages)),
    ):
        weighted = np.bincount(
            leaf, deals["amount"].to_numpy(float) * prob * in_quarter, minlength=tree.n_leaves
        )
        per_leaf = sim.closed + renewals + weighted
        out[name] = _node_values(tree, per_leaf, forecast.nodes)
    return out


def _node_values(tree: OrgTree, per_leaf: np.ndarray, nodes: pd.DataFrame) -> pd.DataFrame:
    parts = []
    for level in LEVELS:
        names = tree.groups[level][1]
        parts.append(
            pd.DataFrame({"level": level, "node": names, "mean": tree.roll_up(per_leaf, level)})
        )
    values = pd.concat(parts, ignore_index=True)
    values = nodes[["level", "node"]].merge(values, on=["level", "node"], how="left")
    return values.assign(p10=values["mean"], p50=values["mean"], p90=values["mean"])


def _stage_rates(tables: CrmTables, as_of: pd.Timestamp) -> StageRates:
    """Each stage's historical win rate over deals closed by as_of (snapshots a year back)."""
    dates = snapshot_dates(as_of - pd.Timedelta(days=365), as_of - pd.Timedelta(days=60), freq="4W")
    snaps = deal_snapshots(tables, dates)
    won = won_deals(tables)
    history = tables.deal_history
    closed = history[
        history["stage"].isin(["closed_won", "closed_lost"]) & (history["changed_at"] <= as_of)
    ]
    closed_ids = set(closed["deal_id"])
    snaps = snaps[snaps["deal_id"].isin(closed_ids)]
    stage = deal_features(tables, snaps)["stage"] if len(snaps) else pd.Series([], dtype=object)
    won_ids = set(won.loc[won["closed_at"] <= as_of, "deal_id"])
    return StageRates.learn(stage, snaps["deal_id"].isin(won_ids).to_numpy(float))


def _naive_and_ets(
    series: pd.DataFrame, tree: OrgTree, nodes: pd.DataFrame, quarter: pd.Period
) -> dict[str, pd.DataFrame]:
    """naive_last_quarter, naive_last_year (seasonal naive), mean_last_four and statsforecast
    AutoETS for every node."""
    rolled = _roll(series, tree, "bookings")
    rolled["quarter"] = pd.PeriodIndex(rolled["quarter"], freq="Q")
    keys = nodes[["level", "node"]]
    out = {}
    for name, lags in (("naive_last_quarter", [1]), ("naive_last_year", [4]),
                       ("mean_last_four", [1, 2, 3, 4])):  # fmt: skip
        past = rolled[rolled["quarter"].isin([quarter - lag for lag in lags])]
        # a quarter the node has no row for booked nothing
        mean = past.groupby(["level", "node"])["value"].sum().rename("value") / len(lags)
        values = keys.merge(mean.reset_index(), on=["level", "node"], how="left")
        values["mean"] = values.pop("value").fillna(0.0)
        out[name] = values.assign(p10=values["mean"], p50=values["mean"], p90=values["mean"])
    out["statsforecast"] = _ets(rolled, keys, quarter)
    return out


def _ets(rolled: pd.DataFrame, keys: pd.DataFrame, quarter: pd.Period) -> pd.DataFrame:
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS, Naive

    last = rolled["quarter"].max()
    h = (quarter - last).n if pd.notna(last) else 0
    frame = keys.assign(mean=np.nan, p10=np.nan, p50=np.nan, p90=np.nan)
    if h < 1:
        return frame
    quarters = pd.period_range(rolled["quarter"].min(), last, freq="Q")
    grid = pd.MultiIndex.from_product(
        [pd.Index(keys["level"] + "|" + keys["node"]).unique(), quarters], names=["id", "q"]
    )
    values = rolled.assign(id=rolled["level"] + "|" + rolled["node"]).set_index(["id", "quarter"])
    values = values["value"].reindex(grid, fill_value=0.0).reset_index()
    df = pd.DataFrame(
        {
            "unique_id": values["id"],
            "ds": values["q"].dt.start_time,
            "y": values["value"].astype(float),
        }
    )
    model = StatsForecast(
        models=[AutoETS(season_length=4)], freq="QS", fallback_model=Naive(), n_jobs=1
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predicted = model.forecast(df=df, h=h, level=[80])
    predicted = predicted[predicted["ds"] == quarter.start_time].set_index("unique_id")
    ids = (keys["level"] + "|" + keys["node"]).to_numpy()
    column = "AutoETS" if "AutoETS" in predicted else predicted.columns[-1]
    frame["mean"] = predicted[column].reindex(ids).to_numpy()
    frame["p50"] = frame["mean"]
    frame["p10"] = predicted[f"{column}-lo-80"].reindex(ids).to_numpy()
    frame["p90"] = predicted[f"{column}-hi-80"].reindex(ids).to_numpy()
    return frame


# --- the backtest ------------------------------------------------------------------------------


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
    features = _features_for(tables, as_ofs.values(), params)
    rows = []
    for quarter in quarters:
        cutoff = parse_quarter(quarter).start_time
        built = {name: factory(cutoff) for name, factory in scorers.items()}
        renewal_built = {name: factory(cutoff) for name, factory in (renewals or {}).items()}
        base_scorer = next(iter(built.values()))
        for week in weeks:
            as_of = as_ofs[(quarter, week)]
            step(f"{quarter} week {week}")
            first = None
            for name, scorer in built.items():
                fc = forecast_quarter(
                    tables, quarter=quarter, as_of=as_of, win_scorer=scorer, draws=draws,
                    seed=seed, params=params, features=features,
                )  # fmt: skip
                first = first or fc
                rows.append(_tag(_point_rows(fc, name), quarter, week, as_of))
            for name, renewal_probability in renewal_built.items():
                fc = forecast_quarter(
                    tables, quarter=quarter, as_of=as_of, win_scorer=base_scorer, draws=draws,
                    seed=seed, params=params, features=features,
                    renewal_probability=renewal_probability,
                )  # fmt: skip
                rows.append(_tag(_point_rows(fc, name), quarter, week, as_of))
            if baselines and first is not None:
                history_rates = _stage_rates(tables, as_of)
                cycle = typical_cycle_days(tables, as_of)
                contenders = weighted_pipelines(first, history_rates, cycle)
                series = known_series(tables, as_of, params)
                contenders |= _naive_and_ets(
                    series, first.inputs.tree, first.nodes, parse_quarter(quarter)
                )
                for name, values in contenders.items():
                    rows.append(_tag(_point_rows(first, name, values), quarter, week, as_of))
    points = pd.concat(rows, ignore_index=True)
    tree = OrgTree.from_reps(
        tables.reps,
        extra=pd.DataFrame({"rep_id": [UNASSIGNED], "team": [UNASSIGNED], "region": [UNASSIGNED]}),
    )
    actual = realised_by_node(tables, tree, quarters).rename(columns={"value": "actual"})
    points = points.merge(actual, on=["quarter", "level", "node"], how="left")
    points["actual"] = points["actual"].fillna(0.0)
    if baselines and "simulation" in scorers:
        points = pd.concat([points, lean_by_error(points)], ignore_index=True)
    return BacktestResult(points=points, params=params, draws=draws, seed=seed)


def lean_by_error(
    points: pd.DataFrame, primary: str = "simulation", margin: float = LEAN_MARGIN
) -> pd.DataFrame:
    """Per node, quarter and week, the forecast of the simulation, or of the time-series
    baseline (`SERIES`) with the lowest error on that node in the earlier backtest quarters at
    the same week when that error is `margin` below the simulation's. Where the pipeline says
    little (no expected close dates, a thin history, few open deals) the simulation's errors are
    the larger, and the node leans on the series; with no earlier quarter, on the simulation.

    Error = weighted absolute percentage error (sum |forecast - actual| / sum actual) over the
    earlier quarters, all of them settled by the forecast's as_of, once there are
    `MIN_LEAN_QUARTERS` of them. Rows are tagged
    method=FALLBACK, with the source in `source`.
    """
    rows, sources = _contenders(points, primary)
    keys = ["week", "level", "node", "method"]
    rows = rows.sort_values([*keys, "quarter"], kind="stable")
    grouped = rows.groupby(keys, sort=False)
    # what was known before this quarter: sums over the earlier quarters only
    rows["error_before"] = grouped["abs_error"].cumsum() - rows["abs_error"]
    rows["actual_before"] = grouped["actual"].cumsum() - rows["actual"]
    rows["quarters_before"] = grouped.cumcount()
    best = _least_error(
        rows, ("error_before", "actual_before", "quarters_before"), sources, primary, margin
    )
    chosen = best.drop_duplicates(["quarter", "week", "level", "node"])
    out = chosen.rename(columns={"method": "source"}).assign(method=FALLBACK)
    return out[[*points.columns, "source"]].reset_index(drop=True)


def node_sources(
    points: pd.DataFrame, week: int, primary: str = "simulation", margin: float = LEAN_MARGIN
) -> pd.DataFrame:
    """What a forecast made after every backtest quarter leans on, by `lean_by_error`'s rule
    over all of them at the backtest week nearest `week`: level, node, source, wape (the
    source's error there)."""
    rows, sources = _contenders(points, primary)
    if rows.empty:
        return pd.DataFrame(columns=["level", "node", "source", "wape"])
    weeks = rows["week"].unique()
    nearest = weeks[np.argmin(np.abs(weeks - week))]
    rows = rows[rows["week"] == nearest]
    totals = rows.groupby(["level", "node", "method"], as_index=False).agg(
        abs_error=("abs_error", "sum"), actual=("actual", "sum"), quarters=("quarter", "nunique")
    )
    best = _least_error(totals, ("abs_error", "actual", "quarters"), sources, primary, margin)
    out = best.drop_duplicates(["level", "node"]).rename(columns={"method": "source"})
    return out[["level", "node", "source", "wape"]].reset_index(drop=True)


def _contenders(points: pd.DataFrame, primary: str) -> tuple[pd.DataFrame, list[str]]:
    sources = [primary, *(m for m in SERIES if m in set(points["method"]))]
    rows = points[points["method"].isin(sources)].copy()
    rows["abs_error"] = (rows["mean"] - rows["actual"]).abs()
    return rows, sources


def _least_error(
    rows: pd.DataFrame,
    columns: tuple[str, str, str],
    sources: list[str],
    primary: str,
    margin: float,
) -> pd.DataFrame:
    """`rows` ordered so that each node's first is its source: the least weighted error, the
    simulation's counted `margin` lower (a series must beat it clearly; ties go to it), and the
    simulation wherever no error is known from `MIN_LEAN_QUARTERS` quarters or more.

    `columns`: the names of the summed absolute error, the summed actuals and the number of
    quarters they were summed over."""
    error, actual, quarters = columns
    judged = (rows[actual] > 0) & (rows[quarters] >= MIN_LEAN_QUARTERS)
    rows = rows.assign(wape=rows[error] / rows[actual].where(judged))
    rows.loc[rows["method"] == primary, "wape"] *= 1 - margin
    rows["rank"] = rows["method"].map({m: i for i, m in enumerate(sources)})
    scored = rows.dropna(subset=["wape"]).sort_values(["wape", "rank"], kind="stable")
    return pd.concat([scored, rows[rows["method"] == primary]])


def live_lean(
    tables: CrmTables, inputs: QuarterInputs, points: pd.DataFrame, basis: str
) -> QuarterInputs:
    """`inputs` leaning, node by node, on the time series a revenue backtest (`points`) found
    the more accurate there (`node_sources`); unchanged for a quarter other than the as-of's
    (a series forecast of a later quarter would miss the current one, still open)."""
    window = inputs.window
    if window.as_of < window.q_start or window.as_of >= window.end:
        return inputs
    week = min(13, (window.as_of - window.q_start).days // 7 + 1)
    sources = node_sources(points, week)
    leaning = sources[sources["source"] != "simulation"]
    if leaning.empty:
        return inputs
    series = known_series(tables, window.as_of, inputs.params)
    values = _naive_and_ets(series, inputs.tree, leaning[["level", "node"]], window.quarter)
    forecast = pd.concat(
        leaning[leaning["source"] == name].merge(
            values[name][["level", "node", "mean"]], on=["level", "node"]
        )
        for name in leaning["source"].unique()
    )
    forecast = forecast.rename(columns={"mean": "forecast"}).dropna(subset=["forecast"])
    return with_lean(inputs, forecast[["level", "node", "source", "forecast"]], basis)


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


# --- metrics -----------------------------------------------------------------------------------


def pinball(actual: np.ndarray, predicted: np.ndarray, q: float) -> np.ndarray:
    diff = actual - predicted
    return np.maximum(q * diff, (q - 1) * diff)


def backtest_metrics(points: pd.DataFrame) -> pd.DataFrame:
    """MAPE, bias, scaled pinball loss and P10-P90 coverage per method, level and week.

    `mape` scores the mean; `mape_p50` the median, the figure the Forecast page and the API
    head with (a point forecast's P50 is its mean). Where a node's quarter is lumpy (a rep's
    few large deals) the two part: the mean carries the rare large quarter, which MAPE, an
    average of errors relative to each actual, punishes in the many small ones."""
    data = points[points["actual"] > 0].copy()
    data["ape"] = (data["mean"] - data["actual"]).abs() / data["actual"]
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
        pinball_sum=("pinball", "sum"),
        actual_sum=("actual", "sum"),
        coverage=("inside", "mean"),
    )
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


# --- plots, MLflow, model card ----------------------------------------------------------------


def plot_fan(
    points: pd.DataFrame, path: Path, *, method: str = "simulation", week: int = 5
) -> Path:
    """Company forecast (P10-P90 band, mean) per quarter at one week, against target and actual."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = points[
        (points["method"] == method) & (points["week"] == week) & (points["level"] == "company")
    ].sort_values("quarter")
    wp = points[
        (points["method"] == "weighted_pipeline")
        & (points["week"] == week)
        & (points["level"] == "company")
    ].sort_values("quarter")
    figure = Figure(figsize=(10, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    x = np.arange(len(rows))
    scale = 1e6
    ax.fill_between(x, rows["p10"] / scale, rows["p90"] / scale, alpha=0.3, label="P10-P90")
    ax.plot(x, rows["mean"] / scale, marker="o", label=f"{method} mean")
    ax.plot(x, rows["actual"] / scale, marker="s", color="black", label="actual")
    ax.plot(x, rows["target"] / scale, linestyle="--", color="grey", label="target")
    if len(wp):
        ax.plot(
            x, wp["mean"].to_numpy() / scale, marker="x", linestyle=":", label="weighted pipeline"
        )
    ax.set_xticks(x, rows["quarter"], rotation=45)
    ax.set(
        ylabel="bookings (millions)", title=f"Company bookings at week {week}: forecast vs actual"
    )
    ax.legend(loc="upper left", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def plot_metric_by_week(
    metrics: pd.DataFrame, path: Path, *, metric: str = "mape", level: str = "company"
) -> Path:
    """One line per method: the metric at each backtest week."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = metrics[metrics["level"] == level].dropna(subset=[metric])
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    for method, part in rows.groupby("method"):
        ax.plot(part["week"], part[metric], marker="o", label=method)
    if metric == "coverage":
        ax.axhspan(0.7, 0.9, color="green", alpha=0.1, label="70-90 %")
    ax.set(xlabel="week of the quarter", ylabel=metric, title=f"{metric} by week ({level})")
    ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def log_backtest(
    result: BacktestResult,
    *,
    run_name: str = "revenue backtest",
    tags: Mapping[str, str] | None = None,
    card_dir: Path | None = None,
) -> tuple[str, Path]:
    """Log the backtest as one MLflow run (experiment `revenue-forecast`) and write the card.

    Returns the run id and the model card's path.
    """
    import mlflow

    from forecast.training import default_card_dir, tracking_run

    metrics = result.metrics()
    card = (card_dir or default_card_dir()) / "revenue-forecast.md"
    with tracking_run(EXPERIMENT, run_name=run_name) as run:
        mlflow.log_params(
            result.params.flat()
            | {
                "draws": result.draws,
                "seed": result.seed,
                "quarters": ",".join(sorted(result.points["quarter"].unique())),
                "weeks": ",".join(map(str, sorted(result.points["week"].unique()))),
            }
        )
        if tags:
            mlflow.set_tags(dict(tags))
        flat = {}
        for row in metrics.itertuples():
            for name in ("mape", "bias", "pinball", "coverage"):
                value = getattr(row, name)
                if pd.notna(value):
                    flat[f"{name}_{row.method}_{row.level}_w{row.week}"] = float(value)
        mlflow.log_metrics(flat)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            result.points.to_csv(folder / "backtest_points.csv", index=False)
            metrics.to_csv(folder / "backtest_metrics.csv", index=False)
            plot_fan(result.points, folder / "fan_company_week5.png")
            plot_metric_by_week(metrics, folder / "mape_by_week.png")
            plot_metric_by_week(metrics, folder / "coverage_by_week.png", metric="coverage")
            plot_metric_by_week(metrics, folder / "mape_by_week_team.png", level="team")
            mlflow.log_artifacts(str(folder), artifact_path="backtest")
        card.parent.mkdir(parents=True, exist_ok=True)
        card.write_text(card_text(result, metrics, run.info.run_id, tags or {}))
        mlflow.log_artifact(str(card), artifact_path="card")
    return run.info.run_id, card


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
    ratio = _summary(result.points, metrics, len(quarters))
    extra = "\n".join(f"- {k}: {v}" for k, v in tags.items())
    return f"""# Model card: quarterly revenue forecast (`revenue-forecast`)

A distribution of the quarter's **bookings** at every node of the org tree (rep, team, region,
company), from what the CRM recorded by the forecast's as-of. MLflow run `{run_id}` (experiment
`{EXPERIMENT}`).

## What is forecast

Bookings of a quarter = the amounts of deals won (closed_won) with their close in the quarter
(for subscriptions, the annual contract value) **plus renewal bookings**: each renewal decision of
a subscribed account falling in the quarter that the account passes (its recurring revenue goes
on), worth 12 x the monthly recurring bill for annual (non-SMB) contracts and 1 x the bill for SMB
monthly renewals. Targets are on the same basis. Actuals are computed from the tables the same way
(`forecast.bookings`): won deals from deal_history's close rows; renewals from the revenue table
(annual: the month where `contract_end` moves out while revenue continues; SMB: every billed month
followed by another billed month).

## How

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
by the segment rates known then), so a company is not as sure as the sum of independent deals.
Below them each team has its own quarter (a team's month): one factor per team and draw on what
its open deals book and one on what its new deals book, sized by how far the earlier quarters'
team totals moved beyond chance and beyond the company's factor (pooled over teams).
{result.draws:,} draws, seed {result.seed}, summed up the tree (a parent's draws are its children's
sum). Parameters: {result.params.flat()}.

The backtest's win scorer (`simulation`) is a calibrated LightGBM (200 trees) trained at each
quarter's first day on weekly snapshots up to 120 days before it, labelled by the outcomes known
that day (`fit_win_scorer`).

## Backtest

Quarters {quarters[0]} to {quarters[-1]} ({len(quarters)}), as_of at the first day + 7 x (week - 1)
days of weeks {", ".join(map(str, sorted(result.points["week"].unique())))}. Contenders:
`simulation` (win scorer trained only on labels known at each quarter's start),
`simulation_truth` (the generator's true win probability: an upper bound, generated worlds only),
`simulation_churn` (as `simulation`, but each renewal decision drawn from a churn model trained on
what the quarter's start knew, `forecast.churn.fit_churn_renewal`, with each segment's churn at
the segment rates' level: what the live forecast does for the current and next quarter),
`weighted_pipeline` (closed + fixed stage probabilities {dict(STAGE_PROBABILITIES)} x amount
of deals expected to close in the quarter + the same expected renewals), `weighted_pipeline_history`
(the same with stage win rates learned by as_of; a deal without an expected close counts when
the typical cycle of the deals won by then ends inside the quarter), `naive_last_quarter`,
`naive_last_year`, `mean_last_four`, `statsforecast` (AutoETS, season 4, on each node's
quarterly series; 80 % interval as P10-P90), and `{FALLBACK}`: per node, the simulation, or
the time-series baseline with the lowest error on that node in the earlier backtest quarters at
the same week when that error is {LEAN_MARGIN:.0%} below the simulation's, once there are
{MIN_LEAN_QUARTERS} earlier quarters (`lean_by_error`; the table below says which source each
level leaned on).
MAPE and bias over nodes x quarters, of the mean; `mape_p50` is the MAPE of the P50, the figure
the Forecast page and the API head with (the same as `mape` for a point forecast); pinball = mean
of the 0.1/0.5/0.9 pinball losses / mean actual; coverage = share of actuals inside P10-P90.

{ratio}

{_sources_table(result.points)}

{chr(10).join(sections)}

{extra}

## Known limits

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
  itself uncertain. Regions have no factor of their own.
- The open deals' spread is measured with the win scorer's probabilities on earlier quarters'
  snapshots, which the trained scorer learned from: its error on a new quarter is larger. On the
  default world it under-forecast the open deals of 2024Q3, 2026Q2 and 2026Q3 by 1-1.6 % of the
  quarter's bookings more than the truth's probabilities did (week 5), and those quarters ended
  0.1-3 % above P90.
- Coverage at company level rests on {len(quarters)} quarters per week: one quarter more or less
  inside moves it by {1 / max(len(quarters), 1):.0%}.
"""


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


def latest_backtest() -> tuple[pd.DataFrame, str] | None:
    """The points of the latest finished revenue backtest in the project's MLflow store, with
    a line saying which run it is; None when there is none (`forecast revenue-backtest`)."""
    import mlflow

    from forecast.registry import client

    tracking = client()
    experiment = tracking.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return None
    runs = tracking.search_runs(
        [experiment.experiment_id],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id,
                artifact_path="backtest/backtest_points.csv",
                dst_path=tmp,
                tracking_uri=tracking.tracking_uri,
            )
        except (OSError, mlflow.exceptions.MlflowException):
            return None  # a run without points (an older or a failed one): no lean
        points = pd.read_csv(path, dtype={"quarter": str, "level": str, "node": str})
    started = pd.Timestamp(run.info.start_time, unit="ms")
    return points, f"revenue backtest run {run.info.run_id[:8]} of {started:%Y-%m-%d}"


def lean_on_latest_backtest(
    tables: CrmTables, inputs: QuarterInputs
) -> tuple[QuarterInputs, str | None]:
    """`inputs` leaning on the time series the latest revenue backtest found more accurate,
    node by node (`live_lean`), and which backtest that was; unchanged, and None, when there is
    none."""
    found = latest_backtest()
    if found is None:
        return inputs, None
    points, basis = found
    return live_lean(tables, inputs, points, basis), basis
