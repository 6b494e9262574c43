"""The quarter's forecast: draw it from prepared inputs and summarise every node."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from forecast.data.tables import CrmTables
from forecast.revenue.inputs import SIMULATION, QuarterInputs, SeriesLean, prepare_quarter
from forecast.revenue.nodes import deal_table, drivers_of, hide_empty, node_frame
from forecast.revenue.params import RenewalProbability, RevenueParams, WinScorer
from forecast.revenue.scenario import Scenario
from forecast.revenue.simulation import SimulationInputs, SimulationResult, moments, simulate
from forecast.revenue.tree import COMPANY, LEVELS, OrgTree, coherent_to_come, series_followed


@dataclass(frozen=True)
class QuarterForecast:
    """The quarter's distribution at every node of the org tree, and how it was made.

    Attributes:
        quarter, as_of, draws, seed, scenario: what was asked.
        nodes: one row per node (level, node, parent) with mean, p10, p50, p90, target,
            gap_to_target (target - mean), p_reach_target, closed, open, new, recurring (the
            decomposition of the mean; recurring includes renewals already booked), booked
            (closed + renewals already booked), open_pipeline (open deals expected to close by
            the quarter's end, unweighted), remaining_gap (what new business still has to
            bring: target - closed - recurring), coverage (open_pipeline / remaining_gap;
            inf when nothing remains), open_deals, std, top_deals and top_share (the deals
            carrying most of the variance, and their share of it), source ("simulation", or the
            time series the node leans on, see `SeriesLean`) and simulation_mean (the
            simulation's mean before leaning, which the parts above add up to).
        drivers: per node, the deals with the largest variance contribution (rank, deal_id, rep,
            stage, amount, p_inside, variance_share, cumulative_share).
        deals: every open deal with its probabilities and expected booked amount.
        node_draws: per level, (node names, nodes x draws array).
        inputs: the inputs (for scenarios).
    """

    quarter: str
    as_of: pd.Timestamp
    draws: int
    seed: int
    scenario: str | None
    nodes: pd.DataFrame
    drivers: pd.DataFrame
    deals: pd.DataFrame
    node_draws: dict[str, tuple[pd.Index, np.ndarray]]
    inputs: QuarterInputs

    def level(self, level: str) -> pd.DataFrame:
        """The rows of one level (rep, team, region or company)."""
        if level not in LEVELS:
            raise ValueError(f"level {level!r}: expected one of {', '.join(LEVELS)}")
        return self.nodes[self.nodes["level"] == level].reset_index(drop=True)

    def samples(self, level: str, node: str) -> np.ndarray:
        """The draws of one node."""
        names, values = self.node_draws[level]
        position = names.get_indexer([node])[0]
        if position < 0:
            raise KeyError(f"no {level} {node!r}")
        return values[position]

    def for_node(self, level: str, node: str) -> QuarterForecast:
        """This forecast with the draws of one node only and no per-deal table: what a view of
        that node needs (every node's figures stay), a hundredth of the size to hand between
        processes."""
        names, values = self.node_draws.get(level, (pd.Index([]), np.empty((0, self.draws))))
        keep = names.get_indexer([node])
        keep = keep[keep >= 0]
        return replace(
            self, deals=self.deals.iloc[:0], node_draws={level: (names[keep], values[keep])}
        )

    def spread_sentence(self, level: str = COMPANY, node: str = COMPANY) -> str:
        """'These 5 deals carry 34 % of the uncertainty: ...' for one node."""
        top = self.drivers[(self.drivers["level"] == level) & (self.drivers["node"] == node)]
        if top.empty:
            return f"{node}: no open deal carries any uncertainty"
        share = float(top["variance_share"].sum())
        names = ", ".join(top["deal_id"].astype(str))
        if share < 0.005:  # "0 % of the uncertainty" would read as a finding
            return (
                f"{node}: no open deal carries much of the uncertainty (the {len(top)} with the "
                "most carry under 1% of the variance of the quarter's total): it comes from "
                "deals not open yet, renewals and what moves deals together"
            )
        return (
            f"{node}: these {len(top)} deals carry {share:.0%} of the uncertainty "
            f"(variance of the quarter's total): {names}"
        )

    def to_dict(self, level: str | None = None) -> dict:
        """JSON-ready: the question, the nodes (of one level or all) and their top deals."""
        nodes = self.nodes if level is None else self.level(level)
        drivers = self.drivers[self.drivers["node"].isin(nodes["node"])]
        if level is not None:
            drivers = drivers[drivers["level"] == level]
        return {
            "quarter": self.quarter,
            "as_of": self.as_of.isoformat(),
            "draws": self.draws,
            "seed": self.seed,
            "scenario": self.scenario,
            "definition": "bookings: won deals closing in the quarter + renewals passed in it",
            "renewals_from": self.inputs.renewals_source,
            "leaning": self.inputs.lean.basis if self.inputs.lean is not None else None,
            "nodes": _records(nodes.drop(columns=["top_deals"], errors="ignore")),
            "drivers": _records(drivers),
        }

    def node_view(
        self, level: str, node: str, *, reps: frozenset[str] | None = None
    ) -> dict | None:
        """One node, JSON-ready: its figures, its children's, and the deals carrying most of its
        uncertainty (only those of `reps` when given); None when the node is not in the forecast.
        """
        nodes = self.level(level)
        row = nodes[nodes["node"] == node]
        if row.empty:
            return None
        below = LEVELS[LEVELS.index(level) - 1] if level != "rep" else None
        children = self.nodes[(self.nodes["level"] == below) & (self.nodes["parent"] == node)]
        top = self.drivers[(self.drivers["level"] == level) & (self.drivers["node"] == node)]
        if reps is not None:
            top = top[top["rep_id"].isin(reps)]
            children = children[(children["level"] != "rep") | children["node"].isin(reps)]
        drop = ["top_deals"]
        return {
            "node": _records(row.drop(columns=drop, errors="ignore"))[0],
            "children": _records(children.drop(columns=drop, errors="ignore")),
            "drivers": _records(top.drop(columns=["level", "node"])),
        }


def with_revenue_at_risk(
    forecast: QuarterForecast, at_risk_by_owner: Mapping[str, float], reps: pd.DataFrame
) -> QuarterForecast:
    """The forecast with `revenue_at_risk` on every node: the churn model's probability (next
    90 days) x ARR, summed over the accounts owned under the node (by rep, the rep's team and
    region, and the company). A companion figure: the bookings distribution is not changed."""
    owners = pd.Series(at_risk_by_owner, dtype=float)
    by_rep = reps.set_index("rep_id")[["team", "region"]].reindex(owners.index)
    sums = {
        "rep": owners,
        "team": owners.groupby(by_rep["team"].to_numpy()).sum(),
        "region": owners.groupby(by_rep["region"].to_numpy()).sum(),
    }
    nodes = forecast.nodes
    at_risk = np.zeros(len(nodes))
    for level, total in sums.items():
        here = (nodes["level"] == level).to_numpy()
        at_risk[here] = total.reindex(nodes.loc[here, "node"].to_numpy()).fillna(0.0).to_numpy()
    at_risk[(nodes["level"] == "company").to_numpy()] = float(owners.sum())
    return replace(forecast, nodes=nodes.assign(revenue_at_risk=at_risk))


def _records(frame: pd.DataFrame) -> list[dict]:
    clean = frame.astype(object).where(pd.notna(frame), None)
    out = []
    for row in clean.to_dict(orient="records"):
        out.append(
            {
                k: (
                    v.isoformat()
                    if isinstance(v, pd.Timestamp)
                    else float(v)
                    if isinstance(v, np.floating)
                    else int(v)
                    if isinstance(v, np.integer)
                    else bool(v)
                    if isinstance(v, np.bool_)
                    else v
                )
                for k, v in row.items()
            }
        )
    return out


def forecast_quarter(
    tables: CrmTables,
    *,
    quarter: str,
    as_of: pd.Timestamp | str,
    win_scorer: WinScorer,
    draws: int = 10_000,
    seed: int = 0,
    level: str | None = None,
    renewal_probability: RenewalProbability | None = None,
    scenario: Scenario | None = None,
    params: RevenueParams | None = None,
    features: pd.DataFrame | None = None,
) -> QuarterForecast:
    """The bookings of `quarter` as seen at `as_of`: a distribution at every node of the org tree.

    Args:
        tables: the CRM; nothing recorded after `as_of` is read.
        quarter: calendar quarter, e.g. "2026Q4".
        as_of: the moment of the forecast (before, inside or after the quarter).
        win_scorer: deal feature frame -> P(won) per row (the deal-win champion in production).
        draws: simulated quarters (one seed: the same inputs give the same draws).
        seed: random seed.
        level: report only this level's nodes (rep, team, region or company); all when None.
            The whole tree is simulated either way.
        renewal_probability: pending renewal decisions -> P(renewed); segment rates when None.
        scenario: changes to the open deals (see `Scenario`).
        params: see `RevenueParams`.
        features: precomputed deal features (see `prepare_quarter`).

    Returns:
        The forecast; `nodes` has the figures per node, `drivers` the deals behind the spread.
    """
    inputs = prepare_quarter(
        tables,
        quarter=quarter,
        as_of=as_of,
        win_scorer=win_scorer,
        renewal_probability=renewal_probability,
        params=params,
        features=features,
    )
    if scenario is not None:
        inputs = scenario.apply(inputs, win_scorer)
    return simulate_quarter(inputs, draws=draws, seed=seed, level=level)


def simulate_quarter(
    inputs: QuarterInputs,
    *,
    draws: int = 10_000,
    seed: int = 0,
    level: str | None = None,
    workers: int | None = None,
) -> QuarterForecast:
    """Draw the quarter from prepared inputs (with a scenario applied, or not) and summarise
    every node. `workers`: threads drawing chunks (default: up to two; same result)."""
    if level is not None and level not in LEVELS:
        raise ValueError(f"level {level!r}: expected one of {', '.join(LEVELS)}")
    sim_inputs = inputs.simulation_inputs()
    result = simulate(sim_inputs, draws=draws, seed=seed, workers=workers)
    exact = moments(sim_inputs)
    tree = inputs.tree
    deals = deal_table(inputs, sim_inputs, exact.deal_variance)
    booked = sim_inputs.closed
    parts = _leaf_parts(inputs, sim_inputs, result)
    pipeline = np.bincount(
        deals["leaf"], deals["amount"] * deals["in_quarter_pipeline"], minlength=tree.n_leaves
    )
    n_open = np.bincount(deals["leaf"], ~deals["removed"], minlength=tree.n_leaves)
    frames, node_draws = [], {}
    levels = LEVELS if level is None else (level,)
    leaf_draws = _leaned_draws(inputs.lean, result.leaf_draws, booked)
    for lvl in LEVELS:
        names = tree.groups[lvl][1]
        values = tree.roll_up(leaf_draws, lvl)
        node_draws[lvl] = (names, values)
        if lvl not in levels:
            continue
        frame = node_frame(
            lvl, names, values, tree=tree, targets=inputs.targets.get(lvl),
            leaf_parts=parts, booked=booked, pipeline=pipeline, n_open=n_open,
        )  # fmt: skip
        if inputs.lean is None:
            frame["source"], frame["simulation_mean"] = SIMULATION, frame["mean"]
        else:
            frame["source"] = inputs.lean.sources(lvl, names)
            own = result.leaf_draws.mean(axis=1, dtype=np.float64)
            frame["simulation_mean"] = tree.roll_up(own, lvl)
        frames.append(frame)
    nodes = pd.concat(frames, ignore_index=True)
    drivers = drivers_of(deals, nodes, tree, levels, inputs.params.top_deals)
    top = drivers.groupby(["level", "node"]).agg(
        top_deals=("deal_id", lambda s: ", ".join(map(str, s))),
        top_share=("variance_share", "sum"),
    )
    nodes = nodes.join(top, on=["level", "node"])
    nodes["top_share"] = nodes["top_share"].fillna(0.0)
    nodes = hide_empty(nodes)
    return QuarterForecast(
        quarter=str(inputs.window.quarter),
        as_of=inputs.window.as_of,
        draws=draws,
        seed=seed,
        scenario=inputs.scenario,
        nodes=nodes,
        drivers=drivers[drivers["node"].isin(nodes["node"])].reset_index(drop=True),
        deals=deals.drop(columns=["leaf"]),
        node_draws=node_draws,
        inputs=inputs,
    )


def _leaf_parts(
    inputs: QuarterInputs, sim_inputs: SimulationInputs, result: SimulationResult
) -> dict[str, np.ndarray]:
    """Each leaf's expected closed, open, new and recurring bookings."""
    won = np.bincount(
        inputs.leaf_of(inputs.won["rep_id"]), inputs.won["amount"], minlength=inputs.tree.n_leaves
    )
    return {
        "closed": won,
        "open": result.part_means["open"],
        "new": result.part_means["new"],
        # renewals already passed (in `closed` of the simulation) and those still to come
        "recurring": result.part_means["recurring"] + (sim_inputs.closed - won),
    }


def _leaned_draws(
    lean: SeriesLean | None, leaf_draws: np.ndarray, booked: np.ndarray
) -> np.ndarray:
    """Every leaf's draws, what each adds to its bookings scaled where the forecast leans on a
    series (the same array where nothing leans)."""
    if lean is None:
        return leaf_draws
    floor = booked[:, None].astype(leaf_draws.dtype)
    return floor + (leaf_draws - floor) * lean.leaf_scale[:, None].astype(leaf_draws.dtype)


def expected_by_node(inputs: QuarterInputs) -> pd.DataFrame:
    """The simulation's exact mean and what is already booked at every node (level, node,
    mean, booked), without drawing."""
    return _by_node(inputs.tree, *_expected_per_leaf(inputs))


def _by_node(tree: OrgTree, per_leaf: np.ndarray, booked: np.ndarray) -> pd.DataFrame:
    frames = []
    for level in LEVELS:
        names = tree.groups[level][1]
        frames.append(
            pd.DataFrame(
                {
                    "level": level,
                    "node": names.astype(str),
                    "mean": tree.roll_up(per_leaf, level),
                    "booked": tree.roll_up(booked, level),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _expected_per_leaf(inputs: QuarterInputs) -> tuple[np.ndarray, np.ndarray]:
    """Per leaf, the simulation's exact mean and what is already booked."""
    sim = inputs.simulation_inputs()
    exact = moments(sim)
    per_leaf = sim.closed + exact.mean["open"] + exact.mean["new"] + exact.mean["recurring"]
    return per_leaf, sim.closed


def with_lean(inputs: QuarterInputs, forecasts: pd.DataFrame, basis: str) -> QuarterInputs:
    """`inputs` with the nodes of `forecasts` (level, node, source, forecast: a time series'
    forecast of the quarter) leaning on their series, every node still the sum of its
    children; see `SeriesLean`."""
    per_leaf, booked = _expected_per_leaf(inputs)
    rows = forecasts.merge(_by_node(inputs.tree, per_leaf, booked), on=["level", "node"])
    rows = rows[series_followed(rows["forecast"], rows["mean"], rows["booked"])]
    if rows.empty:
        return replace(inputs, lean=None)
    to_come = np.maximum(per_leaf - booked, 0.0)
    targets = {
        level: (group["forecast"] - group["booked"]).set_axis(group["node"])
        for level, group in rows.groupby("level")
    }
    final = coherent_to_come(inputs.tree, to_come, targets)
    scale = np.divide(final, to_come, out=np.ones_like(final), where=to_come > 0)
    return replace(inputs, lean=SeriesLean(rows[["level", "node", "source"]], scale, basis))
