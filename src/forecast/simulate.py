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

import itertools
import math
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from statistics import NormalDist

import numpy as np
import pandas as pd
import scipy.sparse as sp

LEVELS: tuple[str, ...] = ("rep", "team", "region", "company")
COMPANY = "company"
CHUNK_ROWS = 2048
ROLL_COLUMNS = 1024  # draws summed up the tree at a time
DEFAULT_WORKERS = min(2, os.cpu_count() or 1)
SCALE = 65_536  # Bernoulli resolution: probabilities are exact to 1/65,536
RATIO_BINS = 3  # bins of the bill changes that are not the most common one
_STREAM_DEALS, _STREAM_RENEWALS, _STREAM_NEW, _STREAM_RATIOS, _STREAM_GROUPS = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class OrgTree:
    """Leaves (reps) and the groups above them: team, region, company.

    Attributes:
        leaves: one row per leaf, columns rep_id, name, team, region (position = leaf index).
        groups: per level, the group index of every leaf and the group names.
    """

    leaves: pd.DataFrame
    groups: dict[str, tuple[np.ndarray, pd.Index]]

    @classmethod
    def from_reps(cls, reps: pd.DataFrame, extra: pd.DataFrame | None = None) -> OrgTree:
        """Every person in `reps` is a leaf, placed by their `team` and `region` columns.

        `extra` adds leaves (rep_id, team, region) for owners not in `reps`, such as the
        unassigned bucket for accounts without an owner.
        """
        columns = ["rep_id", "name", "team", "region"]
        leaves = pd.DataFrame(
            {c: reps[c].astype(object).to_numpy() if c in reps else None for c in columns}
        )
        if extra is not None and len(extra):
            leaves = pd.concat([leaves, extra.reindex(columns=columns)], ignore_index=True)
        leaves = leaves.drop_duplicates("rep_id").reset_index(drop=True)
        groups: dict[str, tuple[np.ndarray, pd.Index]] = {
            "rep": (np.arange(len(leaves)), pd.Index(leaves["rep_id"], name="rep"))
        }
        for level in ("team", "region"):
            codes, names = pd.factorize(leaves[level], sort=True)
            groups[level] = (codes, pd.Index(names, name=level))
        groups[COMPANY] = (np.zeros(len(leaves), dtype=np.int64), pd.Index([COMPANY], name=COMPANY))
        return cls(leaves=leaves, groups=groups)

    @property
    def n_leaves(self) -> int:
        return len(self.leaves)

    def leaf_index(self, rep_ids: np.ndarray | pd.Series) -> np.ndarray:
        """Leaf position of each rep id (-1 where the id is not a leaf)."""
        return pd.Index(self.leaves["rep_id"]).get_indexer(np.asarray(rep_ids, dtype=object))

    def parent(self, level: str) -> pd.Series:
        """For each node of `level`, the name of its parent one level up (empty at the top)."""
        codes, names = self.groups[level]
        if level == COMPANY:
            return pd.Series([""], index=names)
        up = LEVELS[LEVELS.index(level) + 1]
        up_codes, up_names = self.groups[up]
        first = pd.Series(np.arange(self.n_leaves)).groupby(codes).first()
        return pd.Series(up_names[up_codes[first.to_numpy()]], index=names[first.index])

    def roll_up(self, leaf_values: np.ndarray, level: str) -> np.ndarray:
        """Sum leaf rows (leaves x ...) into the groups of `level` (groups x ...), in float64.

        Columns are summed a block at a time, so a float32 leaf matrix is never copied whole.
        """
        codes, names = self.groups[level]
        if level == "rep":
            return leaf_values
        matrix = sp.csr_matrix(
            (np.ones(self.n_leaves), (codes, np.arange(self.n_leaves))),
            shape=(len(names), self.n_leaves),
        )
        if leaf_values.ndim == 1:
            return np.asarray(matrix @ leaf_values.astype(np.float64))
        out = np.empty((len(names), leaf_values.shape[1]))
        for start in range(0, leaf_values.shape[1], ROLL_COLUMNS):
            block = slice(start, start + ROLL_COLUMNS)
            out[:, block] = matrix @ leaf_values[:, block].astype(np.float64)
        return out


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
    grid = _Grid.of(draws, inputs, seed)
    totals = np.zeros((inputs.n_leaves, grid.padded), dtype=np.float32)
    part_means = {"closed": inputs.closed.astype(float)}
    for name, tasks in (
        ("open", _deal_tasks),
        ("recurring", _chain_tasks),
        ("new", _new_tasks),
    ):
        before = totals[:, :draws].sum(axis=1, dtype=np.float64)
        _run(tasks(inputs, grid, seed, chunk_rows), totals, workers)
        part_means[name] = (totals[:, :draws].sum(axis=1, dtype=np.float64) - before) / draws
    part_means["recurring"] = part_means["recurring"] + _unbilled(inputs)
    out = totals[:, :draws]
    out += (inputs.closed + _unbilled(inputs)).astype(np.float32)[:, None]
    return SimulationResult(leaf_draws=out, part_means=part_means, draws=draws, seed=seed)


def _unbilled(inputs: SimulationInputs) -> np.ndarray:
    if inputs.unbilled is None:
        return np.zeros(inputs.n_leaves)
    return np.asarray(inputs.unbilled, dtype=float)


@dataclass(frozen=True)
class _Grid:
    """Draws as a (row stratum x column stratum) grid and the shared factors per stratum.

    Draw d sits in row d // cols and column d % cols. The deal factor takes one quantile per row,
    the churn factor one per column (so the two are independent); the new-deal factor takes one
    quantile per row in a shuffled order (a Latin-hypercube pairing with the deal factor).
    """

    draws: int
    padded: int
    rows: int
    cols: int
    deal_factor: np.ndarray  # per row
    churn_factor: np.ndarray  # per column
    new_factor: np.ndarray  # per row
    group_deal: np.ndarray | None = None  # per leaf: groups x padded draws
    group_new: np.ndarray | None = None

    @classmethod
    def of(cls, draws: int, inputs: SimulationInputs, seed: int) -> _Grid:
        cols = math.isqrt(draws - 1) + 1
        rows = -(-draws // cols)
        order = np.random.Generator(_stream(seed, _STREAM_NEW, 1)).permutation(rows)
        padded = rows * cols
        groups = 0 if inputs.leaf_group is None else int(inputs.leaf_group.max(initial=-1)) + 1
        return cls(
            draws=draws,
            padded=padded,
            rows=rows,
            cols=cols,
            deal_factor=_lognormal_quantiles(inputs.deal_shock_sd, rows),
            churn_factor=_lognormal_quantiles(inputs.churn_shock_sd, cols),
            new_factor=_gamma_quantiles(inputs.new_shock_sd, rows)[order],
            group_deal=_group_factors(inputs.group_deal_sd, groups, padded, seed, kind=0),
            group_new=_group_factors(inputs.group_new_sd, groups, padded, seed, kind=1),
        )

    def by_group(self, factors: np.ndarray | None, inputs: SimulationInputs, leaves, values):
        """`values` (leaves x draws) moved by the factor of each leaf's group in each draw."""
        if factors is not None and inputs.leaf_group is not None:
            values *= factors[inputs.leaf_group[leaves]]
        return values


def _group_factors(sd: float, groups: int, padded: int, seed: int, kind: int) -> np.ndarray | None:
    """groups x draws mean-1 lognormal factors (each group's exactly mean 1 over the draws, so
    a group's own quarter widens its forecast without moving its mean); None when sd is 0."""
    if sd <= 0 or groups == 0:
        return None
    z = np.random.Generator(_stream(seed, _STREAM_GROUPS, kind)).standard_normal((groups, padded))
    values = np.exp(sd * z - sd**2 / 2)
    return (values / values.mean(axis=1, keepdims=True)).astype(np.float32)


def _lognormal_quantiles(sd: float, n: int) -> np.ndarray:
    """n equal-probability strata of a mean-1 lognormal factor (their mid quantiles)."""
    if sd <= 0:
        return np.ones(n)
    z = np.array([NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)])
    values = np.exp(sd * z - sd**2 / 2)
    return values / values.mean()


def _gamma_quantiles(cv: float, n: int) -> np.ndarray:
    """n equal-probability strata of a mean-1 gamma factor with coefficient of variation cv."""
    if cv <= 0:
        return np.ones(n)
    from scipy.stats import gamma

    shape = 1 / cv**2
    values = gamma.ppf((np.arange(n) + 0.5) / n, shape, scale=1 / shape)
    return values / values.mean()


def _stream(seed: int, kind: int, chunk: int) -> np.random.PCG64:
    return np.random.PCG64(np.random.SeedSequence([seed, kind, chunk]))


def _uniform16(bits: np.random.PCG64, rows: int, draws: int) -> np.ndarray:
    """rows x draws uniform integers in [0, 65536), four from each 64-bit output."""
    words = -(-rows * draws // 4)
    return bits.random_raw(words).view(np.uint16)[: rows * draws].reshape(rows, draws)


def _threshold16(prob: np.ndarray) -> np.ndarray:
    """Thresholds t with P(u < t) = prob for a 16-bit uniform u (1 becomes 65535/65536)."""
    return np.minimum(np.rint(prob * SCALE), SCALE - 1).astype(np.uint16)


Update = tuple  # ("rows", leaves, values) or ("points", leaves, columns, amounts)


def _run(tasks: list[Callable[[], list[Update]]], totals: np.ndarray, workers: int) -> None:
    """Run chunk tasks (on threads when workers > 1) and apply their updates in task order,
    keeping at most `workers + 1` chunks in memory."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            _apply(totals, task())
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.submit(task))
            if len(pending) > workers:
                _apply(totals, pending.popleft().result())
        while pending:
            _apply(totals, pending.popleft().result())


def _apply(totals: np.ndarray, updates: list[Update]) -> None:
    for update in updates:
        if update[0] == "rows":
            totals[update[1]] += update[2]
        else:
            np.add.at(totals, (update[1], update[2]), update[3])


def _rows(leaf: np.ndarray, weights: np.ndarray, hits: np.ndarray) -> Update:
    """sum over rows i of weights[i] * hits[i], per leaf, as one sparse product."""
    leaves, local = np.unique(leaf, return_inverse=True)
    matrix = sp.csr_matrix(
        (weights.astype(np.float32), (local, np.arange(len(leaf)))),
        shape=(len(leaves), len(leaf)),
    )
    return ("rows", leaves, matrix @ hits)


def _deal_tasks(
    inputs: SimulationInputs, grid: _Grid, seed: int, chunk_rows: int
) -> list[Callable[[], list[Update]]]:
    def task(chunk: int, rows: slice) -> list[Update]:
        prob = inputs.deal_prob[rows]
        n = len(prob)
        # won inside the window in a draw of deal stratum r: u < P x factor[r]
        threshold = _threshold16(np.minimum(prob[:, None] * grid.deal_factor[None, :], 1.0))
        u = _uniform16(_stream(seed, _STREAM_DEALS, chunk), n, grid.padded)
        won = np.empty((n, grid.rows, grid.cols), dtype=np.float32)
        np.less(u.reshape(won.shape), threshold[:, :, None], out=won, casting="unsafe")
        kind, leaves, values = _rows(
            inputs.deal_leaf[rows], inputs.deal_amount[rows], won.reshape(n, -1)
        )
        return [(kind, leaves, grid.by_group(grid.group_deal, inputs, leaves, values))]

    starts = range(0, len(inputs.deal_leaf), chunk_rows)
    return [partial(task, c, slice(s, s + chunk_rows)) for c, s in enumerate(starts)]


def _chain_tasks(
    inputs: SimulationInputs, grid: _Grid, seed: int, chunk_rows: int
) -> list[Callable[[], list[Update]]]:
    if inputs.chain_prob.ndim != 2 or inputs.chain_prob.shape[1] == 0:
        return []
    pool = inputs.chain_pool
    if pool is None or not inputs.ratio_pools:
        pool = np.full(len(inputs.chain_leaf), -1)
    ratio_steps = _ratio_steps(inputs.ratio_pools)
    # chains whose bill may still change first, so that chunks are of one kind
    order = np.argsort(pool < 0, kind="stable")

    def task(chunk: int, rows: np.ndarray) -> list[Update]:
        prob, value = inputs.chain_prob[rows], inputs.chain_value[rows]
        n = len(rows)
        survive = _survival(prob, grid.churn_factor)
        bits = _stream(seed, _STREAM_RENEWALS, chunk)
        u = _uniform16(bits, n, grid.padded).reshape(n, grid.rows, grid.cols)
        paying = np.flatnonzero(value.any(axis=0))
        leaf = inputs.chain_leaf[rows]
        moving = (pool[rows] >= 0) & (ratio_steps is not None)
        if np.all(value[:, paying] == value[:, paying[:1]]):
            # one uniform per chain: decision k is passed when u < P(passing all up to k);
            # with equal values (SMB months, or one decision) count those passed
            count = np.empty(u.shape, dtype=np.float32)
            np.less(u, survive[:, paying[0], None, :], out=count, casting="unsafe")
            for k in paying[1:]:
                np.add(count, np.less(u, survive[:, k, None, :]), out=count, casting="unsafe")
            counts = count.reshape(n, grid.padded)
            base = value[:, paying[0]]
            if not moving.any():
                return [_rows(leaf, base, counts)]
            assert ratio_steps is not None  # chains move only where there are ratio pools
            levels = np.cumsum(ratio_steps[1], axis=1)
            mode = np.where(moving, levels[np.maximum(pool[rows], 0), 1], 1.0)
            return [
                _rows(leaf, base * mode, counts),
                _ratio_corrections(
                    leaf, base, counts, pool=pool[rows], moving=moving, steps=ratio_steps, bits=bits
                ),
            ]
        passed = np.empty(u.shape, dtype=np.float32)
        paid = np.zeros(u.shape, dtype=np.float32)
        for k in paying:
            np.less(u, survive[:, k, None, :], out=passed, casting="unsafe")
            passed *= value[:, k].astype(np.float32)[:, None, None]
            paid += passed
        totals = paid.reshape(n, grid.padded)
        _apply_ratios(totals, np.where(moving, pool[rows], -1), ratio_steps, bits)
        return [_rows(leaf, np.ones(n), totals)]

    starts = range(0, len(order), chunk_rows)
    return [partial(task, c, order[s : s + chunk_rows]) for c, s in enumerate(starts)]


def _survival(prob: np.ndarray, churn_factor: np.ndarray) -> np.ndarray:
    """chains x steps x churn strata: thresholds of P(passing every decision up to k)."""
    keep = np.ones((len(prob), len(churn_factor)))
    out = np.empty((len(prob), prob.shape[1], len(churn_factor)), dtype=np.uint16)
    for k in range(prob.shape[1]):
        keep *= 1 - np.minimum((1 - prob[:, k, None]) * churn_factor[None, :], 1.0)
        out[:, k, :] = _threshold16(keep)
    return out


def _ratio_corrections(
    leaf: np.ndarray,
    base: np.ndarray,
    count: np.ndarray,
    *,
    pool: np.ndarray,
    moving: np.ndarray,
    steps: tuple[np.ndarray, np.ndarray],
    bits: np.random.PCG64,
) -> Update:
    """Where a moving chain's bill draw is not its pool's most common ratio (a few percent of
    draws), the difference to add: base x count x (ratio drawn - most common ratio)."""
    cuts, jumps = steps
    levels = np.cumsum(jumps, axis=1)
    rows = np.flatnonzero(moving)
    which = pool[rows]
    u = _uniform16(bits, len(rows), count.shape[1])
    other = u >= cuts[which, 1, None]  # above the most common ratio
    if np.any(cuts[which, 0] > 0):  # some pools also have ratios below it
        other |= u < cuts[which, 0, None]
    row, col = np.nonzero(other)
    paid = count[rows[row], col]
    row, col, paid = row[paid > 0], col[paid > 0], paid[paid > 0]
    level = (u[row, col, None] >= cuts[which[row]]).sum(axis=1)
    change = levels[which[row], level] - levels[which[row], 1]
    amount = (base[rows[row]] * paid * change).astype(np.float32)
    return ("points", leaf[rows[row]], col, amount)


def _quantile_tables(pools: tuple[np.ndarray, ...], levels: int) -> np.ndarray | None:
    """pools x levels: each pool's mid quantiles, scaled to the pool's mean (one gather draws)."""
    if not pools:
        return None
    at = (np.arange(levels) + 0.5) / levels
    rows = []
    for values in pools:
        if len(values) == 0:
            rows.append(np.zeros(levels))
            continue
        table = np.quantile(values, at)
        mean = table.mean()
        rows.append(table * (float(np.mean(values)) / mean) if mean > 0 else table)
    return np.array(rows, dtype=np.float32)


def _ratio_steps(pools: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """Each pool of bill ratios as a step function of a 16-bit uniform: (base, cuts, jumps).

    Most bills do not move, a few jump: the pool's most common value takes its share of the
    uniform's range, the other values are split into RATIO_BINS equal-probability bins above
    it, each paid at its bin's mean (so the mean is exact). Drawing a ratio is then a few
    comparisons: base + sum_j jump_j [u >= cut_j].
    """
    if not pools:
        return None
    n_levels = RATIO_BINS + 2  # below the mode, the mode, the bins above it
    cuts = np.full((len(pools), n_levels - 1), SCALE - 1, dtype=np.uint16)
    jumps = np.zeros((len(pools), n_levels), dtype=np.float32)
    for i, values in enumerate(pools):
        values = np.sort(np.asarray(values, float))
        if len(values) == 0:
            jumps[i, 0] = 1.0
            continue
        distinct, counts = np.unique(values, return_counts=True)
        mode = distinct[np.argmax(counts)]
        low, high = values[values < mode], values[values > mode]
        low_mean = low.mean() if len(low) else mode
        # below the mode, the mode, then bins of the values above it
        bins = np.array_split(high, RATIO_BINS) if len(high) else []
        masses = [len(low), int((values == mode).sum()), *(len(b) for b in bins)]
        levels = [low_mean, mode, *(b.mean() if len(b) else mode for b in bins)]
        masses += [0] * (n_levels - len(masses))
        levels += [levels[-1]] * (n_levels - len(levels))
        # u below the first edge: the low level; past each later edge, the next level
        jumps[i, 0] = levels[0]
        jumps[i, 1:] = np.diff(levels)
        cuts[i] = _threshold16(np.cumsum(masses)[:-1] / len(values))
    return cuts, jumps


def _apply_ratios(
    paid: np.ndarray,
    pool: np.ndarray,
    steps: tuple[np.ndarray, np.ndarray] | None,
    bits: np.random.PCG64,
) -> None:
    """Multiply the rows whose bill may still change by a ratio drawn from their pool.

    Every entry first takes its pool's most common ratio; the few whose uniform falls outside
    the mode's share are then corrected one by one (they are a few percent).
    """
    if steps is None:
        return
    moving = np.flatnonzero(pool >= 0)
    if len(moving) == 0:
        return
    cuts, jumps = steps
    which = pool[moving]
    levels = np.cumsum(jumps, axis=1)  # pools x levels: low, mode, bins above
    u = _uniform16(bits, len(moving), paid.shape[1])
    block = paid[moving]
    block *= levels[which, 1, None]
    other = (u < cuts[which, 0, None]) | (u >= cuts[which, 1, None])
    row, col = np.nonzero(other)
    if len(row):
        level = (u[row, col, None] >= cuts[which[row]]).sum(axis=1)
        mode = levels[which[row], 1]
        block[row, col] *= levels[which[row], level] / np.where(mode != 0, mode, 1)
    paid[moving] = block


AMOUNT_LEVELS = 256  # quantiles kept of each pool of new-deal amounts
MAX_NEW_PER_DRAW = 64  # a leaf's count of new deals is exact up to this, per draw
NEW_CHUNK = 4_000_000  # new deals drawn at a time


def _new_tasks(
    inputs: SimulationInputs, grid: _Grid, seed: int, chunk_rows: int
) -> list[Callable[[], list[Update]]]:
    """Poisson counts per leaf and draw (inverse CDF on 16-bit uniforms, the rate scaled by the
    draw's new-deal factor), then amounts from the leaf's pool, summed per leaf and draw; leaves
    are taken in groups of about NEW_CHUNK expected deals."""
    tables = _quantile_tables(inputs.pools, AMOUNT_LEVELS)
    live = np.flatnonzero(
        (inputs.new_rate > 0)
        & np.isin(inputs.new_pool, [i for i, p in enumerate(inputs.pools) if len(p)])
    )
    if tables is None or len(live) == 0:
        return []
    flat = tables.ravel()
    expected = inputs.new_rate[live] * grid.padded
    budget = max(NEW_CHUNK, int(expected.max() * 4))
    starts = np.searchsorted(np.cumsum(expected), np.arange(0, expected.sum(), budget))
    bounds = [*np.unique(starts), len(live)]

    def task(chunk: int, leaves: np.ndarray) -> list[Update]:
        bits = _stream(seed, _STREAM_NEW, 2 + chunk)
        counts = _poisson_counts(bits, inputs.new_rate[leaves], grid)
        per_leaf = counts.sum(axis=1, dtype=np.int64)
        n = int(per_leaf.sum())
        if n == 0:
            return []
        index = _uniform16(bits, 1, n)[0] >> (16 - int(math.log2(AMOUNT_LEVELS)))
        pool = np.repeat(inputs.new_pool[leaves].astype(np.int64), per_leaf)
        amounts = flat[pool * AMOUNT_LEVELS + index]
        cells = np.flatnonzero(counts.ravel())
        first = np.concatenate([[0], np.cumsum(counts.ravel()[cells], dtype=np.int64)[:-1]])
        sums = np.zeros(counts.size, dtype=np.float32)
        sums[cells] = np.add.reduceat(amounts, first)
        values = sums.reshape(len(leaves), grid.padded)
        return [("rows", leaves, grid.by_group(grid.group_new, inputs, leaves, values))]

    return [partial(task, c, live[lo:hi]) for c, (lo, hi) in enumerate(itertools.pairwise(bounds))]


def _poisson_counts(bits: np.random.PCG64, rate: np.ndarray, grid: _Grid) -> np.ndarray:
    """leaves x draws Poisson counts with mean rate x the draw's new-deal factor."""
    lam = rate[:, None] * grid.new_factor[None, :]  # leaves x rows
    top = _poisson_top(float(lam.max()))
    # P(N <= k) by the recurrence p_k = p_{k-1} lam / k
    term = np.exp(-lam)
    cdf = np.empty((*lam.shape, top))
    running = term.copy()
    cdf[:, :, 0] = running
    for k in range(1, top):
        term = term * lam / k
        running = running + term
        cdf[:, :, k] = running
    thresholds = _threshold16(np.minimum(cdf, 1.0))  # leaves x rows x top
    u = _uniform16(bits, len(rate), grid.padded).reshape(len(rate), grid.rows, grid.cols)
    counts = np.zeros(u.shape, dtype=np.uint8)
    for k in range(top):
        counts += u >= thresholds[:, :, k, None]
    return counts.reshape(len(rate), grid.padded)


def _poisson_top(lam: float) -> int:
    """Counts are drawn exactly up to this: P(N >= top) < 1 / 65,536 (at most MAX_NEW)."""
    term = total = math.exp(-lam)
    k = 0
    while total < 1 - 1 / SCALE and k < MAX_NEW_PER_DRAW:
        k += 1
        term *= lam / k
        total += term
    return max(1, k + 1)
