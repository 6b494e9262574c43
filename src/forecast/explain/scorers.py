"""The logged pipeline's scores and contributions, fast: LightGBM's own contributions or a
linear model's, through the same calibration; refused when they differ from the pipeline."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV

from forecast.features.deal_schema import Feature
from forecast.model import MISSING_CATEGORY, base_pipeline, model_input

SMALL_BATCH = 16  # up to this many rows, `FastScorer.coded` works value by value


def is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def as_number(value: object) -> float:
    """As `pd.to_numeric(errors="coerce")` for one value: NaN when it is not a number."""
    if type(value) is float:  # what a request carries: answered before the general checks
        return value
    if isinstance(value, int | float | np.number) and not isinstance(value, np.datetime64):
        return float(value)
    if is_missing(value):
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
            return as_number
        codes = {str(c): float(i) for i, c in enumerate(index)}

        def position(value: object) -> float:
            return codes.get(MISSING_CATEGORY if is_missing(value) else str(value), np.nan)

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
