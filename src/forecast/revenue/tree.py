"""The org tree a forecast rolls up: rep -> team -> region -> company."""

from __future__ import annotations

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
