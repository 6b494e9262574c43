"""Explanations and recommendations for a calibrated tree model: exact, fast, in plain words.

- Reasons: LightGBM's own tree SHAP (`pred_contrib=True`), exact and additive in the model's raw
  (log-odds) output; grouped under the catalogue's stable reason codes and written with the
  evidence ("No touch in 23 days; won deals at this stage: 4 days").
- Recommendations: every catalogue action is applied to the row and re-scored with the
  calibrated model; only actions the model says would help are shown, ranked by their effect on
  the probability and on the expected revenue.

`FastScorer` scores without the scikit-learn call overhead (coder once, booster, calibration
map), so one deal's reasons and recommendations take a millisecond or two; a test checks it
equals the pipeline's own `predict_proba`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV

from forecast.catalogue import Catalogue, FeatureEntry, load_catalogue
from forecast.features import Feature
from forecast.model import MISSING_CATEGORY, base_pipeline

Direction = Literal["raises", "lowers"]
MIN_LIFT = 0.005  # half a point of probability: smaller effects are noise, not advice


@dataclass(frozen=True)
class Reason:
    """One feature's push on the score, in the words of the catalogue."""

    code: str  # the stable reason code (catalogue group)
    feature: str
    direction: Direction
    effect: float  # contribution to the raw (log-odds) score
    value: float | str | None
    typical: float | None  # what won deals at the same stage show (None if not numeric)
    text: str


@dataclass(frozen=True)
class Recommendation:
    """An action, its expected effect on the probability and on expected revenue."""

    action: str
    text: str
    features: tuple[str, ...]
    probability_before: float
    probability_after: float
    lift_points: float  # percentage points gained (deals) or churn risk removed (accounts)
    expected_revenue_change: float
    evidence: str


@dataclass(frozen=True)
class Explanation:
    probability: float
    raw_score: float
    reasons: list[Reason] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)
    reason_codes: dict[str, float] = field(default_factory=dict)


class FastScorer:
    """The calibrated model's probability and SHAP values, straight from the booster.

    Args:
        model: a fitted `CalibratedClassifierCV` around the tree pipeline, or the pipeline.
        features: the model's feature spec, in input order.
    """

    def __init__(self, model: BaseEstimator, features: Sequence[Feature]):
        self.features = tuple(features)
        pipeline = base_pipeline(model)
        self.coder = pipeline.steps[0][1]
        self.booster = pipeline.steps[-1][1].booster_
        self.calibrators = (
            [cc.calibrators[0] for cc in model.calibrated_classifiers_]
            if isinstance(model, CalibratedClassifierCV)
            else []
        )
        self.names = [f.name for f in self.features]
        self.maps_raw_scores = hasattr(pipeline, "decision_function")
        self.categories = {
            name: pd.Index(values) for name, values in self.coder.categories_.items()
        }

    def coded(self, frame: pd.DataFrame) -> np.ndarray:
        """The booster's input matrix for a feature frame: `CategoryCoder` without pandas."""
        columns = []
        for name in self.names:
            values = frame[name].to_numpy()
            index = self.categories.get(name)
            if index is None:
                columns.append(pd.to_numeric(values, errors="coerce").astype(float))
                continue
            text = np.where(pd.isna(values), MISSING_CATEGORY, values).astype(str)
            codes = index.get_indexer(text).astype(float)
            codes[codes < 0] = np.nan
            columns.append(codes)
        return np.column_stack(columns)

    def probability(self, coded: np.ndarray) -> np.ndarray:
        raw = self.booster.predict(coded, raw_score=True, num_threads=1)
        return self.calibrate(raw)

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        tree_probability = 1.0 / (1.0 + np.exp(-raw))
        if not self.calibrators:
            return tree_probability
        # the calibration map was fitted on what the pipeline answers first: its
        # decision_function (the raw score) where it has one, else the probability
        response = raw if self.maps_raw_scores else tree_probability
        mapped = np.mean([c.predict(response) for c in self.calibrators], axis=0)
        return np.clip(mapped, 0.0, 1.0)

    def contributions(self, coded: np.ndarray, *, threads: int = 1) -> np.ndarray:
        """Exact tree SHAP values: one column per feature, then the bias; rows sum to raw."""
        return self.booster.predict(coded, pred_contrib=True, num_threads=threads)


def typical_of_won(training: pd.DataFrame, features: Sequence[Feature]) -> pd.DataFrame:
    """Median of each numeric feature over won snapshots, per stage (and overall as `*`).

    What "won deals at this stage typically show": the yardstick for reasons and advice.
    """
    won = training[training["won"] == 1]
    numeric = [f.name for f in features if f.kind == "numeric"]
    per_stage = won.groupby("stage")[numeric].median()
    overall = won[numeric].median().to_frame("*").T
    return pd.concat([per_stage, overall])


def explain(
    scorer: FastScorer,
    frame: pd.DataFrame,
    *,
    typical: pd.DataFrame | None = None,
    amount: np.ndarray | None = None,
    model: Literal["deal", "account"] = "deal",
    top: int = 3,
    catalogue: Catalogue | None = None,
) -> list[Explanation]:
    """Reasons and recommendations for every row of a feature frame.

    Args:
        scorer: the model to explain.
        frame: feature rows (extra columns ignored).
        typical: `typical_of_won` of the training data (yardsticks in the text).
        amount: value at stake per row, to turn a lift into expected revenue (deal amount, or
            the account's yearly revenue); default the frame's `amount` column if any, else 0.
        model: which catalogue section applies.
        top: how many reasons each way.
    """
    catalogue = catalogue or load_catalogue()
    entries = catalogue.features(model)
    frame = frame.reset_index(drop=True)
    coded = scorer.coded(frame)
    # several threads pay off only for batches; a single request stays on one
    contributions = scorer.contributions(coded, threads=2 if len(frame) >= 1000 else 1)
    raw = contributions.sum(axis=1)
    probability = scorer.calibrate(raw)
    if amount is None:
        amount = frame["amount"].to_numpy(float) if "amount" in frame else np.zeros(len(frame))
    lifts = _action_lifts(scorer, coded, probability, catalogue, model)
    codes, membership = _group_matrix(scorer.names, entries)
    by_code = contributions[:, :-1] @ membership.T
    yardsticks = {} if typical is None else typical.to_dict("index")
    records = frame.to_dict("records")
    out = []
    for i, row in enumerate(records):
        stage = row.get("stage")
        yardstick = yardsticks.get(stage if stage in yardsticks else "*")
        out.append(
            Explanation(
                probability=float(probability[i]),
                raw_score=float(raw[i]),
                reasons=_reasons(scorer.names, contributions[i, :-1], row, entries, yardstick, top),
                recommendations=_recommendations(
                    lifts,
                    i,
                    probability[i],
                    float(amount[i]),
                    row,
                    catalogue,
                    model,
                    entries,
                    yardstick,
                ),
                reason_codes=dict(zip(codes, by_code[i].round(6).tolist(), strict=True)),
            )
        )
    return out


def global_importance(scorer: FastScorer, frame: pd.DataFrame) -> pd.Series:
    """Mean absolute SHAP value per feature over `frame`, largest first."""
    contributions = scorer.contributions(scorer.coded(frame), threads=2)
    values = np.abs(contributions[:, :-1]).mean(axis=0)
    return pd.Series(values, index=scorer.names).sort_values(ascending=False)


# --- internals -------------------------------------------------------------------------------


def _group_matrix(
    names: list[str], entries: dict[str, FeatureEntry]
) -> tuple[list[str], np.ndarray]:
    codes = sorted({entries[n].group for n in names})
    matrix = np.array([[entries[n].group == c for n in names] for c in codes], dtype=float)
    return codes, matrix


def _typical(yardstick: dict | None, name: str) -> float | None:
    if yardstick is None:
        return None
    value = yardstick.get(name)
    return None if value is None or np.isnan(value) else float(value)


def _show(value: object, unit: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "unknown"
    if isinstance(value, str):
        return value
    number = float(value)
    if unit == "share":
        return f"{number:.0%}"
    if unit == "currency":
        return f"{number:,.0f}"
    if unit == "":
        return "yes" if number == 1 else "no" if number == 0 else f"{number:g}"
    text = f"{number:.0f}" if abs(number) >= 10 or number == int(number) else f"{number:.1f}"
    return f"{text} {unit}"


def _reason_text(name: str, entry: FeatureEntry, value: object, typical: float | None) -> str:
    shown = _show(value, entry.unit)
    if name == "days_since_last_activity":
        text = f"No touch in {shown}"
    elif name == "days_since_rep_touch":
        text = f"The rep has not been in touch for {shown}"
    else:
        text = f"{entry.label[0].upper()}{entry.label[1:]}: {shown}"
    if typical is not None and not np.isnan(typical):
        text += f"; won deals at this stage: {_show(typical, entry.unit)}"
    return text


def _reasons(
    names: list[str],
    effects: np.ndarray,
    row: dict,
    entries: dict[str, FeatureEntry],
    yardstick: dict | None,
    top: int,
) -> list[Reason]:
    order = np.argsort(effects)
    chosen = [i for i in order[::-1][:top] if effects[i] > 0] + [
        i for i in order[:top] if effects[i] < 0
    ]
    reasons = []
    for i in chosen:
        name = names[i]
        entry = entries[name]
        value = row[name]
        value = None if value is None or (not isinstance(value, str) and pd.isna(value)) else value
        typical = _typical(yardstick, name)
        reasons.append(
            Reason(
                code=entry.group,
                feature=name,
                direction="raises" if effects[i] > 0 else "lowers",
                effect=float(effects[i]),
                value=value if isinstance(value, str) or value is None else float(value),
                typical=typical,
                text=_reason_text(name, entry, value, typical),
            )
        )
    return reasons


def _action_lifts(
    scorer: FastScorer,
    coded: np.ndarray,
    probability: np.ndarray,
    catalogue: Catalogue,
    model: str,
) -> dict[str, np.ndarray]:
    """Probability after each action, for all rows at once (one booster call per action)."""
    position = {n: j for j, n in enumerate(scorer.names)}
    after = {}
    for name, action in catalogue.actions[model].items():
        changed = coded.copy()
        for feature, change in action.changes.items():
            j = position[feature]
            changed[:, j] = change.apply(changed[:, j])
        after[name] = scorer.probability(changed)
    return after


def _recommendations(
    after: dict[str, np.ndarray],
    i: int,
    before: float,
    amount: float,
    row: dict,
    catalogue: Catalogue,
    model: str,
    entries: dict[str, FeatureEntry],
    yardstick: dict | None,
) -> list[Recommendation]:
    recs = []
    # a deal's action should raise its win probability; an account's should lower its churn risk
    sign = -1.0 if model == "account" else 1.0
    for name, action in catalogue.actions[model].items():
        lift = sign * float(after[name][i] - before)
        if lift < MIN_LIFT:
            continue
        evidence_entry = entries[action.evidence]
        typical = _typical(yardstick, action.evidence)
        recs.append(
            Recommendation(
                action=name,
                text=action.text,
                features=tuple(action.changes),
                probability_before=before,
                probability_after=float(after[name][i]),
                lift_points=round(100 * lift, 2),
                expected_revenue_change=round(lift * amount, 2),
                evidence=_reason_text(
                    action.evidence, evidence_entry, row[action.evidence], typical
                ),
            )
        )
    return sorted(recs, key=lambda r: -r.lift_points)
