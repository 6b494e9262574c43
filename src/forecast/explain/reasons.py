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
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV

from forecast.explain.catalogue import (
    Action,
    Catalogue,
    FeatureEntry,
    Model,
    attribute_entry,
    load_catalogue,
)
from forecast.features.deals import Feature
from forecast.model import MISSING_CATEGORY, base_pipeline, model_input

Direction = Literal["raises", "lowers"]
MIN_LIFT = 0.005  # half a point of probability: smaller effects are noise, not advice
MAX_RECOMMENDATIONS = 3  # more advice than this is not read


# Plain (not frozen) slotted records: a frozen one costs four times as much to make, and a
# book's explanation makes ten of them per deal.
@dataclass(slots=True)
class Reason:
    """One feature's push on the score, in the words of the catalogue."""

    code: str  # the stable reason code (catalogue group)
    feature: str
    direction: Direction
    effect: float  # contribution to the raw (log-odds) score
    value: float | str | None
    typical: float | None  # what won deals at the same stage show (None if not numeric)
    text: str


@dataclass(slots=True)
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


@dataclass(slots=True)
class Explanation:
    probability: float
    raw_score: float
    reasons: list[Reason] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)
    reason_codes: dict[str, float] = field(default_factory=dict)


SMALL_BATCH = 16  # up to this many rows, `FastScorer.coded` works value by value


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _number(value: object) -> float:
    """As `pd.to_numeric(errors="coerce")` for one value: NaN when it is not a number."""
    if type(value) is float:  # what a request carries: answered before the general checks
        return value
    if isinstance(value, int | float | np.number) and not isinstance(value, np.datetime64):
        return float(value)
    if _missing(value):
        return np.nan
    return float(pd.to_numeric(pd.Series([value]), errors="coerce").astype(float).iloc[0])


class _ValueCoder:
    """Feature frame -> float matrix: numbers as floats, each category as its position in the
    fitted category list (NaN when unseen; a missing one as MISSING_CATEGORY's position)."""

    def __init__(self, names: Sequence[str], categories: Mapping[str, Sequence[object]]):
        self.names = list(names)
        self.categories = {name: pd.Index(values) for name, values in categories.items()}
        self._coders: list[Callable[[object], float]] | None = None  # made on first small batch

    def coded(self, frame: pd.DataFrame | np.ndarray) -> np.ndarray:
        """`frame`: feature rows, or an object matrix with one column per name, in order."""
        if len(frame) <= SMALL_BATCH:
            return self._coded_values(feature_values(frame, self.names))
        if isinstance(frame, np.ndarray):
            frame = pd.DataFrame(frame, columns=self.names, dtype=object)
        columns = []
        for name in self.names:
            # a column the caller lacks (a deal attribute, say) is missing on every row
            values = frame[name].to_numpy() if name in frame else np.full(len(frame), None)
            index = self.categories.get(name)
            if index is None:
                columns.append(pd.to_numeric(values, errors="coerce").astype(float))
                continue
            text = np.where(pd.isna(values), MISSING_CATEGORY, values).astype(str)
            codes = index.get_indexer(text).astype(float)
            codes[codes < 0] = np.nan
            columns.append(codes)
        return np.column_stack(columns)

    def _coded_values(self, values: np.ndarray) -> np.ndarray:
        """`coded` value by value: for a few rows pandas' cost per column is most of the time."""
        if self._coders is None:
            self._coders = [self._coder(name) for name in self.names]
        coders = self._coders
        rows = [[code(v) for code, v in zip(coders, row, strict=True)] for row in values.tolist()]
        return np.array(rows, dtype=float).reshape(values.shape)

    def _coder(self, name: str) -> Callable[[object], float]:
        """One column's value -> its number (a category's position, NaN when unseen)."""
        index = self.categories.get(name)
        if index is None:
            return _number
        codes = {str(c): float(i) for i, c in enumerate(index)}

        def position(value: object) -> float:
            return codes.get(MISSING_CATEGORY if _missing(value) else str(value), np.nan)

        return position


def feature_values(frame: pd.DataFrame | np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Feature rows as an object matrix in `names` order (a missing column as missing values);
    a matrix is taken as already in that order."""
    if isinstance(frame, np.ndarray):
        if frame.ndim != 2 or frame.shape[1] != len(names):
            raise ValueError(f"expected {len(names)} feature columns, got shape {frame.shape}")
        return frame
    same = list(frame.columns) == list(names)
    return (frame if same else frame.reindex(columns=list(names))).to_numpy(dtype=object)


def feature_rows(rows: Sequence[Mapping[str, object]], names: Sequence[str]) -> np.ndarray:
    """Rows of feature values (dicts; a missing key is a missing value) as the object matrix
    `explain` reads as is: for one deal a DataFrame costs more to build than its explanation.
    Infinities are scored as missing."""
    values = [
        [np.nan if isinstance(v, float) and math.isinf(v) else v for v in map(row.get, names)]
        for row in rows
    ]
    block = np.empty((len(rows), len(names)), dtype=object)
    block[:] = values
    return block


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
        self.position = {n: j for j, n in enumerate(self.names)}
        self.coder_values = _ValueCoder(self.names, self.coder.categories_)

    def coded(self, frame: pd.DataFrame) -> np.ndarray:
        """The booster's input matrix for a feature frame: `CategoryCoder` without pandas."""
        return self.coder_values.coded(frame)

    def probability(self, coded: np.ndarray, *, threads: int = 1) -> np.ndarray:
        raw = self.booster.predict(coded, raw_score=True, num_threads=threads)
        return self.calibrate(raw)

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        return _calibrate(raw, self.calibrators, self.maps_raw_scores)

    def contributions(self, coded: np.ndarray, *, threads: int = 1) -> np.ndarray:
        """Exact tree SHAP values: one column per feature, then the bias; rows sum to raw."""
        return self.booster.predict(coded, pred_contrib=True, num_threads=threads)


class LinearScorer:
    """The same interface for a calibrated logistic pipeline: exact linear attributions.

    Each feature's contribution is its coefficients times its transformed values (numbers are
    standardised, so relative to the training mean; a category relative to none), plus the
    intercept as the bias: rows add up to the model's decision value exactly.

    The pipeline's transform (impute with indicators, signed log, scale; one-hot) is redone
    here in numpy from its fitted parameters: sklearn's column transformer costs milliseconds
    per call, most of a one-deal request. A test holds the two equal.
    """

    def __init__(self, model: BaseEstimator, features: Sequence[Feature]):
        self.features = tuple(features)
        self.model = model
        pipeline = base_pipeline(model)
        self.prepare = pipeline.steps[0][1]
        self.linear = pipeline.steps[-1][1]
        self.calibrators = (
            [cc.calibrators[0] for cc in model.calibrated_classifiers_]
            if isinstance(model, CalibratedClassifierCV)
            else []
        )
        self.names = [f.name for f in self.features]
        self.position = {n: j for j, n in enumerate(self.names)}
        self.membership = self._membership(list(self.prepare.get_feature_names_out()))
        numeric = self.prepare.named_transformers_["numeric"]
        categorical = self.prepare.named_transformers_["categorical"]
        numeric_names = list(self.prepare.transformers_[0][2])
        categorical_names = list(self.prepare.transformers_[1][2])
        imputer = numeric.named_steps["impute"]
        kept = ~np.isnan(imputer.statistics_)  # a column empty in training is dropped
        self.numeric_at = np.array([self.position[n] for n in numeric_names], dtype=int)
        self.numeric_kept = kept
        self.medians = imputer.statistics_[kept]
        indicated = imputer.indicator_.features_ if imputer.indicator_ is not None else []
        self.indicated = np.asarray(indicated, dtype=int)
        self.log = numeric.named_steps["log"].func
        scaler = numeric.named_steps["scale"]
        # the scaler's own transform checks its input for longer than it takes to scale it
        self.mean = scaler.mean_ if scaler.with_mean else 0.0
        self.scale = scaler.scale_ if scaler.with_std else 1.0
        # with no categorical feature the column transformer never fits the encoder
        categories = categorical.named_steps["onehot"].categories_ if categorical_names else []
        self.categorical_at = np.array([self.position[n] for n in categorical_names], dtype=int)
        widths = [len(c) for c in categories]
        self.onehot_offsets = np.cumsum([0, *widths[:-1]]).astype(int)
        self.onehot_width = int(sum(widths))
        self.coder_values = _ValueCoder(
            self.names, dict(zip(categorical_names, categories, strict=True))
        )

    def _membership(self, columns: list[str]) -> np.ndarray:
        """Which original feature each transformed column belongs to (columns x features)."""
        by_length = sorted(self.names, key=len, reverse=True)
        matrix = np.zeros((len(columns), len(self.names)))
        for k, column in enumerate(columns):
            bare = column.split("__", 1)[-1].removeprefix("missingindicator_")
            owner = next(n for n in by_length if bare == n or bare.startswith(n + "_"))
            matrix[k, self.position[owner]] = 1.0
        return matrix

    def coded(self, frame: pd.DataFrame) -> np.ndarray:
        return self.coder_values.coded(frame)

    def _transformed(self, coded: np.ndarray) -> np.ndarray:
        """`prepare.transform` of the coded rows, in numpy."""
        numbers = coded[:, self.numeric_at]
        missing = np.isnan(numbers)
        kept = numbers[:, self.numeric_kept]
        imputed = np.where(np.isnan(kept), self.medians, kept)
        block = np.hstack([imputed, missing[:, self.indicated].astype(float)])
        block = (self.log(block) - self.mean) / self.scale
        # every category's one-hot column at once: its feature's offset plus its code
        codes = coded[:, self.categorical_at]
        rows, features = np.nonzero(~np.isnan(codes))
        hot = np.zeros((len(coded), self.onehot_width))
        hot[rows, self.onehot_offsets[features] + codes[rows, features].astype(int)] = 1.0
        return np.hstack([block, hot])

    def contributions(self, coded: np.ndarray, *, threads: int = 1) -> np.ndarray:
        weighted = self._transformed(coded) * self.linear.coef_[0]
        per_feature = weighted @ self.membership
        bias = np.full((len(per_feature), 1), self.linear.intercept_[0])
        return np.hstack([per_feature, bias])

    def probability(self, coded: np.ndarray, *, threads: int = 1) -> np.ndarray:
        raw = self._transformed(coded) @ self.linear.coef_[0] + self.linear.intercept_[0]
        return self.calibrate(raw)

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        return _calibrate(raw, self.calibrators, maps_raw_scores=True)


Scorer = FastScorer | LinearScorer


def _calibrate(raw: np.ndarray, calibrators: list, maps_raw_scores: bool) -> np.ndarray:
    """The calibrated probability from the model's raw (log-odds) score."""
    model_probability = 1.0 / (1.0 + np.exp(-raw))
    if not calibrators:
        return model_probability
    # the calibration map was fitted on what the pipeline answers first: its
    # decision_function (the raw score) where it has one, else the probability
    response = raw if maps_raw_scores else model_probability
    if len(calibrators) == 1:
        return np.clip(_calibrated(calibrators[0], response), 0.0, 1.0)
    mapped = np.mean([_calibrated(c, response) for c in calibrators], axis=0)
    return np.clip(mapped, 0.0, 1.0)


def _calibrated(calibrator, response: np.ndarray) -> np.ndarray:
    """`calibrator.predict(response)`; a sigmoid map (Platt's, with its fitted `a_` and `b_`)
    directly: its input checks cost more than the map itself for one deal."""
    if hasattr(calibrator, "a_") and hasattr(calibrator, "b_"):
        return expit(-(calibrator.a_ * response + calibrator.b_))
    return calibrator.predict(response)


FAST_PATH_TOLERANCE = 1e-9  # the fast scorer and the pipeline differ by rounding only


class ScorerMismatchError(ValueError):
    """The fast scorer does not reproduce the logged pipeline: serving it would answer what
    the model never said."""


def check_scorer(
    scorer: Scorer,
    model: BaseEstimator,
    rows: pd.DataFrame,
    *,
    what: str,
    tolerance: float = FAST_PATH_TOLERANCE,
) -> float:
    """The largest difference between the fast scorer's probability and the model's own
    `predict_proba` on `rows` (feature rows), within `tolerance`.

    Raises:
        ScorerMismatchError: a row differs by more (`what` names the rows in the message).
    """
    if rows.empty:
        return 0.0
    expected = model.predict_proba(model_input(rows, scorer.features))[:, 1]
    served = scorer.probability(scorer.coded(rows))
    # a probability that is NaN on one side only is as far off as can be
    gaps = np.where(np.isnan(served) | np.isnan(expected), np.inf, np.abs(served - expected))
    worst = float(gaps.max())
    if worst > tolerance:
        row = int(gaps.argmax())
        raise ScorerMismatchError(
            f"the fast scorer differs from the model's predict_proba by {worst:.3g} on {what} "
            f"(row {row}: {served[row]:.12f} against {expected[row]:.12f}; allowed "
            f"{tolerance:g})"
        )
    return worst


def check_signature(input_names: Sequence[str] | None, features: Sequence[Feature]) -> None:
    """The logged signature's inputs are the features the caller will compute, in order.

    Raises:
        ValueError: no signature, or other inputs (names the first difference).
    """
    computed = [f.name for f in features]
    if input_names is None:
        raise ValueError("the logged model has no signature: what it expects is unknown")
    logged = list(input_names)
    if logged != computed:
        missing = [n for n in logged if n not in computed][:5]
        extra = [n for n in computed if n not in logged][:5]
        detail = (
            f"it expects {missing} that are not computed here, and not {extra}"
            if missing or extra
            else "in another order"
        )
        raise ValueError(
            f"the logged signature does not match the {len(computed)} features served: {detail}"
        )


def scorer_for(model: BaseEstimator, features: Sequence[Feature]) -> FastScorer | LinearScorer:
    """The fast scorer matching the model's kind (trees or a linear model)."""
    if hasattr(base_pipeline(model).steps[-1][1], "booster_"):
        return FastScorer(model, features)
    return LinearScorer(model, features)


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
    owner can act on: the yardstick for retention actions and the drivers they address. Facts
    like the days to a contract's end have no yardstick (NaN): no one should match them."""
    entries = (catalogue or load_catalogue()).account
    retained = training[training["churned"] == 0]
    numeric = [f.name for f in features if f.kind == "numeric"]
    typical = retained[numeric].median().to_frame("*").T
    for name in numeric:
        if name not in entries or not entries[name].actionable:
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
    """
    catalogue = catalogue or load_catalogue()
    names = scorer.names
    position = {name: j for j, name in enumerate(names)}
    values = feature_values(frame, names)
    coded = scorer.coded(frame if len(values) > SMALL_BATCH else values)
    # several threads pay off only for batches; a single request stays on one
    threads = 2 if len(values) >= 1000 else 1
    contributions = scorer.contributions(coded, threads=threads)
    raw = contributions.sum(axis=1)
    probability = scorer.calibrate(raw)
    if amount is None:
        amount = _amounts(frame, values, position)
    effects = contributions[:, :-1]
    vocabulary = _vocabulary(names, catalogue, model)
    codes, words, actions = vocabulary.codes, vocabulary.words, vocabulary.actions
    by_code = (effects @ vocabulary.membership.T).round(6).tolist()
    stages = values[:, position["stage"]] if "stage" in position else None
    yardsticks = _yardsticks(typical, stages, len(values), names)
    # a deal's action should raise its win probability; an account's should lower its risk
    sign = -1.0 if model == "account" else 1.0
    # advice the deal already follows is no advice: its evidence meets what won deals show
    done = _already_done(values, yardsticks, vocabulary)
    after = _action_probabilities(scorer, coded, probability, vocabulary.plan, threads, done)
    lifts = np.where(done, -np.inf, sign * (after - probability[:, None]))
    evidence = vocabulary.evidence
    missing = _missing_matrix(values)
    shown = _displayed(values, names, display)
    # a missing value is unknown: it is never stated as raising or lowering the score
    known_effects = np.where(missing, 0.0, effects)
    # sorted for all rows at once; only the chosen cells become plain Python values (cheaper
    # per row than numpy's, and a whole matrix's `tolist` costs more than the rows' text)
    each_way = min(top, len(names))
    order = np.concatenate(
        [
            np.argsort(-known_effects, axis=1, kind="stable")[:, :each_way],
            np.argsort(known_effects, axis=1, kind="stable")[:, :each_way],
        ],
        axis=1,
    )
    chosen_effects = np.take_along_axis(known_effects, order, axis=1)
    wanted = np.concatenate(
        [chosen_effects[:, :each_way] > 0, chosen_effects[:, each_way:] < 0], axis=1
    )
    best = np.argsort(-lifts, axis=1, kind="stable")[:, :MAX_RECOMMENDATIONS]
    evidence_columns = np.asarray(evidence, dtype=int)[best]
    order_rows, wanted_rows = order.tolist(), wanted.tolist()
    chosen_rows = chosen_effects.tolist()
    value_rows = np.take_along_axis(values, order, axis=1).tolist()
    shown_rows = value_rows if shown is values else np.take_along_axis(shown, order, 1).tolist()
    yardstick_rows = np.take_along_axis(yardsticks, order, axis=1).tolist()
    best_rows = best.tolist()
    lift_rows = np.take_along_axis(lifts, best, axis=1).tolist()
    after_rows = np.take_along_axis(after, best, axis=1).tolist()
    evidence_value_rows = np.take_along_axis(values, evidence_columns, axis=1).tolist()
    evidence_typical_rows = np.take_along_axis(yardsticks, evidence_columns, axis=1).tolist()
    p_rows, raw_rows, amounts = (
        probability.tolist(),
        raw.tolist(),
        np.asarray(amount, float).tolist(),
    )
    # the loop makes ten small objects per row and no cycles: the cyclic collector, run
    # every few hundred of them, would walk the whole heap for nothing (a tenth of a book)
    with _cycle_collector_paused(len(values) >= 1000):
        out = []
        for i in range(len(values)):
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


# --- internals -------------------------------------------------------------------------------


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


def _group_matrix(
    names: list[str], entries: dict[str, FeatureEntry]
) -> tuple[list[str], np.ndarray]:
    codes = sorted({entries[n].group for n in names})
    matrix = np.array([[entries[n].group == c for n in names] for c in codes], dtype=float)
    return codes, matrix


def _amounts(
    frame: pd.DataFrame | np.ndarray, values: np.ndarray, position: Mapping[str, int]
) -> np.ndarray:
    """The `amount` feature of each row, else a frame's `amount` column, else zeros."""
    if "amount" in position:
        return np.array([_number(v) for v in values[:, position["amount"]]], dtype=float)
    if isinstance(frame, pd.DataFrame) and "amount" in frame:
        return frame["amount"].to_numpy(float)
    return np.zeros(len(values))


def _yardsticks(
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
class _ActionPlan:
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
    def of(cls, actions: Sequence[Action], position: Mapping[str, int]) -> _ActionPlan:
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


@dataclass(frozen=True)
class _Vocabulary:
    """How a model's features are put into words and grouped into reason codes, and what can
    be done about them."""

    names: list[str]
    words: list[_Words]
    codes: list[str]
    membership: np.ndarray  # codes x features
    actions: list[tuple[str, Action]]
    evidence: list[int]  # per action: the column its evidence sentence describes
    plan: _ActionPlan


_VOCABULARIES: dict[tuple[int, str], tuple[Catalogue, _Vocabulary]] = {}


def _vocabulary(names: list[str], catalogue: Catalogue, model: Model) -> _Vocabulary:
    """Made once per catalogue, model and feature list: making it for every one-deal request
    would cost a fifth of the request."""
    cached = _VOCABULARIES.get((id(catalogue), model))
    # the same object, not a recycled id, and the same features
    if cached is not None and cached[0] is catalogue and cached[1].names == names:
        return cached[1]
    entries = catalogue.features(model)
    # a deal attribute from an export (`attr_...`) has no catalogue entry: it speaks for itself
    entries = entries | {n: attribute_entry(n) for n in names if n not in entries}
    position = {name: j for j, name in enumerate(names)}
    codes, membership = _group_matrix(names, entries)
    # an action applies to a model that has every feature it reads and moves (a churn model
    # of orders has none of the subscription actions' features)
    actions = [
        (key, action)
        for key, action in catalogue.actions[model].items()
        if {action.evidence, *action.changes} <= position.keys()
    ]
    made = _Vocabulary(
        names=list(names),
        words=[_Words(name, entries[name], YARDSTICKS[model]) for name in names],
        codes=codes,
        membership=membership,
        actions=actions,
        evidence=[position[action.evidence] for _, action in actions],
        plan=_ActionPlan.of([action for _, action in actions], position),
    )
    if len(_VOCABULARIES) > 16:  # a few catalogues at most; drop older ones
        _VOCABULARIES.clear()
    _VOCABULARIES[(id(catalogue), model)] = (catalogue, made)
    return made


class _Words:
    """How one feature is put into words: label, unit and the evidence sentence."""

    def __init__(self, name: str, entry: FeatureEntry, yardstick: str):
        self.name, self.entry, self.unit, self.group = name, entry, entry.unit, entry.group
        self.yardstick = yardstick
        if name == "days_since_last_activity":
            self.prefix = "No touch in "
        elif name == "days_since_rep_touch":
            self.prefix = "The rep has not been in touch for "
        else:
            self.prefix = f"{entry.label[0].upper()}{entry.label[1:]}: "
        # a book repeats values and yardsticks: each (value, yardstick) is worded once
        self._texts: dict[tuple[object, float | None], str] = {}

    def show(self, value: Any) -> str:
        if value is None or value != value:  # None or NaN
            return "unknown"
        if isinstance(value, str):
            return value
        return self._worded(float(value))

    def _worded(self, number: float) -> str:
        unit = self.unit
        if unit == "share":
            return f"{number:.0%}"
        if unit == "currency":
            return f"{number:,.0f}"
        if unit == "":
            return "yes" if number == 1 else "no" if number == 0 else f"{number:g}"
        if abs(number) >= 10 or number == int(number):
            return f"{number:.0f} {unit}"
        return f"{number:.1f} {unit}"

    def text(self, value: object, typical: float) -> str:
        # NaN is not equal to itself, so it would never be found again as a key
        key = (None if value != value else value, None if typical != typical else typical)
        text = self._texts.get(key)
        if text is None:
            if len(self._texts) > 8192:  # continuous values need not all be kept
                self._texts.clear()
            text = self.prefix + self.show(value)
            if key[1] is not None:
                text += f"; {self.yardstick}: " + self.show(typical)
            self._texts[key] = text
        return text

    def reason(self, effect: float, value: Any, typical: float, shown: object) -> Reason:
        """The reason `value` gives, in words naming it as people know it (`shown`)."""
        if value is None or value != value:
            known = None
        else:
            known = value if isinstance(value, str) else float(value)
        return Reason(
            code=self.group,
            feature=self.name,
            direction="raises" if effect > 0 else "lowers",
            effect=effect,
            value=known,
            typical=None if typical != typical else float(typical),
            text=self.text(shown, typical),
        )


YARDSTICKS = {"deal": "won deals at this stage", "account": "accounts that renewed"}
"""Whom a value is set against in the text, per model."""


def _missing_matrix(values: np.ndarray) -> np.ndarray:
    """Where a feature value is missing (None or NaN), as a boolean matrix."""
    if len(values) <= SMALL_BATCH:  # a frame costs more than the check for a few rows
        return np.array([[_missing(v) for v in row] for row in values.tolist()], dtype=bool)
    return pd.isna(pd.DataFrame(values)).to_numpy(dtype=bool)


def _already_done(
    values: np.ndarray, yardsticks: np.ndarray, vocabulary: _Vocabulary
) -> np.ndarray:
    """rows x actions: the action's evidence already meets the yardstick (won deals at the
    row's stage, or accounts that renewed) in the direction that helps (a deal touched
    yesterday needs no re-engaging, a deal with two demos where won deals had one needs no
    demo, an account its rep saw last week needs no check-in)."""
    evidence = np.asarray(vocabulary.evidence, dtype=int)
    helps = np.array([vocabulary.words[j].entry.helps or "" for j in evidence])
    # evidence features are numbers; None becomes NaN
    value = np.array(values[:, evidence].tolist(), dtype=float).reshape(len(values), -1)
    typical = yardsticks[:, evidence]
    with np.errstate(invalid="ignore"):
        done = np.where(helps == "up", value >= typical, value <= typical)
    return done & (helps != "")  # NaN on either side compares False: not known to be done


def _action_probabilities(
    scorer: Scorer,
    coded: np.ndarray,
    probability: np.ndarray,
    plan: _ActionPlan,
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
