"""Recommendations: the catalogue's actions a deal or account does not already do (judged against
the yardsticks of won deals or retained accounts), each re-scored by the model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forecast.explain.catalogue import (
    Action,
)
from forecast.explain.scorers import SMALL_BATCH, Scorer, is_missing

if TYPE_CHECKING:  # the vocabulary holds an action plan
    from forecast.explain.wording import Vocabulary


def yardsticks_of(
    typical: pd.DataFrame | None, stages: np.ndarray | None, rows: int, names: list[str]
) -> np.ndarray:
    """What won deals show, per row and feature: the row's stage if known, else overall."""
    if typical is None:
        return np.full((rows, len(names)), np.nan)
    table, by_stage, overall = _yardstick_table(typical, tuple(names))
    keys = stages if stages is not None else np.full(rows, "*")
    index = np.array([by_stage.get(k, overall) if isinstance(k, str) else overall for k in keys])
    return table[index.astype(int)] if len(keys) else table[:0]


_YARDSTICKS: dict[tuple[int, tuple[str, ...]], tuple[pd.DataFrame, tuple]] = {}


def _yardstick_table(typical: pd.DataFrame, names: tuple[str, ...]) -> tuple:
    """`typical` as a matrix in `names` order with its row per stage: made once per table."""
    key = (id(typical), names)
    cached = _YARDSTICKS.get(key)
    if cached is not None and cached[0] is typical:  # the same object, not a recycled id
        return cached[1]
    table = typical.reindex(columns=list(names)).to_numpy(dtype=float)
    stages = {str(s): i for i, s in enumerate(typical.index)}
    made = (table, stages, stages["*"])
    if len(_YARDSTICKS) > 16:  # a few champions' tables at most; drop older ones
        _YARDSTICKS.clear()
    _YARDSTICKS[key] = (typical, made)
    return made


@dataclass(frozen=True)
class ActionPlan:
    """Every action's changes as arrays, so all actions apply to a matrix in a few numpy calls
    (one `Change.apply` per change costs more than scoring the changed rows)."""

    count: int
    action: np.ndarray  # per change: the action's position
    feature: np.ndarray  # per change: the feature's column
    set: np.ndarray  # per change: the value set, NaN when none is
    add: np.ndarray
    floor: np.ndarray
    ceiling: np.ndarray

    @classmethod
    def of(cls, actions: Sequence[Action], position: Mapping[str, int]) -> ActionPlan:
        changes = [
            (a, position[f], c) for a, act in enumerate(actions) for f, c in act.changes.items()
        ]

        def column(pick, default: float) -> np.ndarray:
            return np.array([default if pick(c) is None else pick(c) for *_, c in changes], float)

        return cls(
            count=len(actions),
            action=np.array([a for a, _, _ in changes], dtype=int),
            feature=np.array([j for _, j, _ in changes], dtype=int),
            set=column(lambda c: c.set, np.nan),
            add=column(lambda c: c.add, 0.0),
            floor=column(lambda c: c.floor, -np.inf),
            ceiling=column(lambda c: c.ceiling, np.inf),
        )

    def applied(self, coded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The coded rows after each action, action by action (count x rows, features): what
        `Change.apply` gives, set, then add, then clip (a missing value stays missing); and
        whether the action changed anything in the row (count x rows)."""
        stacked = np.repeat(coded[None], self.count, axis=0)
        was = stacked[self.action, :, self.feature]  # changes x rows
        now = np.where(np.isnan(self.set)[:, None], was, self.set[:, None]) + self.add[:, None]
        now = np.minimum(np.maximum(now, self.floor[:, None]), self.ceiling[:, None])
        stacked[self.action, :, self.feature] = now
        differs = (now != was) & ~(np.isnan(now) & np.isnan(was))
        moved = np.zeros((self.count, len(coded)), dtype=bool)
        np.logical_or.at(moved, self.action, differs)
        return stacked.reshape(-1, coded.shape[1]), moved


def missing_matrix(values: np.ndarray) -> np.ndarray:
    """Where a feature value is missing (None or NaN), as a boolean matrix."""
    if len(values) <= SMALL_BATCH:  # a frame costs more than the check for a few rows
        return np.array([[is_missing(v) for v in row] for row in values.tolist()], dtype=bool)
    return pd.isna(pd.DataFrame(values)).to_numpy(dtype=bool)


def already_done(values: np.ndarray, yardsticks: np.ndarray, vocabulary: Vocabulary) -> np.ndarray:
    """rows x actions: the action's evidence already meets the yardstick (won deals at the
    row's stage, or accounts that renewed) in the direction that helps (a deal touched
    yesterday needs no re-engaging, a deal with two demos where won deals had one needs no
    demo, an account its rep saw last week needs no check-in)."""
    evidence = np.asarray(vocabulary.evidence, dtype=int)
    helps = vocabulary.helps[evidence]
    # evidence features are numbers; None becomes NaN
    value = np.array(values[:, evidence].tolist(), dtype=float).reshape(len(values), len(evidence))
    typical = yardsticks[:, evidence]
    with np.errstate(invalid="ignore"):
        done = np.where(helps > 0, value >= typical, value <= typical)
    return done & (helps != 0)  # NaN on either side compares False: not known to be done


def action_probabilities(
    scorer: Scorer,
    coded: np.ndarray,
    probability: np.ndarray,
    plan: ActionPlan,
    threads: int,
    done: np.ndarray,
) -> np.ndarray:
    """Probability after each action (columns), for all rows at once; NaN where the row
    already does it (`done`, rows x actions: no need to score it), and the row's own
    `probability` where the action changes none of its values (at its floor or ceiling).

    One model call for every action together: for a single deal a call's fixed cost, not the
    trees, is most of the time, and the service scores one deal per request.
    """
    if not plan.count:
        return np.empty((len(coded), 0))
    changed, moved = plan.applied(coded)  # action-major: action a, row i at a x rows + i
    after = np.where(done.T.ravel(), np.nan, np.tile(probability, plan.count))
    wanted = ~done.T.ravel() & moved.ravel()
    if wanted.any():
        after[wanted] = scorer.probability(changed[wanted], threads=threads)
    return after.reshape(plan.count, len(coded)).T
