"""Where a node leans on a time series: the baseline that erred less in the earlier quarters."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecast.data.tables import CrmTables
from forecast.revenue.baselines import SERIES, known_series, naive_and_ets
from forecast.revenue.inputs import SIMULATION, QuarterInputs
from forecast.revenue.quarter import with_lean
from forecast.revenue.tree import LEVELS, OrgTree, coherent_to_come, series_followed

FALLBACK = "simulation_or_series"
# a node leans on a series only when its earlier error is this much below the simulation's: a
# few earlier quarters per node make a closer call mostly noise (on a deals-only export of the
# default world, a margin of 0 made company, region and team worse; 0.4 none of them)
LEAN_MARGIN = 0.4
# ... and only after this many earlier quarters: judged on one, a node leaned on a series in
# the second backtest quarter and erred 33 % against the simulation's 8 % (a 5,000-deal world,
# region and team); a year of quarters also lets the seasonal series show what they are worth
MIN_LEAN_QUARTERS = 4


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
    chosen = chosen.rename(columns={"method": "source"})
    simulated = points[points["method"] == primary]
    out = pd.concat(
        _coherent(chosen[chosen["quarter"].eq(q) & chosen["week"].eq(w)], point)
        for (q, w), point in simulated.groupby(["quarter", "week"], sort=False)
    ).assign(method=FALLBACK)
    return out[[*points.columns, "source"]].reset_index(drop=True)


def _coherent(chosen: pd.DataFrame, simulated: pd.DataFrame) -> pd.DataFrame:
    """One backtest point's simulation rows leaning where `chosen` says, every node the sum of
    its children, as the live forecast leans (`with_lean`): a leaning node's mean is its
    series' forecast, and every node's P10, P50 and P90 above what it has booked are scaled as
    its mean is (exact where a node's reps are scaled alike; the live forecast scales draws)."""
    nodes = simulated.set_index(["level", "node"])
    source = chosen.set_index(["level", "node"])["source"].reindex(nodes.index)
    series_mean = chosen.set_index(["level", "node"])["mean"].reindex(nodes.index)
    leans = source.ne(SIMULATION) & series_followed(series_mean, nodes["mean"], nodes["booked"])
    rows = simulated.set_index("node")
    reps = rows[rows["level"] == "rep"]
    region_of = rows.loc[rows["level"] == "team", "parent"]
    tree = OrgTree.from_reps(
        pd.DataFrame(
            {
                "rep_id": reps.index,
                "team": reps["parent"],
                "region": reps["parent"].map(region_of).fillna(""),
            }
        )
    )
    to_come = (reps["mean"] - reps["booked"]).clip(lower=0).to_numpy(float)
    lean_to_come = (series_mean - nodes["booked"])[leans]
    targets = {level: part.droplevel(0) for level, part in lean_to_come.groupby(level=0)}
    final = coherent_to_come(tree, to_come, targets)
    moved = pd.concat(
        pd.DataFrame(
            {
                "level": level,
                "node": tree.groups[level][1].astype(str),
                "before": tree.roll_up(to_come, level),
                "after": tree.roll_up(final, level),
            }
        )
        for level in LEVELS
    ).set_index(["level", "node"])
    moved = moved.reindex(nodes.index)
    scale = (moved["after"] / moved["before"]).where(moved["before"] > 0, 1.0).fillna(1.0)
    out = nodes.copy()
    for column in ("mean", "p10", "p50", "p90"):
        out[column] = nodes["booked"] + (nodes[column] - nodes["booked"]) * scale
    out["source"] = source.where(leans, SIMULATION)
    return out.reset_index()


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
    values = naive_and_ets(series, inputs.tree, leaning[["level", "node"]], window.quarter)
    forecast = pd.concat(
        leaning[leaning["source"] == name].merge(
            values[name][["level", "node", "mean"]], on=["level", "node"]
        )
        for name in leaning["source"].unique()
    )
    forecast = forecast.rename(columns={"mean": "forecast"}).dropna(subset=["forecast"])
    return with_lean(inputs, forecast[["level", "node", "source", "forecast"]], basis)
