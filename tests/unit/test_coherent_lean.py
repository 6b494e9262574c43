"""Leaning nodes and the org tree: every node stays the sum of its children (`coherent_to_come`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecast.revenue import LEVELS, OrgTree
from forecast.revenue.tree import coherent_to_come


def _tree(n_regions: int = 2, teams: int = 2, reps: int = 3) -> OrgTree:
    rows = [
        {"rep_id": f"R{r}{t}{i}", "team": f"T{r}{t}", "region": f"G{r}"}
        for r in range(n_regions)
        for t in range(teams)
        for i in range(reps)
    ]
    return OrgTree.from_reps(pd.DataFrame(rows))


def _by(tree: OrgTree, leaf: np.ndarray, level: str) -> pd.Series:
    return pd.Series(tree.roll_up(leaf, level), index=tree.groups[level][1].astype(str))


def test_a_leaning_rep_moves_its_team_region_and_company_by_its_own_change():
    tree = _tree()
    to_come = np.full(tree.n_leaves, 100.0)
    final = coherent_to_come(tree, to_come, {"rep": pd.Series({"R000": 160.0})})
    assert final[0] == 160.0
    np.testing.assert_array_equal(final[1:], 100.0)  # the other reps keep their own
    assert _by(tree, final, "team")["T00"] == 360.0
    assert _by(tree, final, "company")["company"] == 100.0 * tree.n_leaves + 60.0


def test_the_highest_leaning_node_holds_and_its_children_share_it_by_their_own():
    tree = _tree()
    to_come = np.arange(1.0, tree.n_leaves + 1)
    targets = {"team": pd.Series({"T00": 60.0}), "rep": pd.Series({"R000": 30.0})}
    final = coherent_to_come(tree, to_come, targets)
    teams = _by(tree, final, "team")
    assert teams["T00"] == pytest.approx(60.0)
    # the team's reps share 60 in proportion to 30 (its leaning rep), 2 and 3
    np.testing.assert_allclose(final[:3], np.array([30.0, 2.0, 3.0]) * 60.0 / 35.0)
    np.testing.assert_array_equal(final[3:], to_come[3:])  # no other team is touched


def test_a_leaning_company_scales_every_region_by_what_it_would_add_up_to():
    tree = _tree()
    to_come = np.full(tree.n_leaves, 10.0)
    targets = {"company": pd.Series({"company": 60.0}), "rep": pd.Series({"R000": 70.0})}
    final = coherent_to_come(tree, to_come, targets)
    assert final.sum() == pytest.approx(60.0)
    regions = _by(tree, final, "region")
    assert regions["G0"] / regions["G1"] == pytest.approx((70.0 + 50.0) / 60.0)


@pytest.mark.parametrize("seed", range(20))
def test_any_leaning_holds_the_top_leaning_nodes_and_leaves_the_rest_alone(seed):
    rng = np.random.default_rng(seed)
    tree = _tree(3, 3, 4)
    to_come = rng.gamma(1.0, 100.0, tree.n_leaves) * (rng.random(tree.n_leaves) > 0.2)
    targets = {}
    for level in LEVELS:
        # as `with_lean` does: a node with nothing left to come does not lean
        own = _by(tree, to_come, level)
        picked = own.index[(rng.random(len(own)) < 0.3) & (own > 0)]
        targets[level] = pd.Series(rng.gamma(1.0, 300.0, len(picked)), index=picked)
    final = coherent_to_come(tree, to_come, targets)
    assert np.isfinite(final).all() and (final >= 0).all()
    below_lean = np.zeros(tree.n_leaves, dtype=bool)
    for level, node in _top_leaning(tree, targets):
        assert _by(tree, final, level)[node] == pytest.approx(targets[level][node])
        below_lean |= _leaves_of(tree, level, node)
    # a rep with no leaning node at or above it keeps the simulation's figure
    np.testing.assert_allclose(final[~below_lean], to_come[~below_lean])


def _leaves_of(tree: OrgTree, level: str, node: str) -> np.ndarray:
    codes, names = tree.groups[level]
    return codes == list(names.astype(str)).index(node)


def _top_leaning(tree: OrgTree, targets: dict[str, pd.Series]) -> list[tuple[str, str]]:
    """Leaning nodes without a leaning node above them."""
    out = []
    for i, level in enumerate(LEVELS):
        for node in targets[level].index:
            leaves = _leaves_of(tree, level, node)
            above = [
                (a, n) for a in LEVELS[i + 1 :] for n in targets[a].index
                if (leaves & _leaves_of(tree, a, n)).any()
            ]  # fmt: skip
            if not above:
                out.append((level, node))
    return out
