"""The numbers a sales team already has, as contenders: weighted pipelines, naive series, ETS."""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd

from forecast.data.tables import CrmTables
from forecast.features.asof import tables_as_of
from forecast.features.deals import deal_features, deal_snapshots, snapshot_dates
from forecast.revenue.bookings import (
    UNASSIGNED,
    realised_bookings,
    recurring_months,
    renewal_decisions,
    won_deals,
)
from forecast.revenue.params import RevenueParams
from forecast.revenue.quarter import QuarterForecast
from forecast.revenue.renewals import RenewalRates
from forecast.revenue.simulation import moments
from forecast.revenue.tree import LEVELS, OrgTree
from forecast.training.evaluate import STAGE_PROBABILITIES, StageRates

QUANTILES = (0.1, 0.5, 0.9)
# methods with a P10-P90 of their own (`simulation_or_series`: the simulation's, scaled as its
# mean where a node leans)
PROBABILISTIC = (
    "simulation",
    "simulation_truth",
    "simulation_churn",
    "statsforecast",
    "simulation_or_series",
)
SERIES = ("naive_last_quarter", "naive_last_year", "mean_last_four", "statsforecast")


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


def point_rows(
    forecast: QuarterForecast, method: str, values: pd.DataFrame | None = None
) -> pd.DataFrame:
    nodes = forecast.nodes
    if values is None:
        values = nodes[["level", "node", "mean", "p10", "p50", "p90"]]
    return values.assign(
        method=method,
        target=nodes["target"].to_numpy(),
        parent=nodes["parent"].to_numpy(),
        booked=nodes["booked"].to_numpy(),
    )


def weighted_pipelines(
    forecast: QuarterForecast, history_rates: StageRates
) -> dict[str, pd.DataFrame]:
    """The two weighted pipelines at every node of the forecast (point forecasts), over the
    open deals expected inside the quarter (`in_quarter_pipeline`: a deal without an expected
    close counts when the typical cycle ends inside, `expected_inside`)."""
    inputs = forecast.inputs
    tree = inputs.tree
    deals = inputs.open_deals
    sim = inputs.simulation_inputs()
    renewals = moments(sim).mean["recurring"]
    in_quarter = deals["in_quarter_pipeline"].to_numpy(bool)
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


def stage_rates(tables: CrmTables, as_of: pd.Timestamp) -> StageRates:
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


def naive_and_ets(
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
