"""One training path for every pipeline: what deal win and account churn share, defined once.

A pipeline is described by a `Pipeline`: its `Task` (name, registered model, experiment, label,
the unit whose snapshots stay together) and the few things that really differ (snapshots and
windows, baselines, the result and its card). `train` and `retrain` run every pipeline the same
way: the leak guard before any fit (`check_leakage`), the candidates (LightGBM and a regularised
logistic regression), their choice and calibration on the calibration slice, the
implausible-AUC canary, MLflow tracking and provenance, the logged model, global importance,
the registry gate and the card with its decision. `forecast.training.win` (win) and
`forecast.training.churn` describe their tasks and import from here, never from each other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from sklearn.metrics import roc_auc_score

from forecast.data.tables import CrmTables
from forecast.data.world import WorldTruth
from forecast.settings import get_settings
from forecast.training.choice import Fitted, check_implausible_auc, fit_and_choose
from forecast.training.on_dask import trained_on
from forecast.training.registry import register_and_gate
from forecast.training.task import CANDIDATES, Pipeline, RetrainOutcome
from forecast.training.tracking import (
    default_card_dir,
    log_fitted,
    log_global_importance,
    log_model,
    log_provenance,
    tracking_run,
)

log = logging.getLogger(__name__)


def train(
    pipeline: Pipeline,
    tables: CrmTables,
    *,
    params: Any,
    hooks: Any,
    truth: WorldTruth | None = None,
    card_dir: Path | None = None,
    on_step: Callable[[str], None] | None = None,
) -> Any:
    """Train, calibrate, evaluate and log one pipeline's model as one MLflow run.

    The steps every pipeline shares: prepare (the pipeline's), the leak guard and the
    candidates, their choice and calibration, the evaluation against the pipeline's baselines,
    the logged model, global importance and provenance.

    Raises:
        NotEnoughDataError: the pipeline's data checks refused.
        LeakageSuspected: the guard refused before any fit, or the test AUC is implausible; the
            run is then marked FAILED and no model is logged.
    """
    task, step = pipeline.task, on_step or (lambda name: None)
    if unknown := set(params.candidates) - set(CANDIDATES):
        raise ValueError(f"unknown candidates {sorted(unknown)}; known: {CANDIDATES}")
    step("snapshots and features")
    data = pipeline.prepare(tables, params, hooks)
    pipeline.report(data)
    s = data.slices
    with tracking_run(task.experiment, run_name=f"{task.model_name} seed {params.seed}") as run:
        pipeline.log_inputs(params, data, hooks)
        log_provenance(data.fingerprint, params.seed, trained_on(pipeline.client))
        step("leak guard, candidates, calibration")
        fitted = fit_and_choose(
            task,
            s,
            data.features,
            params,
            allowed=getattr(params, "allow_columns", ()),
            # a column left out is read by no feature: the guard has nothing to refuse of it
            columns=[
                s
                for s in pipeline.mapped_suspects(tables)
                if s.column not in getattr(params, "leave_out", ())
            ],
            on_step=lambda label: step(f"choosing the model: {label}"),
            client=pipeline.client,
        )
        log_fitted(fitted)
        step("evaluating")
        scores = pipeline.score(data, fitted, truth, params)
        _check_plausible(scores, s.test[task.label].to_numpy(dtype=int), fitted)
        step("logging to MLflow")
        result = pipeline.result(
            run.info.run_id,
            log_model(fitted.calibration.model, s.test, data.features),
            data,
            fitted,
            scores,
            params=params,
            card_path=(card_dir or default_card_dir()) / f"{task.model_name}.md",
        )
        pipeline.log_results(result, scores)
        log_global_importance(result.model, s.test, data.features)
    log.info("logged run %s (model %s)", result.run_id, result.model_uri)
    return result


def _check_plausible(scores: dict, y: np.ndarray, fitted: Fitted) -> None:
    """The canary after the fit: no honest out-of-time model of these outcomes is near perfect
    (`check_implausible_auc`), whichever of LightGBM and the chosen model scores higher."""
    best_auc = max(roc_auc_score(y, scores["lightgbm"]), roc_auc_score(y, scores["model"]))
    check_implausible_auc(float(best_auc), str(fitted.gain_share.index[0]))


def retrain(pipeline: Pipeline, tables: CrmTables, **options: Any) -> RetrainOutcome:
    """`train` (same options), then register the model as challenger, run the gate and record
    its decision on the card."""
    result = train(pipeline, tables, **options)
    on_step = options.get("on_step")
    if on_step:
        on_step("registry gate")
    task = pipeline.task
    decision = register_and_gate(
        task.model_name, result.model_uri, result.run_id, result.evaluation()
    )
    pipeline.write_card(result, decision)  # now with the decision; replaces the run's copy
    client = mlflow.MlflowClient(get_settings().mlflow_tracking_uri)
    client.log_artifact(result.run_id, str(result.card_path), artifact_path="card")
    return RetrainOutcome(task.name, result.run_id, result.metrics, decision)
