"""Scoring deals as of a moment: probability, grade, trend since the last snapshot, and why.

The same path serves the CLI, the service and batch jobs: features at `as_of` (point in time),
the calibrated champion through its fast scorer, explanations from `forecast.explain`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecast.explain import Explanation, Scorer, explain, scorer_for, typical_of_won
from forecast.features import (
    DEAL_FEATURES,
    deal_features,
    deal_snapshots,
    snapshot_dates,
    training_frame,
)
from forecast.settings import get_settings
from forecast.tables import CrmTables

TREND_DAYS = 7  # the previous weekly snapshot
YARDSTICK_DAYS = 365  # won deals of the last year set the "typical" in reasons
GRADES = ("A", "B", "C", "D")


@dataclass(frozen=True)
class DealScore:
    deal_id: str
    as_of: pd.Timestamp
    probability: float
    grade: str
    previous_probability: float | None  # a week earlier, if the deal was open then
    trend_points: float | None
    explanation: Explanation


def grade(probability: np.ndarray | float, cutoffs: Sequence[float] | None = None) -> np.ndarray:
    """A to D from the win probability; cut-offs (A, B, C lower bounds) from settings."""
    a, b, c = cutoffs or get_settings().grade_cutoffs
    p = np.atleast_1d(np.asarray(probability, dtype=float))
    return np.select([p >= a, p >= b, p >= c], ["A", "B", "C"], default="D")


def open_deal_ids(tables: CrmTables, as_of: pd.Timestamp) -> pd.Series:
    """Deals open at `as_of`, judged from their history."""
    return deal_snapshots(tables, [as_of])["deal_id"]


def score_deals(
    tables: CrmTables,
    scorer: Scorer,
    *,
    as_of: pd.Timestamp | None = None,
    deal_ids: Sequence[str] | None = None,
    typical: pd.DataFrame | None = None,
) -> list[DealScore]:
    """Score deals open at `as_of` (default: the export's as-of), with their trend and reasons.

    Raises:
        KeyError: a requested deal is unknown, or not open at `as_of`.
    """
    as_of = pd.Timestamp(as_of) if as_of is not None else tables.as_of
    open_now = open_deal_ids(tables, as_of)
    wanted = open_now if deal_ids is None else pd.Series(list(deal_ids), dtype="string")
    missing = sorted(set(wanted) - set(open_now))
    if missing:
        raise KeyError(f"not open at {as_of:%Y-%m-%d %H:%M}: {', '.join(missing[:5])}")
    now = deal_features(tables, pd.DataFrame({"deal_id": wanted.to_numpy(), "as_of": as_of}))
    explained = explain(scorer, now, typical=typical)
    previous = _previous(tables, scorer, wanted, as_of - pd.Timedelta(days=TREND_DAYS))
    probabilities = np.array([e.probability for e in explained])
    grades = grade(probabilities)
    scores = []
    for i, deal_id in enumerate(now["deal_id"]):
        before = previous.get(deal_id)
        scores.append(
            DealScore(
                deal_id=str(deal_id),
                as_of=as_of,
                probability=float(probabilities[i]),
                grade=str(grades[i]),
                previous_probability=before,
                trend_points=None
                if before is None
                else round(100 * (probabilities[i] - before), 2),
                explanation=explained[i],
            )
        )
    return scores


def _previous(
    tables: CrmTables, scorer: Scorer, deal_ids: pd.Series, as_of: pd.Timestamp
) -> dict[str, float]:
    """Probabilities a week earlier for the deals that were open then."""
    earlier = set(open_deal_ids(tables, as_of))
    ids = [d for d in deal_ids if d in earlier]
    if not ids:
        return {}
    frame = deal_features(tables, pd.DataFrame({"deal_id": ids, "as_of": as_of}))
    return dict(zip(ids, scorer.probability(scorer.coded(frame)).tolist(), strict=True))


@dataclass(frozen=True)
class DealExplainer:
    """The serving champion, ready to explain: its scorer and the yardsticks of won deals."""

    scorer: Scorer
    typical: pd.DataFrame
    model_label: str


def won_deal_yardsticks(tables: CrmTables, *, as_of: pd.Timestamp) -> pd.DataFrame:
    """What won deals showed at each stage over the year before `as_of` (closed by then)."""
    dates = snapshot_dates(as_of - pd.Timedelta(days=YARDSTICK_DAYS), as_of)
    frame = training_frame(tables, dates)
    closed_at = tables.deals.set_index("deal_id")["closed_at"]
    known = closed_at.reindex(frame["deal_id"].to_numpy()).to_numpy() <= as_of.to_datetime64()
    return typical_of_won(frame[known], DEAL_FEATURES)


def load_deal_explainer(tables: CrmTables, *, as_of: pd.Timestamp) -> DealExplainer:
    """The deal-win champion from the registry, with yardsticks from the stored CRM.

    Raises:
        forecast.registry.RegistryError: no champion yet.
    """
    from forecast.registry import champion_version, load_champion
    from forecast.train import MODEL_NAME

    model = load_champion(MODEL_NAME)
    label = f"{MODEL_NAME} v{champion_version(MODEL_NAME)} (champion)"
    return DealExplainer(
        scorer=scorer_for(model, DEAL_FEATURES),
        typical=won_deal_yardsticks(tables, as_of=as_of),
        model_label=label,
    )
