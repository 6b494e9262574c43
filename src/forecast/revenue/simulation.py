"""The Monte Carlo engine of the revenue forecast: independent items summed up an org tree.

Everything the quarter may still bring is an item owned by a leaf of the org tree (a rep):

- a **deal** pays `amount` with probability `prob` (won and closed inside the window), else 0;
- a **renewal chain** is an account's run of renewal decisions: decision k is passed with
  probability `prob[k]` if every earlier one was, and pays `value[k]` when passed (0 for
  decisions outside the quarter: they only decide whether the account is still there). A chain's
  bill may still change before its decision: each draw multiplies its values by a ratio drawn
  from its pool of past bill changes;
- **new deals** of a leaf arrive as a Poisson count with mean `rate`, each paying an amount drawn
  from the leaf's pool of past amounts.

On top of the items' own chance, three factors move a whole quarter at once: one multiplies every
deal's probability, one every chain's churn probabilities, one every leaf's rate of new deals
(each with mean 1 and a spread learned from earlier quarters; see `forecast.revenue.Spreads`).
Below them, a group's own quarter (a team's month): per group of leaves (`leaf_group`) and draw,
one factor multiplies what its open deals book and one what its new deals book (lognormal, mean
1 over the draws, independent across groups and of the quarter's factors).

A leaf's draws are the sum of its items' draws plus what is already known (`closed`); every
parent's draws are the sum of its children's, so the tree is coherent by construction.

How it stays fast and small (100,000 open deals x 10,000 draws over a 7,000-rep tree in about
7 s on two cores: `benchmarks/revenue_simulation.py`):

- Draws are streamed: deals and chains are simulated `chunk_rows` at a time into per-leaf totals
  (float32), so memory is (leaves + chunk) x draws, never items x draws. Chunks run on a few
  threads and are added in chunk order, so the result does not depend on the thread count.
- Bernoulli trials compare 16-bit uniforms (four per 64-bit output of PCG64) with the probability
  scaled to 65,536: exact to 1/65,536 (a probability of 1 passes 65,535 times in 65,536).
- The shared factors are stratified on a grid: draw d sits in row d // B and column d % B
  (B = ceil(sqrt(draws))); the deal factor takes one quantile per row, the churn factor one per
  column, the new-deal factor one per row in shuffled order. So the deal and churn factors are
  independent and every threshold is a small per-item table, not an items x draws matrix.
- A chain needs one uniform per draw, however many decisions it has: decision k is passed when
  u < P(passing every decision up to k), which gives the nested events of the chain exactly.
- Amounts of new deals come from 256 quantiles of their pool, bill changes from a step function
  (the most common change, then three bins of the others), both scaled to keep the pool's mean.
- Each chunk has its own random stream derived from the seed, the item kind and the chunk's
  position, so a scenario that changes some deals and keeps the rest in place (removed deals keep
  their slot with probability 0, added deals go at the end) reuses the same random numbers for
  every unchanged deal: the difference between two runs is the scenario, not noise.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from forecast.revenue.draws import Grid, chain_tasks, deal_tasks, new_tasks, run_tasks

CHUNK_ROWS = 2048

DEFAULT_WORKERS = min(2, os.cpu_count() or 1)


@dataclass(frozen=True)
class SimulationInputs:
    """Items to simulate, already reduced to numbers (see the module docstring).

    Attributes:
        n_leaves: leaves of the org tree.
        closed: known bookings per leaf (deterministic).
        deal_leaf, deal_prob, deal_amount: one entry per deal, in a fixed order.
        chain_leaf: one entry per renewal chain (account).
        chain_prob, chain_value: chains x steps; padding steps have prob 1 and value 0.
        new_rate: expected count of new deals per leaf.
        new_pool: per leaf, the index of its amount pool in `pools`.
        pools: arrays of past amounts to draw new deals' amounts from.
        chain_pool: per chain, the index in `ratio_pools` its bill change is drawn from (-1:
            the bill is taken as known).
        ratio_pools: arrays of past bill ratios, each with mean 1.
        deal_shock_sd, churn_shock_sd: log-scale sd of the quarter's factor on every deal's
            probability (capped at 1) and on every chain's churn probabilities (lognormal,
            mean 1).
        new_shock_sd: coefficient of variation of the quarter's factor on every leaf's rate of
            new deals (gamma, mean 1).
        unbilled: per leaf, the expected renewals of accounts not billed yet (SMB subscriptions
            starting after the last known month renew monthly inside the quarter); added as
            expected, counted in the recurring part. None: none.
        leaf_group: per leaf, its group (a team) whose own quarter moves it with the others of
            the group; None: no group factors.
        group_deal_sd, group_new_sd: log-scale sd of a group's factor on what its open deals and
            its new deals book.
    """

    n_leaves: int
    closed: np.ndarray
    deal_leaf: np.ndarray
    deal_prob: np.ndarray
    deal_amount: np.ndarray
    chain_leaf: np.ndarray
    chain_prob: np.ndarray
    chain_value: np.ndarray
    new_rate: np.ndarray
    new_pool: np.ndarray
    pools: tuple[np.ndarray, ...] = field(default_factory=tuple)
    chain_pool: np.ndarray | None = None
    ratio_pools: tuple[np.ndarray, ...] = field(default_factory=tuple)
    deal_shock_sd: float = 0.0
    churn_shock_sd: float = 0.0
    new_shock_sd: float = 0.0
    unbilled: np.ndarray | None = None
    leaf_group: np.ndarray | None = None
    group_deal_sd: float = 0.0
    group_new_sd: float = 0.0

    def __post_init__(self) -> None:
        n = len(self.deal_leaf)
        if not (len(self.deal_prob) == len(self.deal_amount) == n):
            raise ValueError("deal_leaf, deal_prob and deal_amount must have the same length")
        if self.chain_prob.shape != self.chain_value.shape or len(self.chain_leaf) != len(
            self.chain_prob
        ):
            raise ValueError("chain_prob and chain_value must be chains x steps")
        for name in ("closed", "new_rate", "new_pool", "unbilled", "leaf_group"):
            if getattr(self, name) is not None and len(getattr(self, name)) != self.n_leaves:
                raise ValueError(f"{name} needs one value per leaf ({self.n_leaves})")
        for name, values in (("deal_prob", self.deal_prob), ("chain_prob", self.chain_prob)):
            if np.size(values) and (np.nanmin(values) < 0 or np.nanmax(values) > 1):
                raise ValueError(f"{name} must lie in [0, 1]")
        for leaf_name in ("deal_leaf", "chain_leaf"):
            leaf = getattr(self, leaf_name)
            if len(leaf) and (leaf.min() < 0 or leaf.max() >= self.n_leaves):
                raise ValueError(f"{leaf_name} must index the {self.n_leaves} leaves")
        for name in (
            "deal_shock_sd",
            "churn_shock_sd",
            "new_shock_sd",
            "group_deal_sd",
            "group_new_sd",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


@dataclass(frozen=True)
class Moments:
    """Expectation and variance per leaf of each part, items independent (no shared factors)."""

    mean: dict[str, np.ndarray]
    variance: dict[str, np.ndarray]
    deal_variance: np.ndarray


@dataclass(frozen=True)
class SimulationResult:
    """Draws per leaf (leaves x draws, float32) and the simulated mean of each part per leaf."""

    leaf_draws: np.ndarray
    part_means: dict[str, np.ndarray]
    draws: int
    seed: int


SUMMARY_ROWS = 256  # nodes summarised at a time


def summarise(
    values: np.ndarray, target: np.ndarray, *, workers: int | None = None
) -> dict[str, np.ndarray]:
    """Per row of draws: mean, std, P10, P50, P90 and the share of draws reaching `target`
    (NaN where the target is). Rows are taken a block at a time, on threads."""
    workers = DEFAULT_WORKERS if workers is None else max(1, workers)
    n = len(values)
    out = {k: np.full(n, np.nan) for k in ("mean", "std", "p10", "p50", "p90", "reach")}

    def block(start: int) -> None:
        rows = slice(start, start + SUMMARY_ROWS)
        x = values[rows]
        out["mean"][rows] = x.mean(axis=1, dtype=np.float64)
        out["std"][rows] = x.std(axis=1, dtype=np.float64)
        out["p10"][rows], out["p50"][rows], out["p90"][rows] = np.percentile(
            x, [10, 50, 90], axis=1
        )
        goal = target[rows]
        reach = (x >= goal[:, None]).mean(axis=1)
        out["reach"][rows] = np.where(np.isnan(goal), np.nan, reach)

    starts = range(0, n, SUMMARY_ROWS)
    if workers <= 1 or n <= SUMMARY_ROWS:
        for start in starts:
            block(start)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(block, starts))
    return out


def chain_moments(prob: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expectation and variance of each renewal chain (rows), with no shared uncertainty.

    X = sum_k v_k S_k with S_k = prod_{j<=k} B_j, so E[S_k S_l] = s_max(k,l).
    """
    if prob.size == 0:
        return np.zeros(len(prob)), np.zeros(len(prob))
    survive = np.cumprod(prob, axis=1)
    ex = (value * survive).sum(axis=1)
    steps = value.shape[1]
    later = np.maximum.outer(np.arange(steps), np.arange(steps))
    ex2 = np.einsum("ak,al,akl->a", value, value, survive[:, later])
    return ex, np.maximum(ex2 - ex * ex, 0.0)


def moments(inputs: SimulationInputs) -> Moments:
    """Expectation and variance per leaf of the open deals, renewals and new deals."""
    n = inputs.n_leaves
    p, a = inputs.deal_prob, inputs.deal_amount
    deal_var = a * a * p * (1 - p)
    mean = {"open": np.bincount(inputs.deal_leaf, p * a, minlength=n)}
    variance = {"open": np.bincount(inputs.deal_leaf, deal_var, minlength=n)}
    ex, chain_var = chain_moments(inputs.chain_prob, inputs.chain_value)
    mean["recurring"] = np.bincount(inputs.chain_leaf, ex, minlength=n) + _unbilled(inputs)
    variance["recurring"] = np.bincount(inputs.chain_leaf, chain_var, minlength=n)
    pool_mean = np.array([x.mean() if len(x) else 0.0 for x in inputs.pools] or [0.0])
    pool_sq = np.array([(x * x).mean() if len(x) else 0.0 for x in inputs.pools] or [0.0])
    mean["new"] = inputs.new_rate * pool_mean[inputs.new_pool]
    variance["new"] = inputs.new_rate * pool_sq[inputs.new_pool]  # compound Poisson
    return Moments(mean=mean, variance=variance, deal_variance=deal_var)


def simulate(
    inputs: SimulationInputs,
    *,
    draws: int = 10_000,
    seed: int = 0,
    chunk_rows: int = CHUNK_ROWS,
    workers: int | None = None,
) -> SimulationResult:
    """Draw the quarter `draws` times; returns per-leaf totals and the mean of each part.

    Chunks are drawn on `workers` threads (default: up to two, the cores of the machines this
    runs on) and added to the totals in chunk order, so the result does not depend on them.
    """
    if draws < 1:
        raise ValueError(f"draws={draws}: need at least one draw")
    workers = DEFAULT_WORKERS if workers is None else max(1, workers)
    grid = Grid.of(draws, inputs, seed)
    totals = np.zeros((inputs.n_leaves, grid.padded), dtype=np.float32)
    part_means = {"closed": inputs.closed.astype(float)}
    for name, tasks in (
        ("open", deal_tasks),
        ("recurring", chain_tasks),
        ("new", new_tasks),
    ):
        before = totals[:, :draws].sum(axis=1, dtype=np.float64)
        run_tasks(tasks(inputs, grid, seed, chunk_rows), totals, workers)
        part_means[name] = (totals[:, :draws].sum(axis=1, dtype=np.float64) - before) / draws
    part_means["recurring"] = part_means["recurring"] + _unbilled(inputs)
    out = totals[:, :draws]
    out += (inputs.closed + _unbilled(inputs)).astype(np.float32)[:, None]
    return SimulationResult(leaf_draws=out, part_means=part_means, draws=draws, seed=seed)


def _unbilled(inputs: SimulationInputs) -> np.ndarray:
    if inputs.unbilled is None:
        return np.zeros(inputs.n_leaves)
    return np.asarray(inputs.unbilled, dtype=float)
