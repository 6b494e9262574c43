"""The training stage: one path for every model, the win and churn tasks, evaluation, the
registry gate.

Modules: `shared` (the path both tasks run: leak guard, candidates, choice, calibration, MLflow,
card, gate), `win` and `churn` (the two tasks), `pipelines` (every task by name), `leakage`,
`drift`, `evaluate` (metrics and baselines), `registry` (versions, aliases, the gate).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from forecast.lazy import lazy_names

if TYPE_CHECKING:
    from forecast.training.churn import ChurnParams, revenue_at_risk, train_churn
    from forecast.training.pipelines import PIPELINES
    from forecast.training.registry import gate, load_champion, promote, rollback
    from forecast.training.shared import retrain, train
    from forecast.training.win import train_win
    from forecast.training.win_task import WinParams

_PUBLIC = {
    "retrain": "forecast.training.shared",
    "train": "forecast.training.shared",
    "WinParams": "forecast.training.win",
    "train_win": "forecast.training.win",
    "ChurnParams": "forecast.training.churn",
    "revenue_at_risk": "forecast.training.churn",
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
    "revenue_at_risk",
    "rollback",
    "train",
    "train_churn",
    "train_win",
]
__getattr__, __dir__ = lazy_names(__name__, _PUBLIC)
