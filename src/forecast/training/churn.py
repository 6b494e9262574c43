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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from forecast.data.tables import CrmTables
from forecast.data.world import WorldTruth
from forecast.features.deal_schema import model_features
from forecast.model import (
    model_input,
)
from forecast.training import evaluate
from forecast.training.choice import Fitted, flat_metrics
from forecast.training.churn_card import METRIC_PREFIX, ChurnTrainResult, write_card
from forecast.training.churn_task import (
    GATE_BASELINES,
    LABEL,
    SUBSCRIPTION,
    TASK,
    ChurnFacts,
    ChurnHooks,
    ChurnParams,
    Prepared,
    churn_facts,
    definition_of,
    horizon_of,
    prepare,
    resolve,
)
from forecast.training.registry import GateDecision
from forecast.training.shared import retrain, train
from forecast.training.task import RetrainOutcome
from forecast.training.tracking import (
    code_version,
    default_card_dir,
    log_choice,
)

if TYPE_CHECKING:
    from distributed import Client

    from forecast.cluster import Progress

log = logging.getLogger(__name__)


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
        scores["truth"] = truth_probability(truth, s.test, horizon_of(params))
    return scores


class ChurnPipeline:
    """The account churn task: monthly account snapshots, an embargo, the rate-table baseline;
    `forecast.training.shared` runs it."""

    task = TASK

    def __init__(
        self,
        client: Client | None = None,
        progress: Progress | None = None,
        parts: Path | None = None,
        facts: ChurnFacts | None = None,
    ):
        self.client = client  # a Dask client: its cluster computes the features, LightGBM
        self.progress = progress  # hears the cluster's parts of the features finish
        # a store in parts whose workers read their own parts (the tables given hold only the
        # reps and products), and the export's `ChurnFacts` when already made
        self.parts, self.facts = parts, facts

    def prepare(self, tables: CrmTables, params: ChurnParams, hooks: ChurnHooks) -> Prepared:
        return prepare(tables, params, hooks, self.client, self.progress, self.parts, self.facts)

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


def retrain_churn(
    tables: CrmTables,
    *,
    truth: WorldTruth | None = None,
    seed: int = 0,
    definition: str = "auto",
    horizon_days: int | None = None,
    allow_columns: tuple[str, ...] = (),
    card_dir: Path | None = None,
    on_step: Callable[[str], None] | None = None,
    client: Client | None = None,
    progress: Progress | None = None,
    parts: Path | None = None,
) -> RetrainOutcome:
    """Train the churn model, register it as challenger and run the registry's gate.

    `definition`: `subscription`, `inactivity` or `auto`; `horizon_days`: None decides from the
    data (see `resolve`); `allow_columns`: what a person checked and the leak guard lets pass;
    `client`: a Dask client whose cluster computes the features;
    `parts`: the version folder of a store in parts, read by the cluster's workers (`tables`
    then need hold only the reps and products)."""
    given = (("definition", definition != "auto"), ("horizon_days", horizon_days is not None))
    chosen = ChurnParams(
        seed=seed,
        definition=definition,
        horizon_days=horizon_days,
        allow_columns=allow_columns,
        given=tuple(name for name, set_by_person in given if set_by_person),
    )
    facts = churn_facts(tables, client, parts)
    return retrain(
        ChurnPipeline(client, progress, parts, facts) if client is not None else CHURN,
        tables,
        params=resolve(chosen, facts),
        hooks=ChurnHooks(),
        truth=truth,
        card_dir=card_dir or default_card_dir(),
        on_step=on_step,
    )
