"""Everything the quarter's simulation needs, learned and scored at `as_of`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from forecast.data.tables import CrmTables, Featurize
from forecast.features.deals import deal_features, deal_snapshots
from forecast.revenue.bookings import (
    UNASSIGNED,
    recurring_months,
    won_deals,
)
from forecast.revenue.new_deals import NewDeals, learn_new_deals, new_per_leaf
from forecast.revenue.params import (
    SEGMENT_RATES,
    RenewalProbability,
    RevenueParams,
    Window,
    WinScorer,
)
from forecast.revenue.renewals import RenewalBook, RenewalRates, renewal_book, unbilled_renewals
from forecast.revenue.simulation import SimulationInputs
from forecast.revenue.spread import (
    Spreads,
    churn_shock,
    joint_scale,
    lognormal_sd,
    relative_excess,
    renewal_misses,
)
from forecast.revenue.timing import (
    CloseTiming,
    score_open_deals,
    timing_history,
    typical_cycle_days,
    with_team,
)
from forecast.revenue.tree import LEVELS, OrgTree


@dataclass(frozen=True)
class SeriesLean:
    """The nodes whose forecast leans on a time series: where the pipeline says little (no
    expected close dates, a thin history, few open deals) the revenue backtest erred less with
    the series than with the simulation. Such a node keeps the shape of the simulation's
    distribution: what it adds to the node's bookings so far is scaled so that the mean is the
    series' forecast (a series forecasting no more than is booked is not followed).

    Every node stays the sum of its children (`coherent_to_come`): a node that does not lean
    moves by what leans under it, and the children of a leaning node share its figure in
    proportion to their own (the highest leaning node holds).

    Attributes:
        nodes: level, node, source (the series) of the nodes that lean.
        leaf_scale: per leaf (rep), the scale of its draws above what it has booked.
        basis: where the choice came from (the backtest run), said with the forecast.
    """

    nodes: pd.DataFrame
    leaf_scale: np.ndarray
    basis: str

    def sources(self, level: str, names: pd.Index) -> np.ndarray:
        """Per node of `level` (in `names` order): the series it leans on, or "simulation"."""
        rows = self.nodes[self.nodes["level"] == level].set_index("node")
        return rows["source"].reindex(names.astype(str)).fillna(SIMULATION).to_numpy(object)


SIMULATION = "simulation"  # a node's source when it does not lean on a series


@dataclass(frozen=True)
class QuarterInputs:
    """Everything the simulation needs, as learned and scored at `as_of`.

    `open_deals` holds one row per open deal (its features, win probability, timing factor,
    expected booked amount, P(won inside the window)); `Scenario.apply` edits these rows.
    """

    window: Window
    tree: OrgTree
    targets: dict[str, pd.Series]
    won: pd.DataFrame
    renewals_booked: pd.DataFrame
    open_deals: pd.DataFrame
    chains: pd.DataFrame
    chain_prob: np.ndarray
    chain_value: np.ndarray
    new: NewDeals
    new_leaf_rate: np.ndarray
    new_leaf_pool: np.ndarray
    pool_names: tuple[str, ...]
    timing: CloseTiming
    renewal_rates: RenewalRates
    params: RevenueParams
    chain_pool: np.ndarray | None = None
    spreads: Spreads | None = None
    churn_shock_sd: float = 0.0
    scenario: str | None = None  # the name of the scenario applied, if any
    unbilled: pd.Series | None = None  # owner -> expected renewals of accounts not billed yet
    renewals_source: str = SEGMENT_RATES  # what gave the pending renewals their probabilities
    lean: SeriesLean | None = None  # nodes that lean on a time series (`with_lean`)

    def leaf_of(self, owners: pd.Series) -> np.ndarray:
        """Leaf of each owner (rep_id); owners not in the tree go to the unassigned leaf."""
        unassigned = int(self.tree.leaf_index(np.array([UNASSIGNED], dtype=object))[0])
        index = self.tree.leaf_index(owners)
        return np.where(index < 0, unassigned, index)

    def simulation_inputs(self) -> SimulationInputs:
        deals = self.open_deals
        leaf = self.leaf_of

        closed = np.bincount(
            leaf(self.won["rep_id"]), self.won["amount"], minlength=self.tree.n_leaves
        ) + np.bincount(
            leaf(self.renewals_booked["owner"]),
            self.renewals_booked["value"],
            minlength=self.tree.n_leaves,
        )
        return SimulationInputs(
            n_leaves=self.tree.n_leaves,
            closed=closed.astype(float),
            deal_leaf=leaf(deals["rep_id"]),
            deal_prob=deals["p_inside"].to_numpy(dtype=float),
            deal_amount=deals["expected_amount"].to_numpy(dtype=float),
            chain_leaf=leaf(self.chains["owner"]),
            chain_prob=self.chain_prob,
            chain_value=self.chain_value,
            new_rate=self.new_leaf_rate,
            new_pool=self.new_leaf_pool,
            pools=tuple(self.new.pools[name] for name in self.pool_names),
            chain_pool=self.chain_pool,
            ratio_pools=self.renewal_rates.ratio_pools,
            deal_shock_sd=lognormal_sd(self.spreads.open) if self.spreads else 0.0,
            new_shock_sd=float(np.sqrt(self.spreads.new)) if self.spreads else 0.0,
            churn_shock_sd=self.churn_shock_sd,
            unbilled=self._unbilled_per_leaf(),
            leaf_group=self.tree.groups["team"][0],
            group_deal_sd=lognormal_sd(self.spreads.team_open) if self.spreads else 0.0,
            group_new_sd=lognormal_sd(self.spreads.team_new) if self.spreads else 0.0,
        )

    def _unbilled_per_leaf(self) -> np.ndarray | None:
        if self.unbilled is None or self.unbilled.empty:
            return None
        owners = pd.Series(self.unbilled.index.to_numpy(object))
        leaf = self.leaf_of(owners)
        return np.bincount(leaf, self.unbilled.to_numpy(float), minlength=self.tree.n_leaves)


def prepare_quarter(
    tables: CrmTables,
    *,
    quarter: str | pd.Period,
    as_of: pd.Timestamp | str,
    win_scorer: WinScorer,
    renewal_probability: RenewalProbability | None = None,
    params: RevenueParams | None = None,
    features: pd.DataFrame | None = None,
    featurize: Featurize = deal_features,
    open_scores: pd.Series | None = None,
) -> QuarterInputs:
    """Learn and score everything the quarter's simulation needs, from what was known at as_of.

    Args:
        tables: the CRM (rows after `as_of` are never read).
        quarter: calendar quarter, e.g. "2026Q4".
        as_of: the moment of the forecast.
        win_scorer: deal feature frame -> P(won) per row.
        renewal_probability: pending renewal decisions -> P(renewed) per row; the historical
            rate of each segment when None.
        params: see `RevenueParams`.
        features: optional precomputed `deal_features` rows (deal_id, as_of, ...) covering the
            snapshots needed; they are recomputed when absent (by `featurize`: on a Dask
            cluster, `forecast.features.on_dask.deal_features_on`, the same numbers).
        open_scores: P(won) of every deal open at as_of, by deal id, already scored (the book
            `forecast score deals --all` wrote, `forecast.explain.book.read_book_scores`): used
            for them instead of `win_scorer`, which still scores the earlier quarters' deals.
    """
    params = params or RevenueParams()
    window, earlier = _windows(tables, quarter, pd.Timestamp(as_of), params)
    as_of = window.as_of
    dates = [as_of, *(w.as_of for w in earlier)]
    snapshots = _snapshot_features(tables, dates, features, featurize)
    won = won_deals(tables).query("closed_at <= @as_of")
    history = timing_history(snapshots, earlier, won, win_scorer, params)
    timing = replace(CloseTiming.fit(history, params), cycle_days=typical_cycle_days(tables, as_of))
    open_deals = score_open_deals(
        snapshots, window, tables, win_scorer, timing, params, scores=open_scores
    )
    tree = org_tree(tables)
    new = learn_new_deals(tables, window, earlier, won, params)
    leaf_rate, leaf_pool, pool_names = new_per_leaf(tables, tree, new, as_of, params)

    months = recurring_months(tables, as_of)
    spreads = _spreads(
        timing, new, history=with_team(history, tables), params=params, earlier=earlier,
        # earlier quarters judged by the segment rates each learned from what it knew then: a
        # churn model fitted later has seen those renewals, so its residuals there are too small
        renewals=renewal_misses(months, window, earlier, params),
    )  # fmt: skip
    return QuarterInputs(
        window=window,
        tree=tree,
        targets=_targets(tables, window.quarter),
        won=won[(won["closed_at"] >= window.q_start) & (won["closed_at"] < window.end)],
        open_deals=open_deals,
        new=new,
        new_leaf_rate=leaf_rate,
        new_leaf_pool=leaf_pool,
        pool_names=pool_names,
        timing=timing,
        params=params,
        spreads=spreads,
        **_renewal_fields(months, (window, earlier), params, renewal_probability, spreads),
    )


def _renewal_fields(
    months: pd.DataFrame,
    windows: tuple[Window, list[Window]],
    params: RevenueParams,
    renewal_probability: RenewalProbability | None,
    spreads: Spreads,
) -> dict:
    """The renewals' part of `QuarterInputs`: the chains of decisions still to come, their
    draws, and the renewals of accounts not billed yet."""
    window, earlier = windows
    book = renewal_book(months, window, params, renewal_probability)
    chain_pool, churn_sd = _chain_draws(book, spreads)
    return {
        "renewals_booked": book.booked,
        "chains": book.chains,
        "chain_prob": book.prob,
        "chain_value": book.value,
        "renewal_rates": book.rates,
        "chain_pool": chain_pool,
        "churn_shock_sd": churn_sd,
        "unbilled": unbilled_renewals(months, window, earlier, params),
        "renewals_source": _source(renewal_probability),
    }


def _spreads(
    timing: CloseTiming,
    new: NewDeals,
    *,
    history: pd.DataFrame,
    params: RevenueParams,
    earlier: Sequence[Window],
    renewals: pd.DataFrame,
) -> Spreads:
    """How far earlier quarters moved beyond their items' chance: the company's open and new
    deals and its renewals, each as far as the company's totals bear it out (`joint_scale`),
    and each team's own quarter beyond the company's (`history` has a team column)."""
    open_misses = timing.misses(history, params)
    open_misses = open_misses.set_axis([earlier[int(i)].quarter for i in open_misses.index])
    parts = [open_misses, new.misses(), renewals]
    company_open, company_new, company_renewals = (relative_excess(part) for part in parts)
    scale = joint_scale(parts)
    return Spreads(
        open=company_open * scale,
        new=company_new * scale,
        renewals=company_renewals * scale,
        # a team's own quarter: what moved beyond the company's parts as each was measured
        team_open=timing.team_spread(history, params, company_open),
        team_new=new.team_spread(company_new),
        scale=scale,
    )


def _windows(
    tables: CrmTables, quarter: str | pd.Period, as_of: pd.Timestamp, params: RevenueParams
) -> tuple[Window, list[Window]]:
    """The quarter's window at as_of, and the same point of the earlier quarters it learns from
    (none before the first deal)."""
    if as_of > tables.as_of:
        raise ValueError(
            f"as_of {as_of:%Y-%m-%d} is after the data's as-of {tables.as_of:%Y-%m-%d}"
        )
    window = Window.of(quarter, as_of)
    start = tables.deals["created_at"].min()
    earlier = window.earlier(params.history_quarters, since=start if pd.notna(start) else as_of)
    return window, earlier


def _chain_draws(book: RenewalBook, spreads: Spreads) -> tuple[np.ndarray | None, float]:
    """Per renewal chain, the pool its bill's change is drawn from (-1: none), and the log-sd
    of the quarter's churn factor."""
    rates, chains, steps = book.rates, book.chains, book.steps
    if not len(chains):
        return None, churn_shock(book, spreads.renewals)
    # an annual bill may still change before its decision: draw the change from past ones
    # (SMB bills are small and renew monthly: their expected growth is enough)
    first = steps[steps["in_quarter"]].groupby("chain")[["segment", "months_ahead"]].first()
    chain_pool = rates.pool_index(first["segment"].to_numpy(), first["months_ahead"].to_numpy())
    chain_pool = np.where(first["segment"].to_numpy(object) == "smb", -1, chain_pool)
    return chain_pool, churn_shock(book, spreads.renewals)


def _source(renewal_probability: RenewalProbability | None) -> str:
    if renewal_probability is None:
        return SEGMENT_RATES
    return str(getattr(renewal_probability, "source", "a renewal model"))


def _snapshot_features(
    tables: CrmTables,
    dates: Sequence[pd.Timestamp],
    features: pd.DataFrame | None,
    featurize: Featurize,
) -> pd.DataFrame:
    """Deal features of every deal open at each date (from the precomputed frame when given)."""
    index = pd.DatetimeIndex(sorted(set(dates)))
    if features is not None:
        have = pd.DatetimeIndex(features["as_of"].unique())
        if index.isin(have).all():
            return features[features["as_of"].isin(index)].reset_index(drop=True)
    snapshots = deal_snapshots(tables, list(index))
    return featurize(tables, snapshots).reset_index(drop=True)


def org_tree(tables: CrmTables) -> OrgTree:
    """Every person in reps is a leaf; owners missing from it book to an unassigned leaf.

    An export without a users table still names its deals' owners: each is then a leaf of its
    own, in no team or region, so the rep level is theirs and not one unassigned row.
    """
    owners = [UNASSIGNED]
    if tables.reps.empty:
        named = tables.deals["rep_id"].dropna().astype(str).unique()
        owners += sorted(set(named) - {UNASSIGNED})
    extra = pd.DataFrame(
        {"rep_id": owners, "name": owners, "team": UNASSIGNED, "region": UNASSIGNED}
    )
    return OrgTree.from_reps(tables.reps, extra=extra)


def _targets(tables: CrmTables, quarter: pd.Period) -> dict[str, pd.Series]:
    t = tables.targets
    t = t[t["period"].astype(str) == str(quarter)]
    return {
        level: t.loc[t["level"] == level].groupby("owner")["amount"].sum().rename(level)
        for level in LEVELS
    }
