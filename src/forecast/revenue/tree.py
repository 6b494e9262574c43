"""The org tree a forecast rolls up: rep -> team -> region -> company."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

LEVELS: tuple[str, ...] = ("rep", "team", "region", "company")
COMPANY = "company"

ROLL_COLUMNS = 1024  # draws summed up the tree at a time


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


def series_followed(series: pd.Series, mean: pd.Series, booked: pd.Series) -> pd.Series:
    """Where a node's series forecast can be leaned on: above what the node has booked, with
    something left to come in the simulation (a series at or below what is booked says nothing
    about what is still to come)."""
    return series.gt(booked) & mean.gt(booked)


def coherent_to_come(
    tree: OrgTree, to_come: np.ndarray, targets: Mapping[str, pd.Series]
) -> np.ndarray:
    """Per leaf, what is still to come once the nodes of `targets` hold their own figures
    (level -> what is still to come at that node, by node name) and every node is the sum of
    its children.

    Bottom-up, a node's own figure is its target, or else the sum of its children's; top-down,
    the highest such figure holds and each node shares it among its children in proportion to
    theirs. So a leaning team's figure holds over what its reps would add up to, and a leaning
    rep raises or lowers its team (which does not lean) by exactly its own change.

    `to_come`: per leaf, the simulation's mean still to come (>= 0)."""
    pairs = list(itertools.pairwise(LEVELS))
    links = [_children_of(tree, child, up) for child, up in pairs]
    own = [_with_targets(to_come.astype(np.float64), tree, LEVELS[0], targets)]
    for (_, up), parent_of in zip(pairs, links, strict=True):
        summed = np.bincount(parent_of, own[-1], minlength=len(tree.groups[up][1]))
        own.append(_with_targets(summed, tree, up, targets))
    final = own[-1]
    for values, parent_of in zip(reversed(own[:-1]), reversed(links), strict=True):
        shares = np.bincount(parent_of, values, minlength=len(final))[parent_of]
        final = np.divide(
            final[parent_of] * values, shares, out=np.zeros_like(values), where=shares > 0
        )
    return final


def _children_of(tree: OrgTree, child: str, up: str) -> np.ndarray:
    """For each node of `child`, the index of its parent among the nodes of `up`."""
    child_codes, child_names = tree.groups[child]
    up_codes, _ = tree.groups[up]
    parent = np.zeros(len(child_names), dtype=np.int64)
    parent[child_codes] = up_codes
    return parent


def _with_targets(
    values: np.ndarray, tree: OrgTree, level: str, targets: Mapping[str, pd.Series]
) -> np.ndarray:
    own = targets.get(level)
    if own is None or own.empty:
        return values
    names = tree.groups[level][1].astype(str)
    fixed = own.reindex(names).to_numpy(float)
    return np.where(np.isnan(fixed), values, fixed)
