"""Deals not created yet: a Poisson count per team at its recent level, amounts from its past."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from forecast.data.tables import CrmTables
from forecast.revenue.params import DAY, RevenueParams, Window
from forecast.revenue.spread import misses_frame, pooled_excess, relative_excess
from forecast.revenue.tree import OrgTree


@dataclass(frozen=True)
class NewDeals:
    """Deals created after `as_of` and won inside the quarter, per team.

    Attributes:
        counts: team x earlier quarter: such deals seen at the same point of that quarter.
        seasonal: quarter of year (1-4) -> index (mean 1).
        rate: expected count per team for the forecast quarter.
        pools: per team, the amounts to draw from (its own past amounts, else its region's, else
            everyone's when too few).
    """

    counts: pd.DataFrame
    seasonal: pd.Series
    rate: pd.Series
    pools: dict[str, np.ndarray]
    level: pd.Series = field(default_factory=pd.Series)  # team -> deseasonalised count
    amounts: pd.Series = field(default_factory=pd.Series)  # earlier quarter -> amount won
    level_quarters: int = 4  # the latest quarters that set the level (see `RevenueParams`)
    team_amounts: pd.DataFrame = field(default_factory=pd.DataFrame)  # team x earlier quarter

    def spread(self) -> float:
        """Relative spread of a quarter's new-deal bookings beyond Poisson chance, from how the
        earlier quarters' totals moved around the model (0 when they did not)."""
        return relative_excess(self.misses())

    def misses(self) -> pd.DataFrame:
        """The new deals' misses (`forecast.revenue.spread.misses_frame`) per earlier quarter.

        Each earlier quarter is forecast as the model would have forecast it then: at the level
        of the `level_quarters` quarters before it (not at today's level, which learned from that
        quarter itself), so the spread includes what the level misses, e.g. growth since it
        was measured.
        """
        rows: dict[pd.Period, tuple[float, float, float]] = {}
        if self.counts.empty or not self.pools:
            return misses_frame(rows)
        everyone = np.concatenate([v for v in self.pools.values() if len(v)] or [np.zeros(1)])
        mean, square = float(everyone.mean()), float((everyone**2).mean())
        quarters = list(self.counts.columns)  # oldest first
        totals = self.counts.sum(axis=0).to_numpy(float)
        index = np.array([float(self.seasonal.get(q.quarter, 1.0)) for q in quarters])
        deseasonal = totals / index
        for i, quarter in enumerate(quarters):
            if i == 0:  # nothing before it to forecast it from
                continue
            level = float(deseasonal[max(0, i - self.level_quarters) : i].mean())
            expected_n = level * index[i]
            actual = float(self.amounts.get(quarter, 0.0))
            rows[quarter] = (expected_n * mean, expected_n * square, actual)
        return misses_frame(rows)

    def team_spread(self, company: float) -> float:
        """Relative spread of a team's own quarter of new deals: each team's earlier quarters
        against the level its quarters before them set (as `spread`), pooled over teams and
        quarters, less what the company's quarter (`company`) explains."""
        if self.counts.empty or self.team_amounts.empty or not self.pools:
            return 0.0
        quarters = list(self.counts.columns)
        index = np.array([float(self.seasonal.get(q.quarter, 1.0)) for q in quarters])
        deseasonal = self.counts.to_numpy(float) / index
        residual, chance, expected = [], [], []
        for t, team in enumerate(self.counts.index):
            pool = self.pools.get(team)
            if pool is None or not len(pool):
                continue
            mean, square = float(pool.mean()), float((pool**2).mean())
            for i in range(1, len(quarters)):
                n = float(deseasonal[t, max(0, i - self.level_quarters) : i].mean()) * index[i]
                actual = float(self.team_amounts.iloc[t, i])
                residual.append(actual - n * mean)
                chance.append(n * square)
                expected.append(n * mean)
        return pooled_excess(
            pd.Series(residual, dtype=float),
            pd.Series(chance, dtype=float),
            pd.Series(expected, dtype=float),
            less=company,
        )


def learn_new_deals(
    tables: CrmTables,
    window: Window,
    earlier: Sequence[Window],
    won: pd.DataFrame,
    params: RevenueParams,
) -> NewDeals:
    """Count and amounts of deals created after the same point of earlier quarters and won
    inside them, per team; the team's level for the forecast quarter with seasonality."""
    deals = tables.deals.set_index("deal_id")
    team_of = tables.reps.set_index("rep_id")["team"]
    region_of = tables.reps.drop_duplicates("team").set_index("team")["region"]
    won = won.assign(
        created_at=deals["created_at"].reindex(won["deal_id"].to_numpy()).to_numpy(),
        team=team_of.reindex(won["rep_id"].to_numpy()).to_numpy(object),
    )
    teams = pd.Index(sorted(tables.reps["team"].dropna().unique()), name="team")
    counts, amounts = {}, []
    for w in earlier:
        later = won[
            (won["created_at"] > w.as_of)
            & (won["closed_at"] >= w.start)
            & (won["closed_at"] < w.end)
        ]
        counts[w.quarter] = later.groupby("team").size().reindex(teams, fill_value=0)
        amounts.append(later[["team", "amount"]].assign(quarter=w.quarter))
    if not counts:
        empty = pd.Series(0.0, index=teams)
        return NewDeals(pd.DataFrame(index=teams), pd.Series(1.0, index=[1, 2, 3, 4]), empty, {})
    table = pd.DataFrame(counts)[sorted(counts)]  # teams x quarters, oldest first
    seasonal = _seasonal_index(table.sum(axis=0))
    deseasonal = table / seasonal.reindex([q.quarter for q in table.columns]).to_numpy()
    level = deseasonal.iloc[:, -params.level_quarters :].mean(axis=1)
    rate = level * float(seasonal.get(window.quarter.quarter, 1.0))
    if window.start >= window.end:
        rate = rate * 0.0
    past = pd.concat(amounts, ignore_index=True)
    everyone = past["amount"].to_numpy(float)
    pools = {}
    for team in teams:
        own = past.loc[past["team"] == team, "amount"].to_numpy(float)
        region = region_of.get(team)
        nearby = past.loc[
            past["team"].map(region_of).to_numpy(object) == region, "amount"
        ].to_numpy(float)
        pools[team] = (
            own
            if len(own) >= params.min_pool
            else (nearby if len(nearby) >= params.min_pool else everyone)
        )
    totals = past.groupby("quarter")["amount"].sum().reindex(table.columns, fill_value=0.0)
    by_team = (
        past.groupby(["team", "quarter"])["amount"].sum().unstack("quarter")
        .reindex(index=teams, columns=table.columns).fillna(0.0)
    )  # fmt: skip
    return NewDeals(table, seasonal, rate, pools, level, totals, params.level_quarters, by_team)


def _seasonal_index(totals: pd.Series) -> pd.Series:
    """Quarter-of-year index from company totals: each quarter against its trailing year's mean,
    averaged by quarter of year, pulled towards 1 when seen once, normalised to mean 1."""
    quarters = list(totals.index)
    ratios: dict[int, list[float]] = {1: [], 2: [], 3: [], 4: []}
    values = totals.to_numpy(float)
    for i in range(3, len(values)):
        consecutive = quarters[i] - quarters[i - 3] == 3
        base = values[i - 3 : i + 1].mean()
        if consecutive and base > 0:
            ratios[quarters[i].quarter].append(values[i] / base)
    index = pd.Series(
        {q: 1 + (np.mean(r) - 1) * len(r) / (len(r) + 1) if r else 1.0 for q, r in ratios.items()}
    )
    return index / index.mean()


def new_per_leaf(
    tables: CrmTables, tree: OrgTree, new: NewDeals, as_of: pd.Timestamp, params: RevenueParams
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Split each team's rate of new deals won over its reps by the deals each created in the
    last 91 days times the rep's win rate (evenly over the team's reps when it created none);
    every leaf draws from its team's pool.

    The win rate matters: a rep who opens many deals and wins few would otherwise be handed a
    large share of the team's wins (on a deals-only export of the default world, reps winning
    3 % of their deals were forecast ten times what they booked)."""
    deals = tables.deals
    recent = deals[(deals["created_at"] > as_of - 91 * DAY) & (deals["created_at"] <= as_of)]
    per_rep = recent.groupby("rep_id").size()
    leaves = tree.leaves
    team = leaves["team"].to_numpy(object)
    win_rate = _rep_win_rates(deals, leaves, as_of, params.prior_weight)
    share = per_rep.reindex(leaves["rep_id"].to_numpy()).fillna(0.0).to_numpy(float) * win_rate
    team_total = pd.Series(share).groupby(team).transform("sum").to_numpy()
    sellers = (leaves["rep_id"].isin(deals["rep_id"])).to_numpy()
    even = pd.Series(sellers.astype(float)).groupby(team).transform("sum").to_numpy()
    weight = np.where(
        team_total > 0,
        share / np.where(team_total > 0, team_total, 1),
        np.where(even > 0, sellers / np.where(even > 0, even, 1), 0.0),
    )
    rate = new.rate.reindex(team).fillna(0.0).to_numpy(float) * weight
    pool_names = tuple(sorted(new.pools))
    lookup = {name: i for i, name in enumerate(pool_names)}
    pool = np.array([lookup.get(t, 0) for t in team], dtype=np.int64)
    if not pool_names:
        return np.zeros(tree.n_leaves), np.zeros(tree.n_leaves, dtype=np.int64), ()
    return rate, pool, pool_names


def _rep_win_rates(
    deals: pd.DataFrame, leaves: pd.DataFrame, as_of: pd.Timestamp, prior_weight: float
) -> np.ndarray:
    """Each leaf rep's share of deals won among those closed in the year before `as_of`, pulled
    towards the team's rate (and the team's towards everyone's) by `prior_weight` deals."""
    closed = deals[(deals["closed_at"] > as_of - 365 * DAY) & (deals["closed_at"] <= as_of)]
    won = (closed["outcome"] == "won").astype(float)
    by_rep = won.groupby(closed["rep_id"]).agg(["sum", "size"])
    rep = by_rep.reindex(leaves["rep_id"].to_numpy()).fillna(0.0)
    overall = float(won.mean()) if len(won) else 0.5
    team_of = leaves.set_index("rep_id")["team"]
    by_team = by_rep.groupby(team_of.reindex(by_rep.index).to_numpy()).sum()
    team = by_team.reindex(leaves["team"].to_numpy()).fillna(0.0)
    team_rate = (team["sum"].to_numpy() + prior_weight * overall) / (
        team["size"].to_numpy() + prior_weight
    )
    return (rep["sum"].to_numpy() + prior_weight * team_rate) / (
        rep["size"].to_numpy() + prior_weight
    )
