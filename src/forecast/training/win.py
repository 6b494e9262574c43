"""Train the deal win model out of time, check it against baselines, log one MLflow run.

The time line, from the export's as-of (`tables.as_of`) backwards, on weekly snapshots:

    | train ... | calibration (91 d) | test (91 d) | label lag (120 d) | as-of

- test: the latest slice whose labels are known. Deals still open at the as-of have no label, so
  test snapshots end `label_lag_days` (120) before it: 95 % of closed deals close within 94 days
  of creation on the default world, so almost every test deal is resolved (the share that is
  not, and so is dropped, is logged as `test_unlabelled_share`).
- calibration: the slice before, where the probability map (sigmoid or isotonic) is fitted.
- train: everything earlier.

The candidate, its half-life and its map (or none) are chosen on three held-out windows before
the test slice, shifted back a window at a time (`forecast.training.drift`).

A deal's weekly snapshots can fall in several slices. The train slice drops every deal that is
also in a later slice, so the trees never see a test deal's label (this is also what a model
trained at the end of the train window could have known: those deals were still open).
The model logged is the one tested: trained up to the train window's end and calibrated on
the next slice (about seven months behind the export when it is registered), or, when no map
beat none in every held-out window, trained up to the calibration window's end and not mapped.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
from sklearn.metrics import log_loss

from forecast.data.tables import CrmTables
from forecast.data.world import WorldTruth
from forecast.features.deal_schema import ATTRIBUTE_PREFIX
from forecast.features.on_dask import OWN_TABLES, on_parts
from forecast.model import model_input
from forecast.training import evaluate
from forecast.training.choice import Fitted, flat_metrics
from forecast.training.leakage import (
    Suspect,
    creation_values,
    joined_creation_values,
    screen_columns,
    screen_values,
)
from forecast.training.registry import GateDecision
from forecast.training.shared import retrain, train
from forecast.training.task import RetrainOutcome
from forecast.training.tracking import (
    code_version,
    default_card_dir,
    log_choice,
)
from forecast.training.win_card import WinTrainResult, write_card
from forecast.training.win_task import (
    METRIC_PREFIX,
    TASK,
    OnCluster,
    Prepared,
    TrainHooks,
    WinParams,
    prepare,
    warn_if_little,
)

if TYPE_CHECKING:
    from distributed import Client

    from forecast.cluster import Progress

log = logging.getLogger(__name__)


def baseline_scores(data: Prepared) -> dict[str, np.ndarray]:
    """The simple baselines learned on the train slice, scored on the test rows: the base
    rate, the stage rules where the data has stages, and the best per-column rule."""
    attributes = tuple(f.name for f in data.features if f.name.startswith(ATTRIBUTE_PREFIX))
    baselines, _ = evaluate.simple_baselines(
        data.slices.train,
        data.slices.test,
        unavailable=list(data.unavailable),
        columns=(*evaluate.RULE_COLUMNS, *attributes),
    )
    return baselines


def score_test(data: Prepared, fitted: Fitted, truth: WorldTruth | None) -> dict[str, np.ndarray]:
    """P(won) on the test rows from the model, its uncalibrated self and every baseline."""
    test = data.slices.test
    x = model_input(test, data.features)
    lightgbm = fitted.candidates["lightgbm"].predict_proba(x)[:, 1]
    baselines = baseline_scores(data)
    scores = {
        "model": fitted.calibration.model.predict_proba(x)[:, 1],
        "model_uncalibrated": fitted.candidates[fitted.chosen].predict_proba(x)[:, 1],
        **baselines,
        "logistic": fitted.candidates["logistic"].predict_proba(x)[:, 1],
        "lightgbm": lightgbm,
    }
    if truth is not None:
        scores["truth"] = truth.win_probability(test["deal_id"], test["stage"])
    return scores


class WinPipeline:
    """The deal win task: weekly deal snapshots, windows fitted to the data, stage and rule
    baselines; `forecast.training.shared` runs it. With a Dask `client`, the snapshots'
    features are computed by its cluster (docs/scale.md)."""

    task = TASK

    def __init__(
        self,
        client: Client | None = None,
        progress: Progress | None = None,
        parts: Path | None = None,
    ):
        self.client = client  # a Dask client: its cluster computes the features, LightGBM
        # `progress` hears the cluster's parts of the features finish; `parts`: a store in parts
        # whose workers read their own parts (the tables given hold none of the deals' rows)
        self.cluster = OnCluster(client, progress, parts) if client is not None else None

    def prepare(self, tables: CrmTables, params: WinParams, hooks: TrainHooks) -> Prepared:
        return prepare(tables, params, hooks, self.cluster)

    def report(self, data: Prepared) -> None:
        s = data.slices
        log.info(
            "win model: %s train, %s calibration, %s test snapshots (%s)",
            *(f"{len(part):,}" for part in (s.train, s.calibration, s.test)),
            "; ".join(f"{k} {v}" for k, v in data.windows.describe().items()),
        )
        warn_if_little(s)
        for reason in dict.fromkeys(data.unavailable.values()):
            names = [n for n, r in data.unavailable.items() if r == reason]
            log.warning("features off (%s): %s", reason, ", ".join(names))

    def log_inputs(self, params: WinParams, data: Prepared, hooks: TrainHooks) -> None:
        _log_inputs(params, data, hooks)

    def mapped_suspects(self, tables: CrmTables) -> list[Suspect]:
        if self.cluster is None or self.cluster.parts is None:
            return screen_columns(tables)
        read = (*OWN_TABLES, "accounts")  # a part holds its deals' accounts
        made = on_parts(self.cluster.client, self.cluster.parts, read, creation_values)
        return screen_values(joined_creation_values(made))

    def score(
        self, data: Prepared, fitted: Fitted, truth: WorldTruth | None, params: WinParams
    ) -> dict[str, np.ndarray]:
        return score_test(data, fitted, truth)

    def result(
        self,
        run_id: str,
        model_uri: str,
        data: Prepared,
        fitted: Fitted,
        scores: Mapping[str, np.ndarray],
        *,
        params: WinParams,
        card_path: Path,
    ) -> WinTrainResult:
        test = data.slices.test
        y = test["won"].to_numpy(dtype=int)
        return WinTrainResult(
            run_id=run_id,
            model_uri=model_uri,
            model=fitted.calibration.model,
            candidate=fitted.chosen,
            calibration_method=fitted.calibration.method,
            selection=fitted.selection,
            drift=fitted.drift,
            half_life=fitted.half_life,
            metrics=evaluate.compare(y, scores),
            by_stage=evaluate.compare_by(test["stage"], y, scores),
            by_segment=evaluate.compare_by(test["segment"], y, scores),
            windows=data.windows,
            slices=data.slices,
            features=data.features,
            gain_share=fitted.gain_share,
            fingerprint=data.fingerprint,
            code_version=code_version(),
            card_path=card_path,
            params=params,
            unavailable=data.unavailable,
            rule_scores=_rule_scores(scores, y),
        )

    def log_results(self, result: WinTrainResult, scores: Mapping[str, np.ndarray]) -> None:
        _log_results(result, result.slices.test["won"].to_numpy(dtype=int), scores)

    def write_card(self, result: WinTrainResult, decision: GateDecision | None) -> Path:
        return write_card(result, decision)


WIN = WinPipeline()


def train_win(
    tables: CrmTables,
    *,
    truth: WorldTruth | None = None,
    params: WinParams | None = None,
    hooks: TrainHooks | None = None,
    card_dir: Path | None = None,
    on_step: Callable[[str], None] | None = None,
) -> WinTrainResult:
    """Train, calibrate, evaluate and log the deal win model as one MLflow run.

    Args:
        tables: the CRM as exported (its `as_of` sets the time line, see the module docstring).
        truth: the generator's truth on generated worlds, scored as the ceiling; None otherwise.
        params: model and window settings (defaults: `WinParams()`).
        hooks: test and experiment hooks (see `TrainHooks`).
        card_dir: where `deal-win.md` is written (default: `default_card_dir()`).
        on_step: called with each step's name, for progress display.

    Returns:
        The run's id and model, and the metrics against the baselines on the test rows.

    Raises:
        NotEnoughDataError: fewer than MIN_CLOSED_PER_CLASS won or lost deals, or a slice lacks
            one of the outcomes.
        LeakageSuspected: the leak guard refused a column, or the test AUC is above 0.99; the
            run is then marked FAILED and no model is logged.
    """
    return train(
        WIN,
        tables,
        params=params or WinParams(),
        hooks=hooks or TrainHooks(),
        truth=truth,
        card_dir=card_dir or default_card_dir(),
        on_step=on_step,
    )


def _rule_scores(scores: Mapping[str, np.ndarray], y: np.ndarray) -> dict[str, np.ndarray]:
    """The base rate and the best rule by test log loss: what the model's AUC must hold up to."""
    rules = [n for n in scores if n == "stage_history" or n.startswith("rule_")]
    losses = {n: log_loss(y, scores[n], labels=[0, 1]) for n in rules}
    best = min(losses, key=losses.__getitem__) if losses else None
    return {"base_rate": scores["base_rate"]} | ({best: scores[best]} if best else {})


def _log_inputs(params: WinParams, data: Prepared, hooks: TrainHooks) -> None:
    slices = data.slices
    mlflow.log_params(
        params.flat() | {f"window_{k}": v for k, v in data.windows.describe().items()}
    )
    parts = {name: getattr(slices, name) for name in ("train", "calibration", "test")}
    mlflow.log_params(
        {f"{name}_rows": len(part) for name, part in parts.items()}
        | {f"{name}_deals": part["deal_id"].nunique() for name, part in parts.items()}
        | {"features": ",".join(f.name for f in data.features)}
    )
    mlflow.log_metrics({f"{k}_unlabelled_share": v for k, v in slices.unlabelled_share.items()})
    if used := [n for n in ("extra_features", "fit_rows") if getattr(hooks, n) is not None]:
        mlflow.set_tag("hooks", ",".join(used))


def _log_results(
    result: WinTrainResult, y_test: np.ndarray, scores: Mapping[str, np.ndarray]
) -> None:
    """Metrics, reliability diagram, per-stage and per-segment tables and the model card."""
    mlflow.log_metrics(flat_metrics(result.metrics, METRIC_PREFIX, rate_name="test_win_rate"))
    log_choice(result)
    shown = {
        k: v
        for k, v in scores.items()
        if k in ("model", "base_rate", "stage_fixed", "stage_history", "truth")
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        evaluate.plot_reliability(y_test, shown, folder / "reliability.png", title="deal win, test")
        result.metrics.rename_axis("contender").to_csv(folder / "metrics.csv")
        result.by_stage.to_csv(folder / "metrics_by_stage.csv", index=False)
        result.by_segment.to_csv(folder / "metrics_by_segment.csv", index=False)
        mlflow.log_artifacts(str(folder), artifact_path="evaluation")
    write_card(result)
    mlflow.log_artifact(str(result.card_path), artifact_path="card")


def retrain_win(
    tables: CrmTables,
    *,
    truth: WorldTruth | None = None,
    seed: int = 0,
    params: WinParams | None = None,
    card_dir: Path | None = None,
    on_step: Callable[[str], None] | None = None,
    client: Client | None = None,
    progress: Progress | None = None,
    parts: Path | None = None,
) -> RetrainOutcome:
    """Train the win model, register it as challenger and run the gate.

    `params` (windows, allowed columns, ...) default to `WinParams(seed=seed)`; `client`: a
    Dask client whose cluster computes the features; `parts`: the version folder of a store in
    parts, read by the cluster's workers (`tables` then need hold only the deals, accounts,
    reps, products and revenue: `forecast.features.on_dask.CONTEXT_TABLES`).
    """
    return retrain(
        WinPipeline(client, progress, parts) if client is not None else WIN,
        tables,
        params=params or WinParams(seed=seed),
        hooks=TrainHooks(),
        truth=truth,
        card_dir=card_dir or default_card_dir(),
        on_step=on_step,
    )
