"""How one draw is made: random streams, 16-bit Bernoulli trials, stratified factors, bill steps."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

SCALE = 65_536  # Bernoulli resolution: probabilities are exact to 1/65,536
RATIO_BINS = 3  # bins of the bill changes that are not the most common one
STREAM_DEALS, STREAM_RENEWALS, STREAM_NEW, STREAM_RATIOS, STREAM_GROUPS = 1, 2, 3, 4, 5


def group_factors(sd: float, groups: int, padded: int, seed: int, kind: int) -> np.ndarray | None:
    """groups x draws mean-1 lognormal factors (each group's exactly mean 1 over the draws, so
    a group's own quarter widens its forecast without moving its mean); None when sd is 0."""
    if sd <= 0 or groups == 0:
        return None
    z = np.random.Generator(stream(seed, STREAM_GROUPS, kind)).standard_normal((groups, padded))
    values = np.exp(sd * z - sd**2 / 2)
    return (values / values.mean(axis=1, keepdims=True)).astype(np.float32)


def lognormal_quantiles(sd: float, n: int) -> np.ndarray:
    """n equal-probability strata of a mean-1 lognormal factor (their mid quantiles)."""
    if sd <= 0:
        return np.ones(n)
    z = np.array([NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)])
    values = np.exp(sd * z - sd**2 / 2)
    return values / values.mean()


def gamma_quantiles(cv: float, n: int) -> np.ndarray:
    """n equal-probability strata of a mean-1 gamma factor with coefficient of variation cv."""
    if cv <= 0:
        return np.ones(n)
    from scipy.stats import gamma

    shape = 1 / cv**2
    values = gamma.ppf((np.arange(n) + 0.5) / n, shape, scale=1 / shape)
    return values / values.mean()


def stream(seed: int, kind: int, chunk: int) -> np.random.PCG64:
    return np.random.PCG64(np.random.SeedSequence([seed, kind, chunk]))


def uniform16(bits: np.random.PCG64, rows: int, draws: int) -> np.ndarray:
    """rows x draws uniform integers in [0, 65536), four from each 64-bit output."""
    words = -(-rows * draws // 4)
    return bits.random_raw(words).view(np.uint16)[: rows * draws].reshape(rows, draws)


def threshold16(prob: np.ndarray) -> np.ndarray:
    """Thresholds t with P(u < t) = prob for a 16-bit uniform u (1 becomes 65535/65536)."""
    return np.minimum(np.rint(prob * SCALE), SCALE - 1).astype(np.uint16)


def quantile_tables(pools: tuple[np.ndarray, ...], levels: int) -> np.ndarray | None:
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


def ratio_steps(pools: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray] | None:
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
        cuts[i] = threshold16(np.cumsum(masses)[:-1] / len(values))
    return cuts, jumps


def apply_ratios(
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
    u = uniform16(bits, len(moving), paid.shape[1])
    block = paid[moving]
    block *= levels[which, 1, None]
    other = (u < cuts[which, 0, None]) | (u >= cuts[which, 1, None])
    row, col = np.nonzero(other)
    if len(row):
        level = (u[row, col, None] >= cuts[which[row]]).sum(axis=1)
        mode = levels[which[row], 1]
        block[row, col] *= levels[which[row], level] / np.where(mode != 0, mode, 1)
    paid[moving] = block
