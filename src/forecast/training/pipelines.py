"""Every trainable pipeline by name, for `forecast retrain` and `forecast train`."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from forecast.training.churn import retrain_churn
from forecast.training.task import RetrainOutcome
from forecast.training.win import retrain_win

PIPELINES: Mapping[str, Callable[..., RetrainOutcome]] = {
    "win": retrain_win,
    "churn": retrain_churn,
}
