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

import contextlib
import hashlib
import importlib.metadata
import logging
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from sklearn.base import BaseEstimator
from sklearn.metrics import roc_auc_score

from forecast.data.tables import CrmTables
from forecast.data.world import WorldTruth
from forecast.explain.reasons import global_importance
from forecast.explain.scorers import scorer_for
from forecast.features.deals import Feature
from forecast.model import (
    CALIBRATION_METHODS,
    SKOPS_TRUSTED_TYPES,
    Calibration,
    TreeParams,
    base_pipeline,
    calibrate,
    calibration_scores,
    make_lightgbm,
    make_logistic,
    model_input,
    monotone_violations,
)
from forecast.settings import disable_telemetry, get_settings
from forecast.training import evaluate
from forecast.training.drift import (
    BASE_RATE,
    METHODS,
    UNCALIBRATED,
    Choice,
    DriftReport,
    Separation,
    calibrated,
    drift_report,
    evaluate_folds,
    fit_weighted,
    recency_weights,
    rolling_folds,
)
from forecast.training.leakage import LeakageSuspected, Suspect, refuse, screen_features
from forecast.training.registry import Evaluation, GateDecision, register_and_gate

log = logging.getLogger(__name__)

CANDIDATES = ("lightgbm", "logistic")
RUNTIME_PACKAGES = ("lightgbm", "scikit-learn", "skops", "pandas", "numpy", "scipy")
LEAKAGE_AUC = 0.99  # no honest out-of-time model of these outcomes gets this close to perfect

__all__ = ["LeakageSuspected", "NotEnoughDataError", "Task"]


@dataclass(frozen=True)
class Task:
    """What one pipeline is about: names, label and unit.

    Attributes:
        name: the pipeline's name (`win`, `churn`), as in `forecast retrain`.
        model_name: the registered model.
        experiment: the MLflow experiment.
        label: the 0/1 column the model predicts.
        group: the unit whose snapshots stay on one side of a fold (a deal, an account).
        purge_group: a unit seen in a later part of a fold leaves the earlier part (a deal's
            label is its final outcome, the same in every snapshot); else the parts are kept
            apart by the label window (`horizon_days` of the params), as churn's are.
    """

    name: str
    model_name: str
    experiment: str
    label: str
    group: str
    purge_group: bool = True


class Prepared(Protocol):
    """The data side of a run, as every pipeline's `prepare` returns it."""

    slices: Slices
    features: tuple[Feature, ...]
    fingerprint: str


class TrainResult(Protocol):
    """What every pipeline's run produced, as the shared path reads it."""

    run_id: str
    model_uri: str
    model: BaseEstimator
    metrics: pd.DataFrame
    card_path: Path

    def evaluation(self) -> Evaluation: ...


class Pipeline(Protocol):
    """A task description: everything that differs between win and churn, and nothing else.

    `train` and `retrain` below are the one path every pipeline runs through. Each pipeline's
    data and result are its own classes, read here through `Prepared` and `TrainResult`
    (typed `Any` in the methods, which each pipeline narrows to its own).
    """

    task: Task

    def prepare(self, tables: CrmTables, params: Any, hooks: Any) -> Any:
        """Snapshots, features, labels, the class checks and the out-of-time slices."""

    def report(self, data: Any) -> None:
        """Log what was prepared: slice sizes, windows, what is off."""

    def log_inputs(self, params: Any, data: Any, hooks: Any) -> None:
        """The run's parameters and the slices' sizes (provenance is logged by the path)."""

    def mapped_suspects(self, tables: CrmTables) -> list[Suspect]:
        """Columns the leak guard suspects before any feature is built."""

    def score(
        self, data: Any, fitted: Fitted, truth: WorldTruth | None, params: Any
    ) -> dict[str, np.ndarray]:
        """P(label) on the test rows: the model, its baselines, the truth where known."""

    def result(
        self,
        run_id: str,
        model_uri: str,
        data: Any,
        fitted: Fitted,
        scores: Mapping[str, np.ndarray],
        *,
        params: Any,
        card_path: Path,
    ) -> Any:
        """The run's result from its parts."""

    def log_results(self, result: Any, scores: Mapping[str, np.ndarray]) -> None:
        """Metrics, plots, tables and the model card of the run."""

    def write_card(self, result: Any, decision: GateDecision | None) -> Path:
        """The model card, with the gate's decision once there is one."""


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
        log_provenance(data.fingerprint, params.seed)
        step("leak guard, candidates, calibration")
        fitted = fit_and_choose(
            task,
            s,
            data.features,
            params,
            allowed=getattr(params, "allow_columns", ()),
            columns=pipeline.mapped_suspects(tables),
            on_step=lambda label: step(f"choosing the model: {label}"),
        )
        log_fitted(fitted)
        step("evaluating")
        scores = pipeline.score(data, fitted, truth, params)
        y = s.test[task.label].to_numpy(dtype=int)
        best_auc = max(roc_auc_score(y, scores["lightgbm"]), roc_auc_score(y, scores["model"]))
        check_implausible_auc(float(best_auc), str(fitted.gain_share.index[0]))
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


class Slices(Protocol):
    """The out-of-time slices every pipeline has, and every labelled row before the test."""

    train: pd.DataFrame
    calibration: pd.DataFrame
    test: pd.DataFrame
    history: pd.DataFrame


class ModelParams(Protocol):
    """What the shared steps read of a pipeline's parameters."""

    seed: int
    tree: TreeParams
    logistic_c: float
    candidates: tuple[str, ...]
    half_lives: tuple[int | None, ...]  # recency weightings to try (days; None: equal weights)
    rolling_folds: int  # held-out windows the choice is made on


class NotEnoughDataError(ValueError):
    """Too few labelled units (closed deals, accounts), or a slice without both outcomes."""


def fingerprint(frame: pd.DataFrame, columns: Sequence[str]) -> str:
    """SHA-256 of the training inputs (keys, features, labels), independent of row index."""
    digest = hashlib.sha256(",".join(columns).encode())
    hashed = pd.util.hash_pandas_object(frame[list(columns)], index=False).to_numpy()
    digest.update(hashed.tobytes())
    return digest.hexdigest()


# --- model choice --------------------------------------------------------------------------------


def candidate_makers(
    features: Sequence[Feature], params: ModelParams
) -> dict[str, Callable[[], BaseEstimator]]:
    """Every candidate, unfitted. `params` needs `tree`, `seed` and `logistic_c`."""
    return {
        "lightgbm": lambda: make_lightgbm(features, params=params.tree, seed=params.seed),
        "logistic": lambda: make_logistic(features, c=params.logistic_c, seed=params.seed),
    }


def fit_candidates(
    train: pd.DataFrame,
    features: Sequence[Feature],
    params: ModelParams,
    *,
    label: str,
    half_lives: Mapping[str, int | None] | None = None,
) -> dict[str, BaseEstimator]:
    """Every candidate fitted on the train slice (LightGBM always: the leakage canary reads it),
    each with its recency weighting (`half_lives`: candidate -> days; default equal weights)."""
    x, y = model_input(train, features), train[label].to_numpy(dtype=int)
    makers = candidate_makers(features, params)
    half_lives = half_lives or {}
    return {
        name: fit_weighted(
            makers[name](), x, y, recency_weights(train["as_of"], half_lives.get(name))
        )
        for name in CANDIDATES
    }


def gain_shares(model: BaseEstimator) -> pd.Series:
    """Each feature's share of the LightGBM pipeline's total split gain, largest first."""
    lgbm = base_pipeline(model).named_steps["lgbm"]
    gain = pd.Series(lgbm.booster_.feature_importance("gain"), index=lgbm.booster_.feature_name())
    return (gain / gain.sum()).sort_values(ascending=False)


def check_leakage(
    train: pd.DataFrame,
    test: pd.DataFrame,
    features: Sequence[Feature],
    *,
    label: str,
    allowed: Sequence[str] = (),
    columns: Sequence[Suspect] = (),
) -> tuple[list[Suspect], dict[str, float]]:
    """Before any fit: refuse every feature (or mapped column) that knows the outcome.

    Args:
        train, test: the out-of-time slices (a single feature is learned on train, scored on
            test).
        features: the model's features.
        allowed: columns or features a person has checked and allows.
        label: the label column.
        columns: suspects already found in the mapped columns (`leakage.screen_columns`).

    Returns:
        The allowed suspects and each feature's single-feature out-of-time AUC.

    Raises:
        LeakageSuspected: naming each suspect, its evidence and the fix.
    """
    suspects, aucs = screen_features(train, test, features, label)
    return refuse([*columns, *suspects], allowed), aucs


def check_implausible_auc(test_auc: float, top_feature: str) -> None:
    """After the fit: no honest out-of-time model of these outcomes gets this close to perfect."""
    if test_auc > LEAKAGE_AUC:
        raise LeakageSuspected(
            f"suspected leakage: out-of-time AUC {test_auc:.4f} > {LEAKAGE_AUC} "
            f"({top_feature} carries the most gain); check which columns are known only at "
            "the close"
        )


def choose(
    fitted: Mapping[str, BaseEstimator],
    calibration: pd.DataFrame,
    features: Sequence[Feature],
    allowed: Sequence[str],
    *,
    label: str = "won",
    group: str = "deal_id",
) -> tuple[str, pd.DataFrame]:
    """The eligible candidate with the lowest out-of-fold calibrated log loss (calibration slice).

    A candidate that bends a declared monotone feature the wrong way is not eligible. Folds are
    grouped by `group` (a deal's, or an account's, snapshots stay on one side).
    """
    x = model_input(calibration, features)
    y = calibration[label].to_numpy(dtype=int)
    groups = calibration[group].to_numpy()
    rows = {}
    for name in allowed:
        violations = monotone_violations(fitted[name], features)
        rows[name] = calibration_scores(fitted[name], x, y, groups) | {
            "not eligible": "; ".join(violations)
        }
        if violations:
            log.warning("%s not eligible: against declared direction: %s", name, violations)
    table = pd.DataFrame(rows).T.rename_axis("candidate")
    eligible = table[table["not eligible"] == ""]
    best = eligible[list(CALIBRATION_METHODS)].astype(float).min(axis=1).idxmin()
    return str(best), table


def flat_metrics(
    table: pd.DataFrame, prefixes: Mapping[str, str], *, rate_name: str
) -> dict[str, float]:
    """`test_auc`, `baseline_stage_fixed_log_loss`, `truth_auc`, ... from the contenders table.

    Shared by every pipeline: `prefixes` names each contender's metrics, `rate_name` the test
    slice's positive rate.
    """
    return {
        f"{prefixes.get(name, f'baseline_{name}')}_{metric}": float(value)
        for name, row in table.iterrows()
        for metric, value in row.items()
        if metric in (*evaluate.METRICS, "mean_predicted") and np.isfinite(value)
    } | {
        "test_rows": float(table.loc["model", "n"]),
        rate_name: float(table.loc["model", "win_rate"]),
    }


# --- provenance ----------------------------------------------------------------------------------


def code_version() -> str:
    """The git commit of the source checkout (with `+dirty`), else the package version.

    Read-only git calls; GIT_OPTIONAL_LOCKS=0 keeps `git status` from refreshing the index.
    """
    here = Path(__file__).resolve().parent
    env = os.environ | {"GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(here), *args],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
            check=True,
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return f"forecast {importlib.metadata.version('forecast')}"
    return commit + ("+dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    names = ("forecast", "mlflow", *RUNTIME_PACKAGES)
    return {name: importlib.metadata.version(name) for name in names}


def default_card_dir() -> Path:
    """`$FORECAST_HOME/models`: running the product never writes into a source checkout.

    The cards in the repository's `models/` are the default world's, copied there on purpose
    with `make cards`.
    """
    return get_settings().home.expanduser() / "models"


def artifact_root() -> str | None:
    """`$FORECAST_HOME/mlartifacts` for a local (sqlite or file) store, else the server's choice.

    Without it MLflow puts a database-backed store's artifacts in `./mlruns` of whatever
    directory the command runs from.
    """
    settings = get_settings()
    if settings.mlflow_tracking_uri.startswith(("sqlite:", "file:", "/")):
        return (settings.home.expanduser().resolve() / "mlartifacts").as_uri()
    return None


def ensure_experiment(name: str) -> str:
    """The experiment's id in the project's store, created with its artifacts under FORECAST_HOME.

    `make train` calls this before `mlflow run`, which would otherwise create the experiment
    with its artifacts in `./mlruns`.
    """
    disable_telemetry()
    client = mlflow.MlflowClient(get_settings().mlflow_tracking_uri)
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name, artifact_location=artifact_root())
    root = artifact_root()
    if root and not found.artifact_location.startswith(root.rstrip("/")):
        log.warning(
            "experiment %s keeps its artifacts in %s, not under FORECAST_HOME (%s): it was "
            "created by another tool",
            name,
            found.artifact_location,
            root,
        )
    return found.experiment_id


@contextlib.contextmanager
def tracking_run(experiment: str, run_name: str) -> Iterator[mlflow.ActiveRun]:
    """One MLflow run in the project's store (the tracking URI always comes from settings).

    `mlflow run` hands its own run to the command through MLFLOW_RUN_ID; that run is adopted
    only when it lives in the project's store, else it is left alone with a warning.
    """
    disable_telemetry()
    uri = get_settings().mlflow_tracking_uri
    # read before set_tracking_uri, which writes MLFLOW_TRACKING_URI into the environment
    launcher_uri = os.environ.get("MLFLOW_TRACKING_URI")
    launcher_run = os.environ.pop("MLFLOW_RUN_ID", None)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if launcher_run and launcher_uri != uri:
        log.warning(
            "launched by `mlflow run` with tracking URI %s, not the project's store %s: logging "
            "to a new run there (set MLFLOW_TRACKING_URI=%s to log into the launcher's run)",
            launcher_uri,
            uri,
            uri,
        )
        launcher_run = None
    experiment_id = ensure_experiment(experiment)
    with mlflow.start_run(
        run_id=launcher_run, experiment_id=experiment_id, run_name=run_name
    ) as run:
        yield run


@dataclass(frozen=True)
class Fitted:
    """The fitted candidates, the LightGBM gain shares, the calibrated choice, the guard's word,
    and what the choice saw (the drift report)."""

    candidates: Mapping[str, BaseEstimator]
    gain_share: pd.Series
    chosen: str
    selection: pd.DataFrame
    calibration: Calibration
    allowed: tuple[Suspect, ...] = ()  # suspects a person allowed
    single_auc: Mapping[str, float] = field(default_factory=dict)  # each feature alone
    drift: DriftReport | None = None
    half_life: int | None = None  # of the chosen candidate's recency weights (days)


def choose_and_calibrate(
    task: Task,
    calibration: pd.DataFrame,
    features: Sequence[Feature],
    candidates: Mapping[str, BaseEstimator],
    shares: pd.Series,
    allowed: Sequence[str],
) -> Fitted:
    """Pick the candidate on the calibration slice and fit its calibration map there (when the
    history is too short for held-out windows)."""
    chosen, selection = choose(
        candidates, calibration, features, allowed, label=task.label, group=task.group
    )
    x, y = model_input(calibration, features), calibration[task.label].to_numpy(dtype=int)
    scores = selection.loc[chosen, list(CALIBRATION_METHODS)].astype(float).to_dict()
    fitted = calibrate(candidates[chosen], x, y, calibration[task.group].to_numpy(), scores)
    log.info("%s: chose %s with %s calibration", task.name, chosen, fitted.method)
    return Fitted(candidates, shares, chosen, selection, fitted)


def choose_over_windows(
    task: Task,
    slices: Slices,
    features: Sequence[Feature],
    params: ModelParams,
    choice: Choice,
    before_test: pd.DataFrame,
) -> Fitted:
    """Each candidate fitted on the train slice with its best half-life; the eligible one with
    the lowest recency-weighted held-out log loss is calibrated on the calibration slice with
    its best map, or, when no map beat none, refitted on every row before the test slice
    (`before_test`) and left uncalibrated, as the held-out windows judged it."""
    plan = {name: choice.best(name) for name in params.candidates}
    candidates = fit_candidates(
        slices.train, features, params, label=task.label,
        half_lives={name: half_life for name, (half_life, _, _) in plan.items()},
    )  # fmt: skip
    rows = {}
    for name, (half_life, method, loss) in plan.items():
        violations = monotone_violations(candidates[name], features)
        if violations:
            log.warning("%s not eligible: against declared direction: %s", name, violations)
        by_method = choice.by_method(name, half_life)
        days = "none" if half_life is None else f"{half_life} days"
        rows[name] = {"half_life": days, **by_method.to_dict(), "method": method,
                      "log_loss": loss, "not eligible": "; ".join(violations)}  # fmt: skip
    selection = pd.DataFrame(rows).T.rename_axis("candidate")
    eligible = selection[selection["not eligible"] == ""]
    chosen = str(eligible["log_loss"].astype(float).idxmin())
    half_life, method, _ = plan[chosen]
    x = model_input(slices.calibration, features)
    y = slices.calibration[task.label].to_numpy(dtype=int)
    scores = {m: float(selection.loc[chosen, m]) for m in METHODS}
    if method == UNCALIBRATED:
        weights = recency_weights(before_test["as_of"], half_life)
        x_all, y_all = model_input(before_test, features), before_test[task.label].to_numpy(int)
        model = fit_weighted(candidate_makers(features, params)[chosen](), x_all, y_all, weights)
    else:
        model = calibrated(candidates[chosen], x, y, method)
    calibration = Calibration(model, method, scores)
    log.info(
        "%s: chose %s (half-life %s) with %s calibration over %d windows",
        task.name, chosen, half_life, method, choice.windows["fold"].nunique(),
    )  # fmt: skip
    chosen_plan = {name: (h, m) for name, (h, m, _) in plan.items()}
    chosen_plan[BASE_RATE] = (None, UNCALIBRATED)  # how the simplest rule did, window by window
    return Fitted(
        candidates, gain_shares(candidates["lightgbm"]), chosen, selection, calibration,
        drift=drift_report(slices, features, task.label, choice, chosen_plan),
        half_life=half_life,
    )  # fmt: skip


def fit_and_choose(
    task: Task,
    slices: Slices,
    features: Sequence[Feature],
    params: ModelParams,
    *,
    allowed: Sequence[str] = (),
    columns: Sequence[Suspect] = (),
    window: int | None = None,
    on_step: Callable[[str], None] | None = None,
) -> Fitted:
    """The leak guard, then every candidate evaluated over rolling windows, chosen, fitted on
    the train slice and calibrated (see `forecast.training.drift`).

    Args:
        task: the pipeline.
        slices: train, calibration and test frames (the guard learns on train, scores test), and
            the history before the test slice (the rolling windows).
        features: the model's features.
        params: candidates and their settings.
        allowed: columns a person allows past the guard.
        columns: suspects already found in the mapped columns.
        window: snapshot dates in each held-out window (default: as many as the test slice).
        on_step: told which held-out window is being fitted (progress).

    Raises:
        LeakageSuspected: the guard refused; nothing was fitted.
    """
    kept, single_auc = check_leakage(
        slices.train, slices.test, features, label=task.label, allowed=allowed, columns=columns
    )
    separation = Separation(
        task.group, task.purge_group, pd.Timedelta(days=getattr(params, "horizon_days", 0))
    )
    folds = rolling_folds(
        slices.history,
        window=window or slices.test["as_of"].nunique(),
        label=task.label,
        separation=separation,
        folds=params.rolling_folds,
    )
    if folds:
        makers = candidate_makers(features, params)
        choice = evaluate_folds(
            folds, {name: makers[name] for name in params.candidates}, features,
            label=task.label, half_lives=params.half_lives, on_step=on_step,
        )  # fmt: skip
        before_test = separation.earlier(slices.history, slices.test)
        chosen = choose_over_windows(task, slices, features, params, choice, before_test)
    else:
        log.warning("%s: too little history for held-out windows; choosing on one slice", task.name)
        candidates = fit_candidates(slices.train, features, params, label=task.label)
        shares = gain_shares(candidates["lightgbm"])
        chosen = choose_and_calibrate(
            task, slices.calibration, features, candidates, shares, params.candidates
        )
        chosen = replace(chosen, drift=drift_report(slices, features, task.label, None, {}))
    return replace(chosen, allowed=tuple(kept), single_auc=single_auc)


def log_choice(result: Any) -> None:
    """The choice on the active MLflow run: each candidate's held-out log loss per calibration,
    the chosen candidate, calibration and half-life, and the drift tables as artifacts."""
    methods = [m for m in METHODS if m in result.selection.columns]
    mlflow.log_metrics(
        {
            f"selection_{c}_{m}_log_loss": float(row[m])
            for c, row in result.selection.iterrows()
            for m in methods
            if pd.notna(row[m])
        }
    )
    half_life = "none" if result.half_life is None else str(result.half_life)
    mlflow.set_tags(
        {"candidate": result.candidate, "calibration": result.calibration_method,
         "half_life_days": half_life}
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        result.selection.to_csv(folder / "selection.csv")
        if result.drift is not None:
            result.drift.windows.to_csv(folder / "held_out_windows.csv", index=False)
            result.drift.base_rates.to_csv(folder / "base_rate_by_quarter.csv", index=False)
            result.drift.moved.to_csv(folder / "feature_drift_psi.csv", index=False)
        mlflow.log_artifacts(str(folder), artifact_path="evaluation")


def choice_card_lines(result: Any, unit: str) -> list[str]:
    """The card's sections on the choice, the held-out windows and the drift they saw.

    `result` has candidate, calibration_method, half_life, selection and drift; `unit` names
    what the folds group by ("deal", "account").
    """
    report: DriftReport | None = result.drift
    selection = result.selection.rename_axis("candidate").reset_index()
    half_life = "no" if result.half_life is None else f"a {result.half_life}-day"
    lines = ["## Candidates and calibration", ""]
    if report is not None and report.folds:
        lines += [
            f"Chosen: **{result.candidate}**, calibrated with **{result.calibration_method}**,",
            f"with {half_life} half-life on its rows' age, by log loss on {report.folds} held-out",
            "windows before the test slice. Each window's models are fitted on what came before",
            "it and calibrated on the window before it; the latest window weighs most, each",
            "earlier one half as much. A half-life weighs recent rows more; a calibration map",
            "(sigmoid, isotonic) is kept only where it beat none in every one of those windows;",
            "a model left without one is refitted on every row before the test slice. A",
            "candidate that bends a declared monotone feature the wrong way is not eligible.",
            "Recency-weighted held-out log loss per calibration, at each candidate's best",
            "half-life:",
            "",
            markdown(selection, 4),
            "",
            "Each candidate per held-out window, at its chosen half-life and calibration, and",
            "the base rate (the positive share of every row before the window):",
            "",
            markdown(report.windows, 4),
        ]
    else:
        lines += [
            f"Chosen: **{result.candidate}**, calibrated with **{result.calibration_method}** on",
            "the calibration slice (too little history for held-out windows). Both picked by",
            f"out-of-fold log loss on that slice (5 folds grouped by {unit}; in-sample, isotonic",
            "would always win). A candidate that bends a declared monotone feature the wrong way",
            "is not eligible.",
            "",
            markdown(selection, 4),
        ]
    if report is None:
        return lines
    return [
        *lines,
        "",
        "## Drift",
        "",
        "Positive rate by quarter (labelled snapshots):",
        "",
        markdown(report.base_rates, 3),
        "",
        "Features whose distribution moved most from the train to the test slice (population",
        "stability index; above 0.25 is usually read as a large shift):",
        "",
        markdown(report.moved, 3),
    ]


def log_fitted(fitted: Fitted) -> None:
    """The guard's findings and the gain shares, on the active MLflow run."""
    log_guard(fitted.allowed, fitted.single_auc)
    mlflow.log_metric("gain_share_max", float(fitted.gain_share.iloc[0]))
    mlflow.set_tag("gain_share_top", str(fitted.gain_share.index[0]))


def log_provenance(fingerprint: str, seed: int) -> None:
    """Tags every run carries: data fingerprint, code, seed and package versions."""
    mlflow.set_tags(
        {"data_fingerprint": fingerprint, "code_version": code_version(), "seed": str(seed)}
        | {f"version.{k}": v for k, v in package_versions().items()}
    )


def log_guard(allowed: Sequence[Suspect], single_auc: Mapping[str, float]) -> None:
    """The leak guard's findings: each feature's AUC alone, and what a person allowed."""
    mlflow.log_dict({k: round(v, 4) for k, v in single_auc.items()}, "leak_guard/single_auc.json")
    if allowed:
        mlflow.set_tag("allowed_columns", "; ".join(str(a) for a in allowed))


def log_global_importance(
    model: BaseEstimator, frame: pd.DataFrame, features: Sequence[Feature]
) -> pd.Series:
    """Mean absolute attribution per feature on the test slice, logged with this model version."""
    importance = global_importance(scorer_for(model, features), frame)
    mlflow.log_dict(
        {name: round(float(v), 6) for name, v in importance.items()},
        "explain/global_importance.json",
    )
    return importance


def log_model(model: BaseEstimator, test: pd.DataFrame, features: Sequence[Feature]) -> str:
    """The calibrated pipeline as one MLflow model; through pyfunc it returns probabilities.

    pyfunc output: an (n, 2) array, column 1 = P(won). Saved with skops (no pickle) and an
    explicit list of trusted types; the `forecast` package must be importable where it loads.
    """
    example = model_input(test.head(5), features)
    signature = infer_signature(example, model.predict_proba(example))
    versions = package_versions()
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=signature,
        input_example=example,
        pyfunc_predict_fn="predict_proba",
        serialization_format="skops",
        skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
        # explicit: inferring requirements re-imports the model in a subprocess (slow)
        pip_requirements=[f"mlflow=={versions['mlflow']}"]
        + [f"{p}=={versions[p]}" for p in RUNTIME_PACKAGES],
    )
    return info.model_uri


def markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}f}"
        return str(v)

    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


@dataclass(frozen=True)
class RetrainOutcome:
    pipeline: str
    run_id: str
    metrics: pd.DataFrame
    decision: GateDecision
