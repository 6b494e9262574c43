"""The training stage: one path for every model, the win and churn tasks, evaluation, the
registry gate.

Modules: `shared` (the path every task runs: train, retrain), `task` (what a task is), `choice`
(leak guard, candidates, their choice and calibration over held-out windows), `tracking` (MLflow,
provenance, the cards' shared lines), `win_task`, `win_card` and `win` (deal win), `churn_task`,
`churn_baselines`, `churn_card` and `churn` (account churn), `pipelines` (every task by name),
`leakage`, `drift`, `evaluate` (metrics and baselines), `registry` (versions, aliases, the gate).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from forecast.lazy import lazy_names

if TYPE_CHECKING:
    from forecast.training.churn import train_churn
    from forecast.training.churn_task import ChurnParams
    from forecast.training.pipelines import PIPELINES
    from forecast.training.registry import gate, load_champion, promote, rollback
    from forecast.training.shared import retrain, train
    from forecast.training.win import train_win
    from forecast.training.win_task import WinParams

_PUBLIC = {
    "retrain": "forecast.training.shared",
    "train": "forecast.training.shared",
    "WinParams": "forecast.training.win_task",
    "train_win": "forecast.training.win",
    "ChurnParams": "forecast.training.churn_task",
    "train_churn": "forecast.training.churn",
    "gate": "forecast.training.registry",
    "load_champion": "forecast.training.registry",
    "promote": "forecast.training.registry",
    "rollback": "forecast.training.registry",
    "PIPELINES": "forecast.training.pipelines",
}
__all__ = [
    "PIPELINES",
    "ChurnParams",
    "WinParams",
    "gate",
    "load_champion",
    "promote",
    "retrain",
    "rollback",
    "train",
    "train_churn",
    "train_win",
]
__getattr__, __dir__ = lazy_names(__name__, _PUBLIC)
