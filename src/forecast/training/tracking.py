"""What a training run records: MLflow experiment and run, provenance, the choice, the logged
model, and the model card's shared lines."""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from sklearn.base import BaseEstimator

from forecast.explain.reasons import global_importance
from forecast.explain.scorers import scorer_for
from forecast.features.deal_schema import Feature
from forecast.model import (
    SKOPS_TRUSTED_TYPES,
    model_input,
)
from forecast.settings import disable_telemetry, get_settings
from forecast.training.choice import Fitted
from forecast.training.drift import (
    METHODS,
    DriftReport,
)
from forecast.training.home_store import artifact_root, follow_moved_home
from forecast.training.leakage import Suspect

log = logging.getLogger(__name__)

RUNTIME_PACKAGES = ("lightgbm", "scikit-learn", "skops", "pandas", "numpy", "scipy")


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


def ensure_experiment(name: str) -> str:
    """The experiment's id in the project's store, created with its artifacts under FORECAST_HOME.

    `make train` calls this before `mlflow run`, which would otherwise create the experiment
    with its artifacts in `./mlruns`.
    """
    disable_telemetry()
    follow_moved_home()
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


def allowed_card_lines(allow_columns: Sequence[str]) -> list[str]:
    """The model card's line for the columns a person let past the leak guard, if any."""
    if not allow_columns:
        return []
    return [
        f"- Let past the leak guard by a person: {', '.join(allow_columns)} (`--allow-column`)."
    ]


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
            "(sigmoid, isotonic) or a shift is kept only where it beat none in every one of",
            "those windows; a model left without a map is refitted on every row before the test",
            "slice, and with a shift its log-odds then move as far as the base rate moved from",
            "what the model fitted before the latest window expected there (a bet that the move",
            "goes on). A candidate that bends a declared monotone feature the wrong way is not",
            "eligible.",
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


def log_provenance(fingerprint: str, seed: int, trained_on: str = "one process") -> None:
    """Tags every run carries: data fingerprint, code, seed, package versions and where the
    model was trained (`forecast.training.on_dask.trained_on`)."""
    mlflow.set_tags(
        {"data_fingerprint": fingerprint, "code_version": code_version(), "seed": str(seed)}
        | {"trained_on": trained_on}
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
