"""Every trainable pipeline by name, for `forecast retrain` and `forecast train`."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from forecast.churn import retrain_churn
from forecast.train import retrain_win
from forecast.training import RetrainOutcome

PIPELINES: Mapping[str, Callable[..., RetrainOutcome]] = {
    "win": retrain_win,
    "churn": retrain_churn,
}
