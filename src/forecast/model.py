"""Deal win models: scikit-learn pipelines from the feature frame to a win probability.

This module stays at `forecast.model`, outside the training stage: a logged model names its
classes by import path (`SKOPS_TRUSTED_TYPES`), so moving them would orphan every model a
user has logged.

Two candidates share one input contract (`model_input`: the feature columns, categoricals as
strings, everything else as float64):

- `make_lightgbm`: `CategoryCoder` (categories -> integer codes learned in fit, unseen or missing
  -> NaN, which LightGBM sends down its "missing" branch) + `LGBMClassifier` told which columns are
  categorical and constrained to the monotone directions declared in `forecast.features.deals`.
- `make_logistic`: impute, signed log, scale and one-hot (unknown categories ignored) + a
  regularised logistic regression; the baseline and a candidate of its own.

`calibrate` wraps a fitted pipeline with a calibration map fitted on a later time slice, so the
logged model is one estimator whose `predict_proba` is the calibrated probability. `shifted`
moves a fitted pipeline's log-odds by a constant instead (the choice's shift under a moving base
rate, `forecast.training.drift`), leaving it the same kind of pipeline.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier
from scipy.optimize import brentq
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

from forecast.features.deal_schema import DEAL_FEATURES, Feature
from forecast.settings import get_settings

CALIBRATION_METHODS = ("sigmoid", "isotonic")
# What the skops format may rebuild when a logged model is loaded: our own classes, LightGBM's
# booster (restored from its text dump) and the few non-default sklearn/numpy internals used here.
SKOPS_TRUSTED_TYPES = (
    "collections.OrderedDict",
    "numpy.dtype",
    "forecast.model.CategoryCoder",
    "forecast.model.signed_log1p",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
)
CALIBRATION_FOLDS = 5
MISSING_CATEGORY = "__missing__"


@dataclass(frozen=True)
class TreeParams:
    """LightGBM settings; defaults picked by calibration-slice log loss on the default world."""

    n_estimators: int = 400
    learning_rate: float = 0.03
    num_leaves: int = 15
    min_child_samples: int = 100
    reg_lambda: float = 1.0
    subsample: float = 0.8
    colsample_bytree: float = 0.5
    n_jobs: int = field(default_factory=lambda: get_settings().training_threads)


def feature_names(features: Sequence[Feature]) -> list[str]:
    return [f.name for f in features]


def categorical_names(features: Sequence[Feature]) -> list[str]:
    return [f.name for f in features if f.kind == "categorical"]


def numeric_names(features: Sequence[Feature]) -> list[str]:
    return [f.name for f in features if f.kind == "numeric"]


def model_input(frame: pd.DataFrame, features: Sequence[Feature] = DEAL_FEATURES) -> pd.DataFrame:
    """The model's input columns in order: categoricals as str/None, the rest as float64.

    float64 everywhere numeric because MLflow signatures cannot declare a missing value in an
    integer column, and object strings because pandas `category` fails MLflow's schema checks.
    """
    out = {}
    for f in features:
        values = frame[f.name]
        if f.kind == "categorical":
            text = values.astype("string").astype(object)
            out[f.name] = text.where(text.notna(), None)
        else:
            out[f.name] = pd.to_numeric(values, errors="coerce").astype("float64")
    return pd.DataFrame(out, index=frame.index)


class CategoryCoder(TransformerMixin, BaseEstimator):
    """Turn categorical columns into integer codes learned in `fit`; pass numeric columns on.

    Codes are 0..k-1 in sorted category order, as float64 so that a missing value or a category
    not seen in fit becomes NaN, which LightGBM treats as missing. The output keeps the input's
    column order, so column positions can be given to LightGBM as categorical.

    Args:
        categorical: names of the categorical columns; every other column must be numeric.
    """

    def __init__(self, categorical: Sequence[str] = ()):
        self.categorical = categorical

    def fit(self, x: pd.DataFrame, y: object = None) -> CategoryCoder:
        self.feature_names_in_ = np.asarray(x.columns, dtype=object)
        self.n_features_in_ = x.shape[1]
        missing = [c for c in self.categorical if c not in x.columns]
        if missing:
            raise KeyError(f"categorical columns not in the input: {missing}")
        self.categories_ = {
            c: np.asarray(sorted(x[c].dropna().astype(str).unique()), dtype=object)
            for c in self.categorical
        }
        return self

    def transform(self, x: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "categories_")
        columns = list(self.feature_names_in_)
        absent = [c for c in columns if c not in x.columns]
        if absent:
            raise KeyError(f"input lacks the columns {absent}")
        out = {}
        for c in columns:
            if c in self.categories_:
                text = x[c].astype("string")  # missing stays missing: code -1, then NaN
                codes = pd.Categorical(text, categories=self.categories_[c]).codes
                out[c] = np.where(codes < 0, np.nan, codes.astype("float64"))
            else:
                out[c] = pd.to_numeric(x[c], errors="coerce").to_numpy(dtype="float64")
        return pd.DataFrame(out, index=x.index, columns=columns)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        check_is_fitted(self, "categories_")
        return self.feature_names_in_.copy()


# LightGBM's own defaults ("out of the box"), one thread: the reference a benchmark sets a tuned
# model against
LIBRARY_DEFAULTS = TreeParams(
    n_estimators=100,
    learning_rate=0.1,
    num_leaves=31,
    min_child_samples=20,
    reg_lambda=0.0,
    subsample=1.0,
    colsample_bytree=1.0,
    n_jobs=1,
)


def make_lightgbm(
    features: Sequence[Feature] = DEAL_FEATURES,
    *,
    params: TreeParams | None = None,
    seed: int = 0,
) -> Pipeline:
    """Category codes + LightGBM with monotone constraints; deterministic for a given seed."""
    p = params or TreeParams()
    names = feature_names(features)
    categorical = categorical_names(features)
    classifier = LGBMClassifier(
        objective="binary",
        n_estimators=p.n_estimators,
        learning_rate=p.learning_rate,
        num_leaves=p.num_leaves,
        min_child_samples=p.min_child_samples,
        reg_lambda=p.reg_lambda,
        subsample=p.subsample,
        subsample_freq=1 if p.subsample < 1 else 0,
        colsample_bytree=p.colsample_bytree,
        monotone_constraints=[f.monotone if f.kind == "numeric" else 0 for f in features],
        # positions, not names: the coder keeps the input order. `categorical_column` is the
        # LightGBM alias that travels in params (so it survives clone) without the warning the
        # `categorical_feature` keyword triggers there.
        categorical_column=[names.index(c) for c in categorical],
        random_state=seed,
        n_jobs=p.n_jobs,
        deterministic=True,
        force_col_wise=True,  # else LightGBM picks row/col-wise by timing: not reproducible
        verbose=-1,
    )
    return Pipeline([("codes", CategoryCoder(categorical=categorical)), ("lgbm", classifier)])


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """log1p that keeps the sign: tames amounts and counts for a linear model."""
    return np.sign(x) * np.log1p(np.abs(x))


def make_logistic(
    features: Sequence[Feature] = DEAL_FEATURES, *, c: float = 0.1, seed: int = 0
) -> Pipeline:
    """Impute, signed log, scale, one-hot (unknown categories ignored) + logistic regression."""
    numeric = Pipeline(
        [
            # an always-empty feature (off for this data) stays, as 0: one input shape for every CRM
            (
                "impute",
                SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            ),
            ("log", FunctionTransformer(signed_log1p, feature_names_out="one-to-one")),
            ("scale", StandardScaler()),
        ]
    )
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ]
    )
    prepare = ColumnTransformer(
        [
            ("numeric", numeric, numeric_names(features)),
            ("categorical", categorical, categorical_names(features)),
        ]
    )
    # newton-cholesky: exact and fast when rows far outnumber columns, as here
    classifier = LogisticRegression(C=c, solver="newton-cholesky", max_iter=200, random_state=seed)
    return Pipeline([("prepare", prepare), ("logistic", classifier)])


def monotone_violations(model: BaseEstimator, features: Sequence[Feature]) -> list[str]:
    """Declared monotone features the model bends the wrong way (empty for LightGBM).

    LightGBM enforces the constraints. The logistic pipeline is monotone in each feature (signed
    log and scaling are increasing), in the direction of its coefficient, so a coefficient
    against the declared direction breaks the promise.
    """
    pipeline = base_pipeline(model)
    if "logistic" not in pipeline.named_steps:
        return []
    names = pipeline.named_steps["prepare"].get_feature_names_out()
    coef = dict(zip(names, pipeline.named_steps["logistic"].coef_[0], strict=True))
    return [
        f"{f.name} (coefficient {coef[f'numeric__{f.name}']:+.3f}, declared {f.monotone:+d})"
        for f in features
        if f.monotone and coef[f"numeric__{f.name}"] * f.monotone < 0
    ]


@dataclass(frozen=True)
class Calibration:
    """A calibrated model and how its calibration was chosen."""

    model: CalibratedClassifierCV
    method: str
    cv_log_loss: dict[str, float]  # out-of-fold log loss on the calibration slice, per method


class _ScoreColumn(ClassifierMixin, BaseEstimator):
    """A 'classifier' whose P(won) is its one input column: fits calibration maps on scores.

    Lets the out-of-fold comparison score each model once and then fit sklearn's own sigmoid
    and isotonic maps on those scores, instead of re-running the model for every fold.
    """

    def fit(self, x: np.ndarray, y: np.ndarray) -> _ScoreColumn:
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = np.asarray(x, dtype=float)[:, 0]
        return np.column_stack([1 - p, p])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=float)[:, 0] >= 0.5).astype(int)


def calibration_scores(
    model: BaseEstimator, x: pd.DataFrame, y: np.ndarray, groups: np.ndarray
) -> dict[str, float]:
    """Out-of-fold log loss of each calibration method on the calibration slice.

    Folds are grouped by deal, so a deal's weekly snapshots never sit on both sides; comparing
    in-sample would always favour isotonic, which has more freedom.
    """
    scores = model.predict_proba(x)[:, 1:]
    identity = FrozenEstimator(_ScoreColumn().fit(scores, y))
    folds = GroupKFold(n_splits=min(CALIBRATION_FOLDS, len(np.unique(groups))))
    splits = list(folds.split(scores, y, groups))
    out = {}
    for method in CALIBRATION_METHODS:
        oof = np.empty(len(y))
        for fit_rows, score_rows in splits:
            mapping = CalibratedClassifierCV(identity, method=method)
            mapping.fit(scores[fit_rows], y[fit_rows])
            oof[score_rows] = mapping.predict_proba(scores[score_rows])[:, 1]
        out[method] = float(log_loss(y, oof, labels=[0, 1]))
    return out


def calibrate(
    model: BaseEstimator,
    x: pd.DataFrame,
    y: np.ndarray,
    groups: np.ndarray,
    scores: dict[str, float] | None = None,
) -> Calibration:
    """Pick sigmoid or isotonic by out-of-fold log loss, then fit it on the whole slice.

    Ties go to sigmoid (two parameters, smoother). The fitted model is left untouched
    (`FrozenEstimator`): only the calibration map learns from this slice.

    Args:
        model: the fitted pipeline.
        x, y, groups: the calibration slice's model input, labels and deal ids.
        scores: `calibration_scores` of this model on this slice, if already computed.
    """
    scores = scores or calibration_scores(model, x, y, groups)
    method = min(CALIBRATION_METHODS, key=lambda m: (scores[m], m != "sigmoid"))
    calibrated = CalibratedClassifierCV(FrozenEstimator(model), method=method).fit(x, y)
    return Calibration(model=calibrated, method=method, cv_log_loss=scores)


def log_odds_shift(model: BaseEstimator, x: pd.DataFrame, y: np.ndarray) -> float:
    """The constant that, added to the model's log-odds on every row, fits (x, y) best: the
    shifted mean probability equals the rows' rate (the maximum-likelihood intercept)."""
    z = logit(np.clip(model.predict_proba(x)[:, 1], 1e-9, 1 - 1e-9))
    half = 0.5 / len(y)  # a window of one outcome only would ask for an infinite shift
    rate = float(np.clip(np.mean(y), half, 1 - half))
    return float(brentq(lambda shift: expit(z + shift).mean() - rate, -30.0, 30.0))


def shifted(model: Pipeline, shift: float) -> Pipeline:
    """A copy of the fitted pipeline whose log-odds are `shift` higher on every row: the
    logistic's intercept, or the leaves of LightGBM's first tree (its log-odds are the sum of
    its trees' leaves). Still the same kind of model, so it is served and explained as one;
    its explanations' base value moves by `shift`, each feature's contribution stays."""
    out = copy.deepcopy(model)
    last = out.steps[-1][1]
    if isinstance(last, LogisticRegression):
        last.intercept_ = last.intercept_ + shift
        return out
    booster = last.booster_
    leaves = booster.dump_model(num_iteration=1)["tree_info"][0]["num_leaves"]
    for leaf in range(leaves):
        booster.set_leaf_output(0, leaf, booster.get_leaf_output(0, leaf) + shift)
    return out


def base_pipeline(model: BaseEstimator) -> Pipeline:
    """The uncalibrated pipeline inside a calibrated model (for explanations and feature gain)."""
    if isinstance(model, CalibratedClassifierCV):
        inner = model.calibrated_classifiers_[0].estimator
        return inner.estimator if isinstance(inner, FrozenEstimator) else inner
    return model


def fitted_categoricals(model: BaseEstimator) -> frozenset[str] | None:
    """The columns a fitted model codes as categories (None when it cannot say): what it was
    trained on, whatever the stored data now holds."""
    steps = getattr(base_pipeline(model), "steps", None)
    first = steps[0][1] if steps else None
    if isinstance(first, CategoryCoder):
        return frozenset(first.categorical)
    if isinstance(first, ColumnTransformer):
        return frozenset(dict((n, c) for n, _, c in first.transformers_).get("categorical", []))
    return None


def win_probability(model: BaseEstimator, frame: pd.DataFrame) -> np.ndarray:
    """P(won) for each row of a feature frame (any extra columns are ignored)."""
    names = list(getattr(model, "feature_names_in_", []))
    return model.predict_proba(frame[names] if names else frame)[:, 1]
