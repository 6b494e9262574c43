"""The draws of each kind of item, chunk by chunk: open deals, renewal chains, new deals."""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from forecast.revenue.sampling import (
    SCALE,
    STREAM_DEALS,
    STREAM_NEW,
    STREAM_RENEWALS,
    apply_ratios,
    gamma_quantiles,
    group_factors,
    lognormal_quantiles,
    quantile_tables,
    ratio_steps,
    stream,
    threshold16,
    uniform16,
)

if TYPE_CHECKING:  # the simulation imports its draws
    from forecast.revenue.simulation import SimulationInputs


@dataclass(frozen=True)
class Grid:
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
    def of(cls, draws: int, inputs: SimulationInputs, seed: int) -> Grid:
        cols = math.isqrt(draws - 1) + 1
        rows = -(-draws // cols)
        order = np.random.Generator(stream(seed, STREAM_NEW, 1)).permutation(rows)
        padded = rows * cols
        groups = 0 if inputs.leaf_group is None else int(inputs.leaf_group.max(initial=-1)) + 1
        return cls(
            draws=draws,
            padded=padded,
            rows=rows,
            cols=cols,
            deal_factor=lognormal_quantiles(inputs.deal_shock_sd, rows),
            churn_factor=lognormal_quantiles(inputs.churn_shock_sd, cols),
            new_factor=gamma_quantiles(inputs.new_shock_sd, rows)[order],
            group_deal=group_factors(inputs.group_deal_sd, groups, padded, seed, kind=0),
            group_new=group_factors(inputs.group_new_sd, groups, padded, seed, kind=1),
        )

    def by_group(self, factors: np.ndarray | None, inputs: SimulationInputs, leaves, values):
        """`values` (leaves x draws) moved by the factor of each leaf's group in each draw."""
        if factors is not None and inputs.leaf_group is not None:
            values *= factors[inputs.leaf_group[leaves]]
        return values


Update = tuple  # ("rows", leaves, values) or ("points", leaves, columns, amounts)


def run_tasks(tasks: list[Callable[[], list[Update]]], totals: np.ndarray, workers: int) -> None:
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


def deal_tasks(
    inputs: SimulationInputs, grid: Grid, seed: int, chunk_rows: int
) -> list[Callable[[], list[Update]]]:
    def task(chunk: int, rows: slice) -> list[Update]:
        prob = inputs.deal_prob[rows]
        n = len(prob)
        # won inside the window in a draw of deal stratum r: u < P x factor[r]
        threshold = threshold16(np.minimum(prob[:, None] * grid.deal_factor[None, :], 1.0))
        u = uniform16(stream(seed, STREAM_DEALS, chunk), n, grid.padded)
        won = np.empty((n, grid.rows, grid.cols), dtype=np.float32)
        np.less(u.reshape(won.shape), threshold[:, :, None], out=won, casting="unsafe")
        kind, leaves, values = _rows(
            inputs.deal_leaf[rows], inputs.deal_amount[rows], won.reshape(n, -1)
        )
        return [(kind, leaves, grid.by_group(grid.group_deal, inputs, leaves, values))]

    starts = range(0, len(inputs.deal_leaf), chunk_rows)
    return [partial(task, c, slice(s, s + chunk_rows)) for c, s in enumerate(starts)]


def chain_tasks(
    inputs: SimulationInputs, grid: Grid, seed: int, chunk_rows: int
) -> list[Callable[[], list[Update]]]:
    if inputs.chain_prob.ndim != 2 or inputs.chain_prob.shape[1] == 0:
        return []
    pool = inputs.chain_pool
    if pool is None or not inputs.ratio_pools:
        pool = np.full(len(inputs.chain_leaf), -1)
    steps = ratio_steps(inputs.ratio_pools)
    # chains whose bill may still change first, so that chunks are of one kind
    order = np.argsort(pool < 0, kind="stable")

    def task(chunk: int, rows: np.ndarray) -> list[Update]:
        prob, value = inputs.chain_prob[rows], inputs.chain_value[rows]
        n = len(rows)
        survive = _survival(prob, grid.churn_factor)
        bits = stream(seed, STREAM_RENEWALS, chunk)
        u = uniform16(bits, n, grid.padded).reshape(n, grid.rows, grid.cols)
        paying = np.flatnonzero(value.any(axis=0))
        leaf = inputs.chain_leaf[rows]
        moving = (pool[rows] >= 0) & (steps is not None)
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
            assert steps is not None  # chains move only where there are ratio pools
            levels = np.cumsum(steps[1], axis=1)
            mode = np.where(moving, levels[np.maximum(pool[rows], 0), 1], 1.0)
            return [
                _rows(leaf, base * mode, counts),
                _ratio_corrections(
                    leaf, base, counts, pool=pool[rows], moving=moving, steps=steps, bits=bits
                ),
            ]
        passed = np.empty(u.shape, dtype=np.float32)
        paid = np.zeros(u.shape, dtype=np.float32)
        for k in paying:
            np.less(u, survive[:, k, None, :], out=passed, casting="unsafe")
            passed *= value[:, k].astype(np.float32)[:, None, None]
            paid += passed
        totals = paid.reshape(n, grid.padded)
        apply_ratios(totals, np.where(moving, pool[rows], -1), steps, bits)
        return [_rows(leaf, np.ones(n), totals)]

    starts = range(0, len(order), chunk_rows)
    return [partial(task, c, order[s : s + chunk_rows]) for c, s in enumerate(starts)]


def _survival(prob: np.ndarray, churn_factor: np.ndarray) -> np.ndarray:
    """chains x steps x churn strata: thresholds of P(passing every decision up to k)."""
    keep = np.ones((len(prob), len(churn_factor)))
    out = np.empty((len(prob), prob.shape[1], len(churn_factor)), dtype=np.uint16)
    for k in range(prob.shape[1]):
        keep *= 1 - np.minimum((1 - prob[:, k, None]) * churn_factor[None, :], 1.0)
        out[:, k, :] = threshold16(keep)
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
    u = uniform16(bits, len(rows), count.shape[1])
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


AMOUNT_LEVELS = 256  # quantiles kept of each pool of new-deal amounts
MAX_NEW_PER_DRAW = 64  # a leaf's count of new deals is exact up to this, per draw
NEW_CHUNK = 4_000_000  # new deals drawn at a time


def new_tasks(
    inputs: SimulationInputs, grid: Grid, seed: int, chunk_rows: int
) -> list[Callable[[], list[Update]]]:
    """Poisson counts per leaf and draw (inverse CDF on 16-bit uniforms, the rate scaled by the
    draw's new-deal factor), then amounts from the leaf's pool, summed per leaf and draw; leaves
    are taken in groups of about NEW_CHUNK expected deals."""
    tables = quantile_tables(inputs.pools, AMOUNT_LEVELS)
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
        bits = stream(seed, STREAM_NEW, 2 + chunk)
        counts = _poisson_counts(bits, inputs.new_rate[leaves], grid)
        per_leaf = counts.sum(axis=1, dtype=np.int64)
        n = int(per_leaf.sum())
        if n == 0:
            return []
        index = uniform16(bits, 1, n)[0] >> (16 - int(math.log2(AMOUNT_LEVELS)))
        pool = np.repeat(inputs.new_pool[leaves].astype(np.int64), per_leaf)
        amounts = flat[pool * AMOUNT_LEVELS + index]
        cells = np.flatnonzero(counts.ravel())
        first = np.concatenate([[0], np.cumsum(counts.ravel()[cells], dtype=np.int64)[:-1]])
        sums = np.zeros(counts.size, dtype=np.float32)
        sums[cells] = np.add.reduceat(amounts, first)
        values = sums.reshape(len(leaves), grid.padded)
        return [("rows", leaves, grid.by_group(grid.group_new, inputs, leaves, values))]

    return [partial(task, c, live[lo:hi]) for c, (lo, hi) in enumerate(itertools.pairwise(bounds))]


def _poisson_counts(bits: np.random.PCG64, rate: np.ndarray, grid: Grid) -> np.ndarray:
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
    thresholds = threshold16(np.minimum(cdf, 1.0))  # leaves x rows x top
    u = uniform16(bits, len(rate), grid.padded).reshape(len(rate), grid.rows, grid.cols)
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
