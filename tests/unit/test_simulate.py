"""The Monte Carlo engine: exact moments, Bernoulli frequencies, coherence, common randomness."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from forecast.revenue import LEVELS, OrgTree, SimulationInputs, moments, simulate


def _tree() -> OrgTree:
    reps = pd.DataFrame(
        {
            "rep_id": ["a1", "a2", "b1", "c1", "c2"],
            "name": ["A1", "A2", "B1", "C1", "C2"],
            "team": ["A", "A", "B", "C", "C"],
            "region": ["X", "X", "X", "Y", "Y"],
        }
    )
    return OrgTree.from_reps(reps)


def _inputs(n_deals: int = 300, seed: int = 0, **overrides) -> SimulationInputs:
    rng = np.random.default_rng(seed)
    n_leaves = 5
    chains = 40
    values = {
        "n_leaves": n_leaves,
        "closed": rng.uniform(0, 1000, n_leaves),
        "deal_leaf": rng.integers(0, n_leaves, n_deals),
        "deal_prob": rng.uniform(0, 1, n_deals),
        "deal_amount": rng.lognormal(8, 1, n_deals),
        "chain_leaf": rng.integers(0, n_leaves, chains),
        "chain_prob": rng.uniform(0.6, 1.0, (chains, 3)),
        "chain_value": np.where(
            rng.random((chains, 3)) < 0.5, rng.uniform(100, 900, (chains, 3)), 0
        ),
        "new_rate": rng.uniform(0, 3, n_leaves),
        "new_pool": np.array([0, 0, 1, 1, 1]),
        "pools": (rng.uniform(100, 500, 50), rng.uniform(1000, 2000, 20)),
    }
    return SimulationInputs(**(values | overrides))


def test_simulated_mean_and_variance_match_the_exact_moments():
    inputs = _inputs()
    result = simulate(inputs, draws=40_000, seed=3)
    exact = moments(inputs)
    total = result.leaf_draws.sum(axis=0)
    mean = inputs.closed.sum() + sum(m.sum() for m in exact.mean.values())
    variance = sum(v.sum() for v in exact.variance.values())
    assert total.mean() == pytest.approx(mean, rel=0.01)
    assert total.var() == pytest.approx(variance, rel=0.05)
    for part in ("open", "recurring", "new"):
        assert result.part_means[part].sum() == pytest.approx(exact.mean[part].sum(), rel=0.02)


def test_bernoulli_frequency_is_the_probability():
    p = np.array([0.0, 1e-4, 0.2, 0.5, 0.93, 1.0])
    inputs = _inputs(
        n_deals=len(p),
        deal_leaf=np.zeros(len(p), dtype=int),
        deal_prob=p,
        deal_amount=10.0 ** np.arange(len(p)),  # each deal on its own decimal digit
        chain_leaf=np.zeros(0, dtype=int),
        chain_prob=np.ones((0, 1)),
        chain_value=np.zeros((0, 1)),
        new_rate=np.zeros(5),
        closed=np.zeros(5),
    )
    draws = simulate(inputs, draws=200_000, seed=1).leaf_draws[0]
    digits = (draws[None, :] // 10.0 ** np.arange(len(p))[:, None]) % 10
    freq = digits.mean(axis=1)
    assert freq[0] == 0 and freq[-1] >= 1 - 1e-4  # exact to 1/65,536
    assert np.allclose(freq, p, atol=0.004)


def test_same_seed_same_draws_and_a_removed_deal_leaves_the_others_alone():
    inputs = _inputs()
    base = simulate(inputs, draws=2_000, seed=7).leaf_draws
    again = simulate(inputs, draws=2_000, seed=7).leaf_draws
    np.testing.assert_array_equal(base, again)
    prob = inputs.deal_prob.copy()
    prob[17] = 0.0
    removed = simulate(
        SimulationInputs(**{**inputs.__dict__, "deal_prob": prob}), draws=2_000, seed=7
    ).leaf_draws
    diff = base.astype(float) - removed
    leaf = inputs.deal_leaf[17]
    others = np.delete(np.arange(inputs.n_leaves), leaf)
    np.testing.assert_array_equal(diff[others], 0.0)
    # what changed is exactly that deal's contribution: its amount or nothing (leaf totals are
    # float32, so up to their rounding)
    amount = inputs.deal_amount[17]
    tolerance = 1e-6 * float(np.abs(base[leaf]).max())
    assert np.all((np.abs(diff[leaf]) <= tolerance) | (np.abs(diff[leaf] - amount) <= tolerance))


def test_parents_are_the_sum_of_their_children():
    tree = _tree()
    draws = simulate(_inputs(), draws=1_000, seed=0).leaf_draws
    rolled = {level: tree.roll_up(draws, level) for level in LEVELS}
    for child, parent in itertools.pairwise(LEVELS):
        parent_of = tree.parent(child)
        names = tree.groups[child][1]
        parent_names = tree.groups[parent][1]
        for i, p in enumerate(parent_names):
            children = [j for j, n in enumerate(names) if parent_of[n] == p]
            np.testing.assert_allclose(
                np.asarray(rolled[child][children], float).sum(axis=0),
                rolled[parent][i],
                rtol=1e-12,
            )
    np.testing.assert_allclose(rolled["company"][0], draws.astype(float).sum(axis=0), rtol=1e-12)


def test_chunking_keeps_memory_bounded_and_results_exact():
    import tracemalloc

    inputs = _inputs(n_deals=20_000)
    draws = 2_000
    peaks = {}
    for chunk in (256, 20_000):
        tracemalloc.start()  # numpy reports its allocations to tracemalloc
        simulate(inputs, draws=draws, seed=2, chunk_rows=chunk, workers=2)
        peaks[chunk] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    every_draw = len(inputs.deal_prob) * draws * 8  # all deals x all draws in float64: 305 MiB
    assert peaks[256] < every_draw / 20 and peaks[256] < peaks[20_000] / 10, peaks
    # exact: the threads add chunks in order (the same numbers on one worker or two) ...
    small = simulate(inputs, draws=draws, seed=2, chunk_rows=256, workers=2)
    alone = simulate(inputs, draws=draws, seed=2, chunk_rows=256, workers=1)
    np.testing.assert_array_equal(small.leaf_draws, alone.leaf_draws)
    # ... and the chunked draws have the exact moments' mean, within four standard errors
    exact = moments(inputs)
    total = small.leaf_draws.astype(float).sum(axis=0)
    mean = inputs.closed.sum() + sum(m.sum() for m in exact.mean.values())
    sd = np.sqrt(sum(v.sum() for v in exact.variance.values()) / draws)
    assert abs(total.mean() - mean) < 4 * sd


def _only(part: str) -> SimulationInputs:
    """Inputs where only one part (deals, renewal chains or new deals) brings anything."""
    rng = np.random.default_rng(5)
    base = _inputs(n_deals=3_000).__dict__ | {"closed": np.zeros(5)}
    none = {
        "deal": {"deal_prob": np.zeros(3_000)},
        "churn": {"chain_prob": np.ones((0, 1)), "chain_value": np.zeros((0, 1)),
                  "chain_leaf": np.zeros(0, dtype=int)},
        "new": {"new_rate": np.zeros(5)},
    }  # fmt: skip
    keep = {
        "deal": {"deal_prob": rng.uniform(0, 0.6, 3_000)},
        "churn": {
            "chain_leaf": rng.integers(0, 5, 2_000),
            "chain_prob": rng.uniform(0.7, 0.95, (2_000, 2)),
            "chain_value": rng.uniform(100, 900, (2_000, 2)),
        },
        "new": {"new_rate": rng.uniform(5, 20, 5)},
    }
    values = dict(base)
    for name, change in none.items():
        values |= keep[name] if name == part else change
    return SimulationInputs(**values)


@pytest.mark.parametrize("part", ["deal", "churn", "new"])
def test_a_shared_factor_widens_the_total_and_keeps_its_mean(part):
    inputs = _only(part)
    alone = simulate(inputs, draws=20_000, seed=4).leaf_draws.astype(float).sum(axis=0)
    shared = SimulationInputs(**{**inputs.__dict__, f"{part}_shock_sd": 0.2})
    together = simulate(shared, draws=20_000, seed=4).leaf_draws.astype(float).sum(axis=0)
    assert together.std() > alone.std() * 1.2
    assert together.mean() == pytest.approx(alone.mean(), rel=0.01)


@pytest.mark.parametrize("part", ["deal", "new"])
def test_a_teams_own_quarter_moves_its_reps_together_and_teams_apart(part):
    inputs = _only(part)
    team = np.array([0, 0, 1, 2, 2])  # _tree's teams A, A, B, C, C
    alone = simulate(SimulationInputs(**{**inputs.__dict__, "leaf_group": team}), draws=20_000)
    grouped = SimulationInputs(**{**inputs.__dict__, "leaf_group": team, f"group_{part}_sd": 0.3})
    together = simulate(grouped, draws=20_000).leaf_draws.astype(float)
    apart = alone.leaf_draws.astype(float)
    # the team's reps move together: their draws correlate, the team total widens
    assert np.corrcoef(together[0], together[1])[0, 1] > 0.15
    assert abs(np.corrcoef(apart[0], apart[1])[0, 1]) < 0.05
    assert together[:2].sum(axis=0).std() > 1.2 * apart[:2].sum(axis=0).std()
    # teams stay independent of each other, and every mean stays where it was
    assert abs(np.corrcoef(together[:2].sum(axis=0), together[3:].sum(axis=0))[0, 1]) < 0.05
    assert together.mean(axis=1) == pytest.approx(apart.mean(axis=1), rel=0.01)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("deal_prob", np.array([1.5]), "deal_prob must lie in"),
        ("deal_amount", np.array([1.0, 2.0]), "same length"),
        ("closed", np.zeros(2), "one value per leaf"),
    ],
)
def test_bad_inputs_are_refused(field, value, message):
    base = _inputs(n_deals=1).__dict__
    with pytest.raises(ValueError, match=message):
        SimulationInputs(**{**base, field: value})
