"""What a training task is: its description (`Task`), the protocols a task's pipeline, data, slices
and result follow, and what a retrain reports."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from forecast.data.tables import CrmTables
from forecast.data.world import WorldTruth
from forecast.features.deal_schema import Feature
from forecast.model import (
    TreeParams,
)
from forecast.training.leakage import Suspect
from forecast.training.registry import Evaluation, GateDecision

if TYPE_CHECKING:  # the choice module fits what a task describes
    from distributed import Client

    from forecast.training.choice import Fitted

CANDIDATES = ("lightgbm", "logistic")


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
        can_leave_out: the pipeline can train without a column that still counts elsewhere
            (`--leave-out`: a deal's amount set at the close still counts for bookings).
    """

    name: str
    model_name: str
    experiment: str
    label: str
    group: str
    purge_group: bool = True
    can_leave_out: bool = False


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
    client: Client | None  # a Dask client: features and LightGBM are computed by its cluster

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


@dataclass(frozen=True)
class RetrainOutcome:
    pipeline: str
    run_id: str
    metrics: pd.DataFrame
    decision: GateDecision
