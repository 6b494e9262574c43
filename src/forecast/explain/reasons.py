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

import gc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import pandas as pd

from forecast.explain.actions import (
    action_probabilities,
    already_done,
    missing_matrix,
    yardsticks_of,
)
from forecast.explain.catalogue import (
    Catalogue,
    Model,
    load_catalogue,
)
from forecast.explain.scorers import SMALL_BATCH, Scorer, as_number, feature_values
from forecast.explain.wording import Explanation, Recommendation, Vocabulary, vocabulary_for
from forecast.features.deal_schema import Feature

MIN_LIFT = 0.005  # half a point of probability: smaller effects are noise, not advice

MAX_RECOMMENDATIONS = 3  # more advice than this is not read


def typical_of_won(training: pd.DataFrame, features: Sequence[Feature]) -> pd.DataFrame:
    """Median of each numeric feature over won snapshots, per stage (and overall as `*`).

    What "won deals at this stage typically show": the yardstick for reasons and advice.
    """
    won = training[training["won"] == 1]
    numeric = [f.name for f in features if f.kind == "numeric"]
    per_stage = won.groupby("stage")[numeric].median()
    overall = won[numeric].median().to_frame("*").T
    return pd.concat([per_stage, overall])


def typical_of_retained(
    training: pd.DataFrame, features: Sequence[Feature], catalogue: Catalogue | None = None
) -> pd.DataFrame:
    """Median over snapshots of accounts that renewed (overall, `*`) of each feature an account
    owner can act on or whose direction is settled (`helps`): the yardstick for retention
    actions and for the drivers (a driver is stated only in the direction its yardstick
    supports). Facts like the days to a contract's end have no yardstick (NaN): no one should
    match them."""
    entries = (catalogue or load_catalogue()).account
    retained = training[training["churned"] == 0]
    numeric = [f.name for f in features if f.kind == "numeric"]
    typical = retained[numeric].median().to_frame("*").T
    for name in numeric:
        if name not in entries or entries[name].helps is None:
            typical[name] = np.nan
    return typical


def explain(
    scorer: Scorer,
    frame: pd.DataFrame,
    *,
    typical: pd.DataFrame | None = None,
    amount: np.ndarray | None = None,
    model: Model = "deal",
    top: int = 3,
    catalogue: Catalogue | None = None,
    display: Mapping[str, Mapping[str, str]] | None = None,
    unknown: np.ndarray | None = None,
) -> list[Explanation]:
    """Reasons and recommendations for every row of a feature frame.

    Args:
        scorer: the model to explain.
        frame: feature rows (extra columns ignored), or an object matrix with one column per
            `scorer.names`, in that order (what the service builds: for one deal a DataFrame
            costs more to make than its explanation).
        typical: `typical_of_won` (deals) or `typical_of_retained` (accounts) of the training
            data: yardsticks in the text, and no action advised whose evidence meets them.
        amount: value at stake per row, to turn a lift into expected revenue (deal amount, or
            the account's yearly revenue); default the `amount` feature or column if any, else 0.
        model: which catalogue section applies.
        top: how many reasons each way.
        display: per categorical feature, the names people know its values by (a product's
            name for its id); a value without one is shown as it is.
        unknown: rows x features, where a value is no evidence about the row (a prior for a
            rep the store has never seen): never stated as a reason, as a missing value.
    """
    catalogue = catalogue or load_catalogue()
    names = scorer.names
    position = {name: j for j, name in enumerate(names)}
    values = feature_values(frame, names)
    # several threads pay off only for batches; a single request stays on one
    threads = 2 if len(values) >= 1000 else 1
    coded, raw, effects = _scored(scorer, frame, values, threads)
    probability = scorer.calibrate(raw)
    if amount is None:
        amount = _amounts(frame, values, position)
    vocabulary = vocabulary_for(names, catalogue, model)
    stages = values[:, position["stage"]] if "stage" in position else None
    yardsticks = yardsticks_of(typical, stages, len(values), names)
    after, lifts = _lifts(
        scorer, (coded, values, probability), yardsticks, vocabulary, model=model, threads=threads
    )
    # a missing value is unknown: it is never stated as raising or lowering the score; nor is
    # a value said to push against what its own yardstick shows
    unstated = missing_matrix(values) | against_evidence(
        values, effects, yardsticks, vocabulary, model=model
    )
    if unknown is not None:
        unstated |= unknown
    known_effects = np.where(unstated, 0.0, effects)
    order, chosen_effects, wanted = _strongest(known_effects, min(top, len(names)))
    best = np.argsort(-lifts, axis=1, kind="stable")[:, :MAX_RECOMMENDATIONS]
    rows = _Rows(
        order=order.tolist(),
        wanted=wanted.tolist(),
        effects=chosen_effects.tolist(),
        **_reason_cells(values, _displayed(values, names, display), yardsticks, order),
        **_advice_cells(values, yardsticks, (best, lifts, after), vocabulary.evidence),
        probability=probability.tolist(),
        raw=raw.tolist(),
        amount=np.asarray(amount, float).tolist(),
        reason_codes=(effects @ vocabulary.membership.T).round(6).tolist(),
    )
    return _explanations(rows, vocabulary)


def against_evidence(
    values: np.ndarray,
    effects: np.ndarray,
    yardsticks: np.ndarray,
    vocabulary: Vocabulary,
    *,
    model: Model,
) -> np.ndarray:
    """rows x features: where a reason would contradict the evidence it states. The value lies
    on the side of its yardstick (won deals, retained accounts) that the catalogue says helps,
    yet its effect hurts, or the other way round: a model whose correlated features share one
    signal (a logistic's several recency terms) attributes some of them backwards ("320 days
    since the last purchase lowers the risk"). Features without a settled direction (`helps`),
    and values level with or without a yardstick, are not judged."""
    helps = vocabulary.helps
    against = np.zeros(effects.shape, dtype=bool)
    directed = np.flatnonzero(helps)
    if not len(directed) or not len(values):
        return against
    value = np.array(values[:, directed].tolist(), dtype=float).reshape(len(values), -1)
    # +1 where the value is on the helpful side; a helpful value raises a deal's chance and
    # lowers an account's risk: the sign its effect should have
    outcome = 1.0 if model == "deal" else -1.0
    with np.errstate(invalid="ignore"):
        expected = np.sign(value - yardsticks[:, directed]) * helps[directed] * outcome
    against[:, directed] = expected * np.sign(effects[:, directed]) < 0  # NaN compares False
    return against


def _scored(
    scorer: Scorer, frame: pd.DataFrame | np.ndarray, values: np.ndarray, threads: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows coded for the model, their raw scores and each feature's contribution."""
    coded = scorer.coded(frame if len(values) > SMALL_BATCH else values)
    contributions = scorer.contributions(coded, threads=threads)
    return coded, contributions.sum(axis=1), contributions[:, :-1]


def _lifts(
    scorer: Scorer,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    yardsticks: np.ndarray,
    vocabulary: Vocabulary,
    *,
    model: Model,
    threads: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row and action, the probability after the action and its lift (-inf for advice the
    row already follows); `rows` are the coded rows, their values and their probabilities."""
    coded, values, probability = rows
    # a deal's action should raise its win probability; an account's should lower its risk
    sign = -1.0 if model == "account" else 1.0
    # advice the deal already follows is no advice: its evidence meets what won deals show
    done = already_done(values, yardsticks, vocabulary)
    after = action_probabilities(scorer, coded, probability, vocabulary.plan, threads, done)
    return after, np.where(done, -np.inf, sign * (after - probability[:, None]))


class _ReasonCells(TypedDict):
    values: list
    shown: list | None
    yardsticks: list


class _AdviceCells(TypedDict):
    best: list
    lifts: list
    after: list
    evidence_values: list
    evidence_typical: list


def _reason_cells(
    values: np.ndarray, shown: np.ndarray, yardsticks: np.ndarray, order: np.ndarray
) -> _ReasonCells:
    """The chosen reasons' values, their display and the yardsticks they are set against."""
    return {
        "values": np.take_along_axis(values, order, axis=1).tolist(),
        "shown": None if shown is values else np.take_along_axis(shown, order, 1).tolist(),
        "yardsticks": np.take_along_axis(yardsticks, order, axis=1).tolist(),
    }


def _advice_cells(
    values: np.ndarray,
    yardsticks: np.ndarray,
    advice: tuple[np.ndarray, np.ndarray, np.ndarray],
    evidence: Sequence[int],
) -> _AdviceCells:
    """The best actions of each row (`advice`: their columns, and every action's lift and
    probability after), with the evidence each rests on and its yardstick."""
    best, lifts, after = advice
    evidence_columns = np.asarray(evidence, dtype=int)[best]
    return {
        "best": best.tolist(),
        "lifts": np.take_along_axis(lifts, best, axis=1).tolist(),
        "after": np.take_along_axis(after, best, axis=1).tolist(),
        "evidence_values": np.take_along_axis(values, evidence_columns, axis=1).tolist(),
        "evidence_typical": np.take_along_axis(yardsticks, evidence_columns, axis=1).tolist(),
    }


def _strongest(effects: np.ndarray, each_way: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the columns of the `each_way` largest effects up then down, their effects, and
    which of them really point that way; sorted for all rows at once."""
    order = np.concatenate(
        [
            np.argsort(-effects, axis=1, kind="stable")[:, :each_way],
            np.argsort(effects, axis=1, kind="stable")[:, :each_way],
        ],
        axis=1,
    )
    chosen = np.take_along_axis(effects, order, axis=1)
    wanted = np.concatenate([chosen[:, :each_way] > 0, chosen[:, each_way:] < 0], axis=1)
    return order, chosen, wanted


@dataclass(frozen=True, slots=True)
class _Rows:
    """What `explain` chose for each row, as plain Python values: cheaper to read per row than
    numpy's, and only the chosen cells are converted (a whole matrix's `tolist` costs more
    than the rows' text)."""

    order: list
    wanted: list
    effects: list
    values: list
    shown: list | None  # None: the values are shown as they are
    yardsticks: list
    best: list
    lifts: list
    after: list
    evidence_values: list
    evidence_typical: list
    probability: list
    raw: list
    amount: list
    reason_codes: list


def _explanations(rows: _Rows, vocabulary: Vocabulary) -> list[Explanation]:
    codes, words, actions, evidence = (
        vocabulary.codes,
        vocabulary.words,
        vocabulary.actions,
        vocabulary.evidence,
    )
    order_rows, wanted_rows, chosen_rows = rows.order, rows.wanted, rows.effects
    value_rows, yardstick_rows = rows.values, rows.yardsticks
    shown_rows = value_rows if rows.shown is None else rows.shown
    best_rows, lift_rows, after_rows = rows.best, rows.lifts, rows.after
    evidence_value_rows, evidence_typical_rows = rows.evidence_values, rows.evidence_typical
    p_rows, raw_rows, amounts, by_code = rows.probability, rows.raw, rows.amount, rows.reason_codes
    # the loop makes ten small objects per row and no cycles: the cyclic collector, run
    # every few hundred of them, would walk the whole heap for nothing (a tenth of a book)
    with _cycle_collector_paused(len(p_rows) >= 1000):
        out = []
        for i in range(len(p_rows)):
            row_values, row_shown, row_yardsticks = value_rows[i], shown_rows[i], yardstick_rows[i]
            row_effects = chosen_rows[i]
            reasons = [
                words[j].reason(row_effects[k], row_values[k], row_yardsticks[k], row_shown[k])
                for k, (j, keep) in enumerate(zip(order_rows[i], wanted_rows[i], strict=True))
                if keep
            ]
            recommendations = []
            for k, a in enumerate(best_rows[i]):
                lift = lift_rows[i][k]
                if lift < MIN_LIFT:
                    break
                name, action = actions[a]
                recommendations.append(
                    Recommendation(
                        action=name,
                        text=action.text,
                        features=tuple(action.changes),
                        probability_before=p_rows[i],
                        probability_after=after_rows[i][k],
                        lift_points=round(100 * lift, 2),
                        expected_revenue_change=round(lift * amounts[i], 2),
                        evidence=words[evidence[a]].text(
                            evidence_value_rows[i][k], evidence_typical_rows[i][k]
                        ),
                    )
                )
            out.append(
                Explanation(
                    probability=p_rows[i],
                    raw_score=raw_rows[i],
                    reasons=reasons,
                    recommendations=recommendations,
                    reason_codes=dict(zip(codes, by_code[i], strict=True)),
                )
            )
    return out


@contextmanager
def _cycle_collector_paused(pause: bool) -> Iterator[None]:
    """Reference counting still frees everything; only the search for cycles waits."""
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def global_importance(scorer: Scorer, frame: pd.DataFrame) -> pd.Series:
    """Mean absolute SHAP value per feature over `frame`, largest first."""
    contributions = scorer.contributions(scorer.coded(frame), threads=2)
    values = np.abs(contributions[:, :-1]).mean(axis=0)
    return pd.Series(values, index=scorer.names).sort_values(ascending=False)


def _displayed(
    values: np.ndarray, names: list[str], display: Mapping[str, Mapping[str, str]] | None
) -> np.ndarray:
    """`values` with each categorical value a name is given for replaced by that name."""
    if not display or not any(name in display for name in names):
        return values
    shown = values.copy()
    for j, name in enumerate(names):
        if (known := display.get(name)) is not None:
            shown[:, j] = [known.get(v, v) if isinstance(v, str) else v for v in values[:, j]]
    return shown


def _amounts(
    frame: pd.DataFrame | np.ndarray, values: np.ndarray, position: Mapping[str, int]
) -> np.ndarray:
    """The `amount` feature of each row, else a frame's `amount` column, else zeros."""
    if "amount" in position:
        return np.array([as_number(v) for v in values[:, position["amount"]]], dtype=float)
    if isinstance(frame, pd.DataFrame) and "amount" in frame:
        return frame["amount"].to_numpy(float)
    return np.zeros(len(values))
