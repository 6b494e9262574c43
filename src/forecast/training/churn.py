"""Account churn risk: trained out of time, checked against baselines, gated like deal win.

Churn has two definitions, picked from what the data holds (or by `ChurnParams.definition`):

- `subscription`: recurring revenue that stops (`forecast.features.accounts`), for an export
  with recurring revenue rows; the horizon is 90 days.
- `inactivity`: no purchase within the horizon (`forecast.features.orders`), for a business
  that sells by the order (an export with orders and no recurring revenue); the horizon comes
  from the gaps between a customer's purchases unless set.

The rest of this docstring is written for subscriptions; inactivity runs the same way on the
customers with a purchase in the last year, and its rule baseline is a recency table.

The time line, on monthly account snapshots (`forecast.features.accounts`, mid-month as-ofs):

    | train ... | (embargo) | calibration (3 months) | test (3 months) | label horizon | as-of

- test: the latest `test_months` snapshot dates whose 90-day label is known at the export.
- calibration: the `calibration_months` dates before; the candidate is chosen and the
  probability map fitted there (out-of-fold, folds grouped by account).
- train: every earlier date whose label window closes before the first calibration as-of. A
  label looks `horizon_days` ahead, so the last train months' labels would otherwise be read
  from inside the calibration and test period (the embargo; logged as `embargo_rows`).

The machinery is the deal-win pipeline's (`forecast.training.win`, `forecast.model`,
`forecast.training.evaluate`, `forecast.training.registry`): the same candidates (LightGBM with
category codes, a regularised logistic regression), the same calibration choice, the same MLflow
logging and the same registry gate. What is churn-specific lives here: windows, labels, the rule
baselines, the model card, revenue at risk and the seam for the revenue forecast.

Baselines, scored on the same test rows:

- `base_rate`: the train slice's churn rate for every row.
- `rate_table`: a rate table learned on the train slice: days to contract end, in buckets
  (ended or renewing monthly, 0-30, 31-90, 91-180, over 180 days, unknown) x a low-usage flag
  (last usage below the train slice's lower quartile, or no usage recorded), each cell's rate
  shrunk towards the overall rate with `RATE_PRIOR` pseudo-rows. For inactivity churn, the
  recency table: days since the last purchase in buckets x a one-purchase flag, shrunk alike.
- `logistic`: the logistic candidate before calibration.
- `truth`: on generated worlds, the generator's churn probability (the ceiling).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import mlflow
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from forecast.data.tables import CrmTables
from forecast.data.world import WorldTruth
from forecast.features.accounts import (
    ACCOUNT_FEATURES,
    HORIZON_DAYS,
    account_features,
    account_snapshots,
    churn_snapshot_dates,
    churn_training_frame,
)
from forecast.features.asof import tables_as_of
from forecast.features.deals import Feature, model_features
from forecast.features.orders import (
    INACTIVITY_FEATURES,
    customer_snapshots,
    inactivity_features,
    inactivity_horizon,
    inactivity_training_frame,
)
from forecast.model import (
    TreeParams,
    calibrate,
    make_lightgbm,
    model_input,
)
from forecast.training import evaluate
from forecast.training.choice import Fitted, flat_metrics
from forecast.training.drift import HALF_LIVES, ROLLING_FOLDS, DriftReport
from forecast.training.leakage import LeakageSuspected
from forecast.training.registry import Evaluation, GateDecision
from forecast.training.shared import retrain, train
from forecast.training.task import CANDIDATES, NotEnoughDataError, RetrainOutcome, Task, fingerprint
from forecast.training.tracking import (
    choice_card_lines,
    code_version,
    default_card_dir,
    log_choice,
    markdown,
)

log = logging.getLogger(__name__)

EXPERIMENT = "account-churn"
MODEL_NAME = "account-churn"
MIN_PER_CLASS = 40  # accounts that churned, and accounts retained, needed before training
KEYS = ("account_id", "as_of")
LABEL = "churned"
TASK = Task("churn", MODEL_NAME, EXPERIMENT, label=LABEL, group="account_id", purge_group=False)
GATE_BASELINES = ("base_rate", "rate_table")
RATE_PRIOR = 20.0  # pseudo-rows pulling a rate-table cell towards the overall rate
CONTRACT_BUCKETS = (0, 30, 90, 180)  # days to contract end: <=0, 1-30, 31-90, 91-180, >180
LOW_USAGE_QUANTILE = 0.25
RECENCY_BUCKETS = (30, 60, 90, 180)  # days since the last purchase: <=30, 31-60, ..., > 180
DEFINITIONS = ("subscription", "inactivity")

__all__ = [
    "EXPERIMENT",
    "MODEL_NAME",
    "ChurnParams",
    "ChurnRenewals",
    "ChurnTrainResult",
    "LeakageSuspected",
    "NotEnoughDataError",
    "RateTable",
    "churn_probability",
    "live_renewals",
    "renewal_probability_from",
    "retrain_churn",
    "revenue_at_risk",
    "revenue_at_risk_by",
    "train_churn",
]


@dataclass(frozen=True)
class ChurnParams:
    """Everything that decides the churn model, logged as the run's parameters."""

    seed: int = 0
    definition: str = "auto"  # subscription, inactivity, or auto: from what the data holds
    horizon_days: int | None = None  # None: 90 days, or for inactivity from purchase gaps
    test_months: int | None = None  # None: 3, or 1 when the history is short (`slice_months`)
    calibration_months: int | None = None  # None: as test_months
    snapshot_day: int = 15
    tree: TreeParams = field(default_factory=TreeParams)
    logistic_c: float = 0.1
    candidates: tuple[str, ...] = CANDIDATES
    half_lives: tuple[int | None, ...] = HALF_LIVES  # recency weightings tried (days)
    rolling_folds: int = ROLLING_FOLDS  # held-out windows the choice is made on

    def flat(self) -> dict[str, object]:
        out = {k: v for k, v in asdict(self).items() if k != "tree"}
        out["candidates"] = ",".join(self.candidates)
        out["half_lives"] = ",".join("none" if h is None else str(h) for h in self.half_lives)
        return out | {f"tree_{k}": v for k, v in asdict(self.tree).items()}


@dataclass(frozen=True)
class ChurnHooks:
    """Test hooks; real runs use none. `fit_rows` rewrites train and calibration rows only."""

    fit_rows: Callable[[pd.DataFrame], pd.DataFrame] | None = None


@dataclass(frozen=True)
class ChurnSlices:
    train: pd.DataFrame
    calibration: pd.DataFrame
    test: pd.DataFrame
    embargo_rows: int
    spans: Mapping[str, str]
    history: pd.DataFrame  # every labelled snapshot before the test slice (the rolling windows)


# --- baselines -----------------------------------------------------------------------------------


def _contract_bucket(days: pd.Series) -> np.ndarray:
    values = pd.to_numeric(days, errors="coerce").to_numpy(dtype=float)
    bucket = np.searchsorted(np.asarray(CONTRACT_BUCKETS, dtype=float), values, side="left")
    return np.where(np.isnan(values), -1, bucket)


@dataclass(frozen=True)
class RateTable:
    """Baseline: churn rate by days-to-contract-end bucket x low-usage flag (see module doc)."""

    rates: Mapping[tuple[int, bool], float]
    overall: float
    low_usage_below: float

    @classmethod
    def learn(cls, frame: pd.DataFrame, churned: np.ndarray) -> RateTable:
        usage = pd.to_numeric(frame["usage_last"], errors="coerce")
        threshold = float(usage.quantile(LOW_USAGE_QUANTILE)) if usage.notna().any() else 0.0
        y = np.asarray(churned, dtype=float)
        overall = float(y.mean())
        cells = pd.DataFrame(
            {"bucket": _contract_bucket(frame["days_to_contract_end"]), "y": y}
        ).assign(low=cls._low(usage, threshold))
        grouped = cells.groupby(["bucket", "low"])["y"].agg(["sum", "count"])
        shrunk = (grouped["sum"] + RATE_PRIOR * overall) / (grouped["count"] + RATE_PRIOR)
        rates = {(int(b), bool(low)): float(r) for (b, low), r in shrunk.items()}
        return cls(MappingProxyType(rates), overall, threshold)

    @staticmethod
    def _low(usage: pd.Series, threshold: float) -> np.ndarray:
        return (usage.isna() | (usage < threshold)).to_numpy()

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        usage = pd.to_numeric(frame["usage_last"], errors="coerce")
        keys = zip(
            _contract_bucket(frame["days_to_contract_end"]),
            self._low(usage, self.low_usage_below),
            strict=True,
        )
        return np.array([self.rates.get((int(b), bool(low)), self.overall) for b, low in keys])


@dataclass(frozen=True)
class RecencyTable:
    """Baseline for inactivity churn: churn rate by days since the last purchase (<= 30,
    31-60, 61-90, 91-180, > 180) x one purchase only, shrunk like `RateTable`."""

    rates: Mapping[tuple[int, bool], float]
    overall: float

    @staticmethod
    def _cells(frame: pd.DataFrame) -> pd.DataFrame:
        days = frame["days_since_last_purchase"].to_numpy(dtype=float)
        bucket = np.searchsorted(np.asarray(RECENCY_BUCKETS, dtype=float), days, side="left")
        return pd.DataFrame({"bucket": bucket, "once": frame["purchases"].to_numpy() <= 1})

    @classmethod
    def learn(cls, frame: pd.DataFrame, churned: np.ndarray) -> RecencyTable:
        y = np.asarray(churned, dtype=float)
        overall = float(y.mean())
        grouped = cls._cells(frame).assign(y=y).groupby(["bucket", "once"])["y"]
        sums = grouped.agg(["sum", "count"])
        shrunk = (sums["sum"] + RATE_PRIOR * overall) / (sums["count"] + RATE_PRIOR)
        rates = {(int(b), bool(once)): float(r) for (b, once), r in shrunk.items()}
        return cls(MappingProxyType(rates), overall)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        cells = self._cells(frame)
        keys = zip(cells["bucket"], cells["once"], strict=True)
        return np.array([self.rates.get((int(b), bool(once)), self.overall) for b, once in keys])


# --- the two definitions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Definition:
    """What one churn definition decides: its unit's snapshots and features, its rule
    baseline, its segments on the card and the words the card uses."""

    name: str
    features: tuple[Feature, ...]
    rule: type[RateTable] | type[RecencyTable]
    rule_text: str
    event: str  # what churn is, after "the probability that"
    population: str  # who is snapshotted, after "snapshots of"
    first_moment: Callable[[CrmTables], pd.Timestamp]  # the earliest snapshot's month
    snapshots: Callable[[CrmTables, Sequence[pd.Timestamp]], pd.DataFrame]
    featurize: Callable[[CrmTables, pd.DataFrame], pd.DataFrame]
    training_frame: Callable[..., pd.DataFrame]  # (tables, dates, *, horizon_days)
    # a year's revenue of each feature row: what a churned account (customer) takes away
    yearly_revenue: Callable[[pd.DataFrame], np.ndarray]
    revenue_words: str  # what `yearly_revenue` is, for pages and cards

    def frame(self, tables: CrmTables, params: ChurnParams) -> pd.DataFrame:
        """Labelled monthly snapshots from the first billed month (or order) to the export."""
        first = self.first_moment(tables)
        dates = churn_snapshot_dates(first, tables.as_of, day=params.snapshot_day)
        return self.training_frame(tables, dates, horizon_days=_horizon(params))

    def features_at(self, tables: CrmTables, as_of: pd.Timestamp) -> pd.DataFrame:
        """Every scorable account's (customer's) features at `as_of`."""
        return self.featurize(tables, self.snapshots(tables, [as_of]))

    @staticmethod
    def segments(frame: pd.DataFrame) -> pd.Series:
        """The groups the card breaks the test metrics down by."""
        if "segment" in frame:
            return frame["segment"]
        bought = frame["purchases"].to_numpy()
        labels = np.where(bought <= 1, "1 purchase", np.where(bought <= 4, "2-4", "5+"))
        return pd.Series(labels, index=frame.index)


SUBSCRIPTION = Definition(
    "subscription",
    ACCOUNT_FEATURES,
    RateTable,
    "churn rate by days to contract end (<= 0, 1-30, 31-90, 91-180, > 180, unknown) x last "
    "usage below the train slice's lower quartile",
    "an account's recurring revenue stops",
    "every account billed recurring revenue in the last ended month",
    first_moment=lambda t: t.revenue.loc[t.revenue["kind"] == "recurring", "period"].min(),
    snapshots=account_snapshots,
    featurize=account_features,
    training_frame=churn_training_frame,
    yearly_revenue=lambda frame: 12 * frame["mrr"].to_numpy(dtype=float),
    revenue_words="ARR (12 x the last monthly bill)",
)
INACTIVITY = Definition(
    "inactivity",
    INACTIVITY_FEATURES,
    RecencyTable,
    "churn rate by days since the last purchase (<= 30, 31-60, 61-90, 91-180, > 180) x one "
    "purchase only",
    "a customer makes no purchase",
    "every customer with a purchase in the year before",
    first_moment=lambda t: t.orders["at"].min(),
    snapshots=customer_snapshots,
    featurize=inactivity_features,
    training_frame=inactivity_training_frame,
    # spend net of returns over the year before: a negative net is no revenue to lose
    yearly_revenue=lambda frame: frame["spend_365d"].clip(lower=0).to_numpy(dtype=float),
    revenue_words="spend over the last year, net of returns",
)
DEFINITION_OF = {d.name: d for d in (SUBSCRIPTION, INACTIVITY)}


def _horizon(params: ChurnParams) -> int:
    return HORIZON_DAYS if params.horizon_days is None else params.horizon_days


def resolve(params: ChurnParams, tables: CrmTables) -> ChurnParams:
    """`params` with the definition and the horizon decided from what `tables` hold.

    `auto` is subscription when the export has recurring revenue, else inactivity when it has
    orders from known customers.

    Raises:
        NotEnoughDataError: neither is in the export, or the named one is not.
        ValueError: an unknown definition.
    """
    if params.definition not in (*DEFINITIONS, "auto"):
        raise ValueError(
            f"churn definition must be auto, {' or '.join(DEFINITIONS)}, not {params.definition!r}"
        )
    has = {
        "subscription": bool((tables.revenue["kind"] == "recurring").any()),
        "inactivity": bool(tables.orders["account_id"].notna().any()),
    }
    name = params.definition
    if name == "auto":
        name = next((d for d in DEFINITIONS if has[d]), "")
    if not name:
        raise NotEnoughDataError(
            "churn cannot be defined: the export has no recurring revenue rows (subscription "
            "churn) and no orders with customers (inactivity churn); import a revenue or an "
            "orders table"
        )
    if not has[name]:
        wanted = "recurring revenue rows" if name == "subscription" else "orders with customers"
        table = "a revenue table" if name == "subscription" else "an orders table"
        raise NotEnoughDataError(
            f"{name} churn needs {wanted} and the export has none: import {table}, or leave "
            "--definition to auto"
        )
    horizon = params.horizon_days
    if horizon is None:
        horizon = HORIZON_DAYS if name == "subscription" else _gap_horizon(tables)
    return replace(params, definition=name, horizon_days=horizon)


def _gap_horizon(tables: CrmTables) -> int:
    try:
        return inactivity_horizon(tables)
    except ValueError as err:
        raise NotEnoughDataError(f"inactivity churn: {err}") from None


def definition_of(model: BaseEstimator) -> Definition:
    """The definition a churn model was trained under, from the features it expects."""
    return definition_for(str(n) for n in getattr(model, "feature_names_in_", []))


def definition_for(feature_names: Iterable[str]) -> Definition:
    """The definition whose features these are (subscription unless inactivity's are there)."""
    inactivity = {f.name for f in INACTIVITY_FEATURES}
    return INACTIVITY if inactivity.intersection(feature_names) else SUBSCRIPTION


# --- data ----------------------------------------------------------------------------------------


def check_classes(frame: pd.DataFrame, horizon_days: int = HORIZON_DAYS) -> None:
    """Refuse to train with fewer than MIN_PER_CLASS churned and retained accounts each."""
    churned = frame.loc[frame[LABEL] == 1, "account_id"].nunique()
    retained = frame.loc[frame[LABEL] == 0, "account_id"].nunique()
    if churned < MIN_PER_CLASS or retained < MIN_PER_CLASS:
        raise NotEnoughDataError(
            f"not enough labelled accounts to train a churn model: {churned} accounts churned "
            f"and {retained} were retained within {horizon_days} days of a snapshot; at least "
            f"{MIN_PER_CLASS} of each are needed (import more revenue or order history)"
        )


def split(frame: pd.DataFrame, params: ChurnParams) -> ChurnSlices:
    """Out-of-time slices by snapshot date, with the train slice's label windows embargoed."""
    dates = np.sort(frame["as_of"].unique())
    test_months, calibration_months = slice_months(len(dates), params)
    n_late = test_months + calibration_months
    if len(dates) <= n_late:
        raise NotEnoughDataError(
            f"{len(dates)} labelled snapshot months; more than {n_late} are needed (test "
            f"{test_months}, calibration {calibration_months}, then training)"
        )
    test_start = dates[-test_months]
    cal_start = dates[-n_late]
    as_of = frame["as_of"]
    early = frame[as_of < cal_start]
    closed = early["as_of"] + pd.Timedelta(days=_horizon(params)) < cal_start
    parts = {
        "train": early[closed],
        "calibration": frame[(as_of >= cal_start) & (as_of < test_start)],
        "test": frame[as_of >= test_start],
    }
    day = "%Y-%m-%d"
    spans = {
        name: f"{part['as_of'].min():{day}} .. {part['as_of'].max():{day}}" if len(part) else "-"
        for name, part in parts.items()
    }
    for name, part in parts.items():
        if part[LABEL].nunique() < 2:
            raise NotEnoughDataError(
                f"the {name} slice ({spans[name]}) has {len(part)} labelled snapshots and not "
                "both outcomes: more history is needed"
            )
    parts = {name: part.reset_index(drop=True) for name, part in parts.items()}
    history = frame[as_of < test_start].reset_index(drop=True)
    return ChurnSlices(**parts, embargo_rows=int((~closed).sum()), spans=spans, history=history)


def slice_months(labelled_months: int, params: ChurnParams) -> tuple[int, int]:
    """Snapshot months for the test and calibration slices: as set, else 3 each when the
    history leaves at least 3 months to train on before them and the label window's embargo,
    else 1 each (a year of orders has about 9 labelled months with a 90-day horizon)."""
    embargo = int(np.ceil(_horizon(params) / 30))
    default = 3 if labelled_months >= 3 + 3 + embargo + 3 else 1
    test = params.test_months or default
    return test, params.calibration_months or test


@dataclass(frozen=True)
class Prepared:
    slices: ChurnSlices
    features: tuple[Feature, ...]
    fingerprint: str
    export_as_of: pd.Timestamp
    definition: Definition = SUBSCRIPTION


def prepare(tables: CrmTables, params: ChurnParams, hooks: ChurnHooks) -> Prepared:
    """Snapshots, features, labels, the class check and the out-of-time split."""
    params = resolve(params, tables)
    definition = DEFINITION_OF[params.definition]
    frame = definition.frame(tables, params)
    check_classes(frame, _horizon(params))
    s = split(frame, params)
    if hooks.fit_rows is not None:
        s = replace(
            s,
            train=hooks.fit_rows(s.train),
            calibration=hooks.fit_rows(s.calibration),
            history=hooks.fit_rows(s.history),
        )
    features = definition.features
    columns = [*KEYS, *(f.name for f in features), LABEL]
    stamp = fingerprint(pd.concat([s.train, s.calibration, s.test]), columns)
    return Prepared(s, features, stamp, tables.as_of, definition)


# --- the model -----------------------------------------------------------------------------------


def churn_probability(model: BaseEstimator, frame: pd.DataFrame) -> np.ndarray:
    """P(churn within the horizon) for each row of a feature frame of the model's definition."""
    features = model_features(model, definition_of(model).features)
    return model.predict_proba(model_input(frame, features))[:, 1]


def truth_probability(truth: WorldTruth, frame: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """The generator's churn probability for each (account_id, as_of) row."""
    out = np.empty(len(frame))
    positions = np.arange(len(frame))
    for as_of, rows in frame.groupby("as_of").indices.items():
        out[positions[rows]] = truth.churn_probability(
            frame["account_id"].iloc[rows], as_of=pd.Timestamp(as_of), horizon_days=horizon_days
        )
    return out


def score_test(
    data: Prepared, fitted: Fitted, truth: WorldTruth | None, params: ChurnParams
) -> dict[str, np.ndarray]:
    """P(churn) on the test rows from the model, its uncalibrated self and every baseline."""
    s = data.slices
    x = model_input(s.test, data.features)
    y_train = s.train[LABEL].to_numpy(dtype=float)
    lightgbm = fitted.candidates["lightgbm"].predict_proba(x)[:, 1]
    scores = {
        "model": fitted.calibration.model.predict_proba(x)[:, 1],
        "model_uncalibrated": fitted.candidates[fitted.chosen].predict_proba(x)[:, 1],
        "base_rate": np.full(len(s.test), y_train.mean()),
        "rate_table": data.definition.rule.learn(s.train, y_train).predict(s.test),
        "logistic": fitted.candidates["logistic"].predict_proba(x)[:, 1],
        "lightgbm": lightgbm,
    }
    if truth is not None and data.definition is SUBSCRIPTION:
        scores["truth"] = truth_probability(truth, s.test, _horizon(params))
    return scores


# --- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChurnTrainResult:
    """What a churn training run produced; `evaluation()` is what the registry's gate needs."""

    run_id: str
    model_uri: str
    model: BaseEstimator
    candidate: str
    calibration_method: str
    selection: pd.DataFrame
    metrics: pd.DataFrame  # contenders x metrics on the test rows
    by_segment: pd.DataFrame
    reliability: pd.DataFrame  # the model's reliability table on the test rows
    slices: ChurnSlices
    features: tuple[Feature, ...]
    gain_share: pd.Series
    fingerprint: str
    code_version: str
    export_as_of: pd.Timestamp
    card_path: Path
    params: ChurnParams
    rule_scores: Mapping[str, np.ndarray] = field(default_factory=dict)  # base rate, rate table
    drift: DriftReport | None = None  # what the choice over held-out windows saw
    half_life: int | None = None  # days, of the chosen candidate's recency weights

    def evaluation(self) -> Evaluation:
        """The test rows and scores the gate compares a champion with (label in `won`)."""
        test = self.slices.test
        x = model_input(test, self.features)
        return Evaluation(
            features=x,
            won=test[LABEL].to_numpy(dtype=int),
            metrics={m: float(self.metrics.loc["model", m]) for m in ("auc", "log_loss")},
            baselines={n: float(self.metrics.loc[n, "log_loss"]) for n in GATE_BASELINES},
            probability=self.model.predict_proba(x)[:, 1],
            rules=self.rule_scores,
            groups=test["account_id"].to_numpy(),
        )


METRIC_PREFIX = {
    "model": "test",
    "model_uncalibrated": "test_uncalibrated",
    "base_rate": "baseline_base_rate",
    "rate_table": "baseline_rate_table",
    "logistic": "baseline_logistic",
    "lightgbm": "candidate_lightgbm",
    "truth": "truth",
}


class ChurnPipeline:
    """The account churn task: monthly account snapshots, an embargo, the rate-table baseline;
    `forecast.training.shared` runs it."""

    task = TASK

    def prepare(self, tables: CrmTables, params: ChurnParams, hooks: ChurnHooks) -> Prepared:
        return prepare(tables, params, hooks)

    def report(self, data: Prepared) -> None:
        s = data.slices
        log.info(
            "churn model (%s churn): %s train, %s calibration, %s test snapshots (%s)",
            data.definition.name,
            *(f"{len(p):,}" for p in (s.train, s.calibration, s.test)),
            "; ".join(f"{k} {v}" for k, v in s.spans.items()),
        )

    def log_inputs(self, params: ChurnParams, data: Prepared, hooks: ChurnHooks) -> None:
        _log_inputs(params, data, hooks)

    def mapped_suspects(self, tables: CrmTables) -> list:
        return []  # accounts are screened feature by feature, out of time

    def score(
        self, data: Prepared, fitted: Fitted, truth: WorldTruth | None, params: ChurnParams
    ) -> dict[str, np.ndarray]:
        return score_test(data, fitted, truth, params)

    def result(
        self,
        run_id: str,
        model_uri: str,
        data: Prepared,
        fitted: Fitted,
        scores: Mapping[str, np.ndarray],
        *,
        params: ChurnParams,
        card_path: Path,
    ) -> ChurnTrainResult:
        s = data.slices
        y = s.test[LABEL].to_numpy(dtype=int)
        return ChurnTrainResult(
            run_id=run_id,
            model_uri=model_uri,
            model=fitted.calibration.model,
            candidate=fitted.chosen,
            calibration_method=fitted.calibration.method,
            selection=fitted.selection,
            drift=fitted.drift,
            half_life=fitted.half_life,
            metrics=evaluate.compare(y, scores),
            by_segment=evaluate.compare_by(data.definition.segments(s.test), y, scores),
            reliability=evaluate.reliability_table(y, scores["model"]),
            slices=s,
            features=data.features,
            gain_share=fitted.gain_share,
            fingerprint=data.fingerprint,
            code_version=code_version(),
            export_as_of=data.export_as_of,
            card_path=card_path,
            params=params,
            rule_scores={name: scores[name] for name in GATE_BASELINES},
        )

    def log_results(self, result: ChurnTrainResult, scores: Mapping[str, np.ndarray]) -> None:
        _log_results(result, result.slices.test[LABEL].to_numpy(dtype=int), scores)

    def write_card(self, result: ChurnTrainResult, decision: GateDecision | None) -> Path:
        return write_card(result, decision)


CHURN = ChurnPipeline()


def train_churn(
    tables: CrmTables,
    *,
    truth: WorldTruth | None = None,
    params: ChurnParams | None = None,
    hooks: ChurnHooks | None = None,
    card_dir: Path | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ChurnTrainResult:
    """Train, calibrate, evaluate and log the account churn model as one MLflow run.

    Args:
        tables: the CRM as exported (its `as_of` sets the time line, see the module docstring).
        truth: the generator's truth on generated worlds, scored as the ceiling; None otherwise.
        params: model and window settings (defaults: `ChurnParams()`).
        hooks: test hooks (see `ChurnHooks`).
        card_dir: where `account-churn.md` is written (default: `training.default_card_dir()`).
        on_step: called with each step's name, for progress display.

    Raises:
        NotEnoughDataError: fewer than MIN_PER_CLASS churned or retained accounts, too few
            snapshot months, or a slice without both outcomes.
        LeakageSuspected: a feature alone separates the outcomes, or the test AUC is above 0.99.
    """
    return train(
        CHURN,
        tables,
        params=resolve(params or ChurnParams(), tables),
        hooks=hooks or ChurnHooks(),
        truth=truth,
        card_dir=card_dir or default_card_dir(),
        on_step=on_step,
    )


def _log_inputs(params: ChurnParams, data: Prepared, hooks: ChurnHooks) -> None:
    s = data.slices
    parts = {name: getattr(s, name) for name in ("train", "calibration", "test")}
    mlflow.log_params(
        params.flat()
        | {f"window_{k}": v for k, v in s.spans.items()}
        | {"window_export_as_of": f"{data.export_as_of:%Y-%m-%d}"}
        | {f"{n}_rows": len(p) for n, p in parts.items()}
        | {f"{n}_accounts": p["account_id"].nunique() for n, p in parts.items()}
        | {"embargo_rows": s.embargo_rows, "features": ",".join(f.name for f in data.features)}
    )
    mlflow.set_tag("churn_definition", params.definition)
    if hooks.fit_rows is not None:
        mlflow.set_tag("hooks", "fit_rows")


def _log_results(
    result: ChurnTrainResult, y_test: np.ndarray, scores: Mapping[str, np.ndarray]
) -> None:
    mlflow.log_metrics(flat_metrics(result.metrics, METRIC_PREFIX, rate_name="test_churn_rate"))
    log_choice(result)
    shown = {k: v for k, v in scores.items() if k in ("model", "rate_table", "logistic", "truth")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        evaluate.plot_reliability(
            y_test, shown, folder / "reliability.png", title="account churn, test"
        )
        result.metrics.rename_axis("contender").to_csv(folder / "metrics.csv")
        result.by_segment.to_csv(folder / "metrics_by_segment.csv", index=False)
        result.reliability.to_csv(folder / "reliability.csv", index=False)
        mlflow.log_artifacts(str(folder), artifact_path="evaluation")
    write_card(result)
    mlflow.log_artifact(str(result.card_path), artifact_path="card")


# --- model card ----------------------------------------------------------------------------------

CONTENDER_NAMES = {
    "model": "**model** (as served)",
    "model_uncalibrated": "its candidate on the train slice, no map",
    "base_rate": "baseline: train churn rate",
    "rate_table": "baseline: rate table (contract end x low usage)",
    "recency_table": "baseline: recency table (days since last purchase x one purchase)",
    "logistic": "baseline: logistic regression",
    "lightgbm": "candidate: LightGBM, uncalibrated",
    "truth": "truth (the generator's probability)",
}


def card_text(result: ChurnTrainResult, decision: GateDecision | None = None) -> str:
    """The model card: data window, choice, calibration, metrics, features, limits."""
    s, p, m = result.slices, result.params, result.metrics
    definition = DEFINITION_OF[p.definition]
    subscription = definition is SUBSCRIPTION

    def rows(name: str) -> str:
        part = getattr(s, name)
        return f"{len(part):,} snapshots of {part['account_id'].nunique():,} accounts"

    why = (
        "the export has recurring revenue"
        if subscription
        else f"the export has orders and no recurring revenue; {p.horizon_days} days cover "
        "80 % of the gaps between a customer's purchases"
    )
    head = [
        f"# Model card: account churn risk (`{MODEL_NAME}`)",
        "",
        f"The probability that {definition.event} within {p.horizon_days} days, from what the",
        f"CRM knew at the snapshot. MLflow run `{result.run_id}`, model `{result.model_uri}`.",
        "",
        f"Churn definition: **{definition.name}** ({why}).",
    ]
    if decision is not None:
        head += ["", f"Registry: `{decision.name}` v{decision.version} {decision.summary()}."]
    data = [
        "## Data",
        "",
        f"- Export as-of {result.export_as_of:%Y-%m-%d}; monthly snapshots (day"
        f" {p.snapshot_day}) of {definition.population}.",
        f"- Train {s.spans['train']}: {rows('train')}; {s.embargo_rows:,} later snapshots left"
        " out because their label window reaches the calibration slice.",
        f"- Calibration {s.spans['calibration']}: {rows('calibration')}.",
        f"- Test {s.spans['test']}: {rows('test')} (the latest dates whose label is known).",
        f"- Data fingerprint `{result.fingerprint[:16]}`, code `{result.code_version}`,"
        f" seed {p.seed}.",
    ]
    choice = choice_card_lines(result, "account")
    names = CONTENDER_NAMES | (
        {} if subscription else {"rate_table": CONTENDER_NAMES["recency_table"]}
    )
    table = m[list(evaluate.METRICS)].rename(index=names).rename_axis("contender")
    by_segment = result.by_segment.pivot(index="group", columns="model", values="auc")
    metrics = [
        "## Test metrics against the baselines (same rows)",
        "",
        f"ECE over {evaluate.ECE_BINS} equal-frequency bins. Rule: {definition.rule_text},",
        f"shrunk to the overall rate with {RATE_PRIOR:.0f} pseudo-rows.",
        "",
        markdown(table.reset_index(), 4),
        "",
        "ROC AUC by segment:",
        "",
        markdown(by_segment.rename_axis("segment").reset_index()),
        "",
        "Reliability of the model (test):",
        "",
        markdown(result.reliability, 4),
    ]
    gain = pd.DataFrame(
        {
            "feature": [f.name for f in result.features],
            "kind": [f.kind for f in result.features],
            "gain share": [float(result.gain_share.get(f.name, 0.0)) for f in result.features],
        }
    )
    features = [
        "## Features",
        "",
        f"Point in time (`forecast.{'account' if subscription else 'order'}_features`); gain share"
        " from the LightGBM candidate.",
        "",
        markdown(gain),
    ]
    limits = ["## Known limits", ""]
    if "truth" in m.index:
        limits += [
            f"- The generator's truth scores ROC AUC {m.loc['truth', 'auc']:.3f} on the same rows,"
            f" the model {m.loc['model', 'auc']:.3f}: account health is seen only through noisy",
            "  usage, tickets, surveys and payment delays.",
        ]
    limits += [
        "- Monthly snapshots of the same account are correlated: the test slice holds about",
        "  three snapshots per account, so its metrics are less certain than its row count says.",
    ]
    if subscription:
        limits += [
            "- Churn here is recurring revenue that stops; a downgrade is not churn.",
            "- Monotone directions are declared for tickets (+) and usage (-) only; the others",
            "  are checked on average by tests/model/test_churn_model.py.",
        ]
    else:
        limits += [
            "- Churn here is no purchase within the horizon: a customer who buys less is not",
            "  churned, and one who pauses longer than the horizon and comes back was.",
            "- History before the export's first order is unseen: early snapshots know little",
            "  of a customer's past (tenure and counts are left-censored).",
        ]
    sections = [head, data, choice, metrics, features, limits]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


def write_card(result: ChurnTrainResult, decision: GateDecision | None = None) -> Path:
    result.card_path.parent.mkdir(parents=True, exist_ok=True)
    result.card_path.write_text(card_text(result, decision))
    return result.card_path


def retrain_churn(
    tables: CrmTables,
    *,
    truth: WorldTruth | None = None,
    seed: int = 0,
    definition: str = "auto",
    horizon_days: int | None = None,
    card_dir: Path | None = None,
    on_step: Callable[[str], None] | None = None,
) -> RetrainOutcome:
    """Train the churn model, register it as challenger and run the registry's gate.

    `definition`: `subscription`, `inactivity` or `auto`; `horizon_days`: None decides from the
    data (see `resolve`)."""
    chosen = ChurnParams(seed=seed, definition=definition, horizon_days=horizon_days)
    return retrain(
        CHURN,
        tables,
        params=resolve(chosen, tables),
        hooks=ChurnHooks(),
        truth=truth,
        card_dir=card_dir or default_card_dir(),
        on_step=on_step,
    )


# --- revenue at risk and the renewal seam --------------------------------------------------------

AT_RISK_LEVELS = {"rep": "owner_rep_id", "team": "team", "region": "rep_region"}
LIVE_QUARTERS_AHEAD = 1  # the live forecast's renewals use the churn model this far ahead


def revenue_at_risk(
    tables: CrmTables, model: BaseEstimator, *, as_of: pd.Timestamp | str
) -> pd.DataFrame:
    """Churn probability x a year's revenue for each account the model can score at `as_of`.

    Under subscription churn: accounts billed recurring revenue in the last month ended by
    `as_of`; ARR is 12 x that month's recurring bill (`mrr`). Under inactivity churn: customers
    with a purchase in the year before `as_of`; `arr` is their spend over that year net of
    returns (the spend a churned customer takes away), `mrr` empty. Largest at risk first.

    Returns:
        account_id, as_of, owner_rep_id, team, rep_region (the owner's), segment, mrr, arr,
        churn_probability, revenue_at_risk.
    """
    stamp = pd.Timestamp(as_of)
    definition = definition_of(model)
    frame = definition.features_at(tables, stamp)
    subscription = definition is SUBSCRIPTION
    owners = tables.accounts.set_index("account_id")["owner_rep_id"]
    reps = tables.reps.set_index("rep_id")[["team", "region"]]
    owner = owners.reindex(frame["account_id"].to_numpy()).to_numpy()
    out = pd.DataFrame(
        {
            "account_id": frame["account_id"].to_numpy(),
            "as_of": stamp,
            "owner_rep_id": owner,
            "team": reps["team"].reindex(owner).to_numpy(),
            "rep_region": reps["region"].reindex(owner).to_numpy(),
            "segment": definition.segments(frame).to_numpy(),
            "mrr": frame["mrr"].to_numpy(dtype=float) if subscription else np.nan,
        }
    )
    out["arr"] = definition.yearly_revenue(frame)
    out["churn_probability"] = churn_probability(model, frame) if len(frame) else []
    out["revenue_at_risk"] = out["churn_probability"] * out["arr"]
    return out.sort_values("revenue_at_risk", ascending=False, ignore_index=True)


def revenue_at_risk_by(at_risk: pd.DataFrame, level: str) -> pd.DataFrame:
    """`revenue_at_risk` rows summed by `rep`, `team` or `region` (the owner's), largest first."""
    if level not in AT_RISK_LEVELS:
        raise ValueError(f"level must be one of {sorted(AT_RISK_LEVELS)}, not {level!r}")
    column = AT_RISK_LEVELS[level]
    keys = at_risk[column].fillna("(none)")
    grouped = at_risk.groupby(keys).agg(
        accounts=("account_id", "size"),
        arr=("arr", "sum"),
        revenue_at_risk=("revenue_at_risk", "sum"),
        expected_churned_accounts=("churn_probability", "sum"),
    )
    grouped["share_at_risk"] = grouped["revenue_at_risk"] / grouped["arr"].where(grouped["arr"] > 0)
    grouped = grouped.rename_axis(level).reset_index()
    return grouped.sort_values("revenue_at_risk", ascending=False, ignore_index=True)


ChurnScorer = Callable[[pd.DataFrame], np.ndarray]
"""Account feature rows -> P(churn within the horizon) per row (a model, or a served scorer)."""


@dataclass(frozen=True)
class ChurnRenewals:
    """A `renewal_probability` for `forecast.revenue`: P(the account renews) per decision row.

    Called with pending renewal decisions (columns account_id, segment, month: the decision's
    month, at whose end it falls, and as_of), it scores each account with `churn` at that row's
    as_of, from what `tables` recorded by then. `churn` gives P(churn from the first month not
    yet seen to as_of + `horizon_days`); it is turned into one decision's probability:

    - monthly (SMB) renewals: that span holds one decision per month start in it (four from a
      mid-month as_of with 90 days), assumed alike, so P(renew one) = (1 - p) ** (1 / count);
    - term renewals: the account is scored as if its contract ended at the decision (days to
      contract end = days to the decision, which is negative for the decision at the start of
      as_of's month, still unseen; capped inside the horizon), and P(renew) = 1 - p. Decisions
      beyond the horizon are an extrapolation: health as seen today.

    `source` names the model in the forecast's account of itself.
    """

    churn: ChurnScorer
    tables: CrmTables
    source: str = "churn model"
    horizon_days: int = HORIZON_DAYS

    def __call__(self, steps: pd.DataFrame) -> np.ndarray:
        if steps.empty:
            return np.zeros(0)
        rows = steps.reset_index(drop=True)
        pairs = rows[["account_id", "as_of"]].drop_duplicates(ignore_index=True)
        frame = account_features(self.tables, pairs)
        keyed = frame.set_index(["account_id", "as_of"])
        at = keyed.reindex(pd.MultiIndex.from_frame(rows[["account_id", "as_of"]]))
        as_of = pd.to_datetime(rows["as_of"])
        decision_at = pd.to_datetime(rows["month"]) + pd.offsets.MonthBegin(1)
        days = (decision_at - as_of).dt.days.clip(upper=self.horizon_days - 1)
        monthly = (rows["segment"] == "smb").to_numpy()
        at = at.reset_index()
        at["days_to_contract_end"] = np.where(
            monthly, at["days_to_contract_end"], days.to_numpy(dtype=float)
        )
        p = np.asarray(self.churn(at), dtype=float)
        per_span = _month_starts(as_of, self.horizon_days)
        return np.where(monthly, (1 - p) ** (1 / per_span), 1 - p)


def renewal_probability_from(model: BaseEstimator, tables: CrmTables) -> ChurnRenewals:
    """`ChurnRenewals` from a fitted churn model (see `churn_probability`)."""
    return ChurnRenewals(lambda frame: churn_probability(model, frame), tables)


def live_renewals(
    churn: ChurnScorer,
    tables: CrmTables,
    *,
    quarter: str,
    as_of: pd.Timestamp,
    source: str,
    definition: Definition = SUBSCRIPTION,
) -> ChurnRenewals | None:
    """The renewals of the live forecast from the churn champion (of `definition`), for the
    quarter of as_of and the next (as the backtest's `simulation_churn`); None further out,
    where the segment rates stand: health seen today says little about a renewal a year away.
    None for an inactivity model too: it knows nothing of subscriptions and their renewals."""
    if definition is not SUBSCRIPTION:
        return None
    ahead = pd.Period(quarter, "Q").ordinal - pd.Timestamp(as_of).to_period("Q").ordinal
    return ChurnRenewals(churn, tables, source) if 0 <= ahead <= LIVE_QUARTERS_AHEAD else None


def _month_starts(as_of: pd.Series, horizon_days: int) -> np.ndarray:
    """Month starts from the start of each as_of's month to as_of + horizon_days: the monthly
    renewal decisions a churn label's span holds."""
    first = as_of.dt.year * 12 + as_of.dt.month - 1
    end = as_of + pd.Timedelta(days=horizon_days)
    last = end.dt.year * 12 + end.dt.month - 1
    return (last - first + 1).to_numpy(dtype=float)


def fit_churn_renewal(
    tables: CrmTables,
    cutoff: pd.Timestamp,
    *,
    seed: int = 0,
    tree: TreeParams | None = None,
) -> Callable[[pd.DataFrame], np.ndarray]:
    """A `renewal_probability` from a churn model trained on what was known at `cutoff` only.

    The CRM is cut at the cutoff (`tables_as_of`), so churn labels that were not yet knowable
    then are left out; the last three monthly snapshot dates with labels calibrate, the rest
    train. For backtests of the revenue forecast: each quarter gets the model its start allowed.
    """
    known = tables_as_of(tables, cutoff)
    frame = churn_training_frame(
        known, churn_snapshot_dates(known.deals["created_at"].min(), cutoff)
    )
    dates = np.sort(frame["as_of"].unique())
    if len(dates) < 6 or frame[LABEL].nunique() < 2:
        raise ValueError(f"not enough churn history before {cutoff:%Y-%m-%d} to train a model")
    later = frame["as_of"] >= dates[-3]
    model = make_lightgbm(
        ACCOUNT_FEATURES, params=tree or TreeParams(n_estimators=200, n_jobs=1), seed=seed
    )
    model.fit(
        model_input(frame[~later], ACCOUNT_FEATURES), frame.loc[~later, LABEL].to_numpy(dtype=int)
    )
    calibrated = calibrate(
        model,
        model_input(frame[later], ACCOUNT_FEATURES),
        frame.loc[later, LABEL].to_numpy(dtype=int),
        frame.loc[later, "account_id"].to_numpy(),
    ).model
    return renewal_probability_from(calibrated, tables)
