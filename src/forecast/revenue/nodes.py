"""The forecast's tables: per node of the org tree, per deal, the deals that drive a spread."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from forecast.revenue.inputs import QuarterInputs
from forecast.revenue.params import PARTS
from forecast.revenue.simulation import SimulationInputs, summarise
from forecast.revenue.tree import COMPANY, OrgTree


def deal_table(inputs: QuarterInputs, sim: SimulationInputs, variance: np.ndarray) -> pd.DataFrame:
    deals = inputs.open_deals
    leaves = inputs.tree.leaves
    columns = [
        "deal_id", "rep_id", "stage", "amount", "expected_close", "bucket", "p_win",
        "p_close_inside", "p_inside", "expected_amount", "in_quarter_pipeline",
    ]  # fmt: skip
    out = deals[columns].copy()
    out["removed"] = deals["removed"].to_numpy(bool) if "removed" in deals else False
    out["leaf"] = sim.deal_leaf
    out["team"] = leaves["team"].to_numpy(object)[sim.deal_leaf]
    out["region"] = leaves["region"].to_numpy(object)[sim.deal_leaf]
    out["expected_bookings"] = out["p_inside"] * out["expected_amount"]
    out["variance"] = variance
    return out


def node_frame(
    level: str,
    names: pd.Index,
    values: np.ndarray,
    *,
    tree: OrgTree,
    targets: pd.Series | None,
    leaf_parts: dict[str, np.ndarray],
    booked: np.ndarray,
    pipeline: np.ndarray,
    n_open: np.ndarray,
    workers: int | None = None,
) -> pd.DataFrame:
    target = (targets if targets is not None else pd.Series(dtype=float)).reindex(names)
    target = target.to_numpy(dtype=float)
    stats = summarise(values, target, workers=workers)
    roll = {k: tree.roll_up(v, level) for k, v in leaf_parts.items()}
    booked_here = tree.roll_up(booked, level)
    # what new business still has to bring: the target less what is booked and the renewals
    # expected to come (recurring includes the renewals already booked)
    remaining = target - roll["closed"] - roll["recurring"]
    open_pipeline = tree.roll_up(pipeline, level)
    with np.errstate(divide="ignore", invalid="ignore"):
        coverage = np.where(remaining > 0, open_pipeline / remaining, np.inf)
    coverage = np.where(np.isnan(target), np.nan, coverage)
    frame = pd.DataFrame(
        {
            "level": level,
            "node": names.astype(str),
            "parent": tree.parent(level).reindex(names).to_numpy(object),
            "mean": stats["mean"],
            "std": stats["std"],
            "p10": stats["p10"],
            "p50": stats["p50"],
            "p90": stats["p90"],
            "target": target,
            "gap_to_target": target - stats["mean"],
            "p_reach_target": stats["reach"],
            **{part: roll[part] for part in PARTS},
            "booked": booked_here,
            "open_pipeline": open_pipeline,
            "remaining_gap": remaining,
            "coverage": coverage,
            "open_deals": tree.roll_up(n_open.astype(float), level).astype(int),
        }
    )
    return frame


def drivers_of(
    deals: pd.DataFrame, nodes: pd.DataFrame, tree: OrgTree, levels: Sequence[str], k: int
) -> pd.DataFrame:
    """Per node, the k deals with the largest variance and their share of the node's variance."""
    live = deals[(deals["variance"] > 0) & ~deals["removed"]]
    node_var = nodes.set_index(["level", "node"])["std"] ** 2
    parts = []
    for level in levels:
        key = {
            "rep": live["rep_id"],
            "team": live["team"],
            "region": live["region"],
            COMPANY: pd.Series(COMPANY, index=live.index),
        }[level]
        ranked = live.assign(level=level, node=key.astype(str).to_numpy()).sort_values(
            ["node", "variance"], ascending=[True, False], kind="stable"
        )
        top = ranked.groupby("node", sort=False).head(k).copy()
        top["rank"] = top.groupby("node").cumcount() + 1
        total = node_var.reindex(pd.MultiIndex.from_arrays([top["level"], top["node"]]))
        top["variance_share"] = top["variance"].to_numpy() / np.where(
            total.to_numpy() > 0, total.to_numpy(), np.nan
        )
        top["cumulative_share"] = top.groupby("node")["variance_share"].cumsum()
        parts.append(top)
    columns = [
        "level", "node", "rank", "deal_id", "rep_id", "stage", "amount", "expected_close",
        "p_win", "p_inside", "expected_amount", "variance_share", "cumulative_share",
    ]  # fmt: skip
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]


def hide_empty(nodes: pd.DataFrame) -> pd.DataFrame:
    """Drop leaves and groups with nothing at all: no target, no bookings, no pipeline."""
    empty = (
        nodes["target"].isna()
        & (nodes["mean"].abs() < 1e-9)
        & (nodes["open_deals"] == 0)
        & (nodes["level"] != COMPANY)
    )
    return nodes[~empty].reset_index(drop=True)
