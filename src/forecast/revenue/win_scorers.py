"""The backtest's honest win scorer: trained at each quarter's start on what was known then."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecast.data.tables import CrmTables, Featurize
from forecast.features.deal_schema import DEAL_FEATURES
from forecast.features.deals import deal_features, deal_snapshots, snapshot_dates
from forecast.model import TreeParams, calibrate, make_lightgbm, model_input, win_probability
from forecast.revenue.params import WinScorer

LABEL_LAG_DAYS = 120
CALIBRATION_DAYS = 91


@dataclass(frozen=True)
class TrainingFrame:
    """Weekly snapshots of every open deal with their features, and when each deal closed."""

    frame: pd.DataFrame
    closed_at: pd.Series  # deal_id -> close time (from deal_history)
    won: pd.Series  # deal_id -> 1.0 won / 0.0 lost

    @classmethod
    def build(
        cls, tables: CrmTables, end: pd.Timestamp, featurize: Featurize = deal_features
    ) -> TrainingFrame:
        """Every weekly snapshot to `end`; `featurize` computes their features (on a Dask
        cluster: `forecast.features.on_dask.deal_features_on`, the same numbers)."""
        dates = snapshot_dates(tables.deals["created_at"].min(), end)
        frame = featurize(tables, deal_snapshots(tables, dates))
        history = tables.deal_history
        closes = history[history["stage"].isin(["closed_won", "closed_lost"])]
        closes = closes.sort_values("changed_at").drop_duplicates("deal_id").set_index("deal_id")
        return cls(
            frame=frame,
            closed_at=closes["changed_at"],
            won=(closes["stage"] == "closed_won").astype(float),
        )


def fit_win_scorer(
    training: TrainingFrame,
    cutoff: pd.Timestamp,
    *,
    seed: int = 0,
    tree: TreeParams | None = None,
) -> WinScorer:
    """A calibrated LightGBM win model from the labels known at `cutoff` only.

    Snapshots up to `cutoff - 120 days` (so that most of their deals had closed by the cutoff),
    labelled by the outcomes recorded by the cutoff; deals still open then are left out. The last
    91 days of those snapshots calibrate (sigmoid or isotonic, chosen out of fold), the rest train;
    each deal sits only in its latest slice.
    """
    frame = training.frame
    known = training.closed_at.reindex(frame["deal_id"].to_numpy()).to_numpy() <= np.datetime64(
        cutoff
    )
    end = cutoff - pd.Timedelta(days=LABEL_LAG_DAYS)
    middle = end - pd.Timedelta(days=CALIBRATION_DAYS)
    rows = frame[known & (frame["as_of"] <= end).to_numpy()].copy()
    rows["won"] = training.won.reindex(rows["deal_id"].to_numpy()).to_numpy()
    calibration = rows[rows["as_of"] > middle]
    train = rows[(rows["as_of"] <= middle) & ~rows["deal_id"].isin(calibration["deal_id"])]
    if train["won"].nunique() < 2 or calibration["won"].nunique() < 2:
        raise ValueError(
            f"not enough closed deals before {cutoff:%Y-%m-%d} to train a win scorer "
            f"({len(train)} train and {len(calibration)} calibration snapshots)"
        )
    params = tree or TreeParams(n_estimators=200, n_jobs=1)
    model = make_lightgbm(DEAL_FEATURES, params=params, seed=seed)
    model.fit(model_input(train), train["won"].to_numpy(dtype=int))
    calibrated = calibrate(
        model,
        model_input(calibration),
        calibration["won"].to_numpy(dtype=int),
        calibration["deal_id"].to_numpy(),
    ).model

    def scorer(features: pd.DataFrame) -> np.ndarray:
        return win_probability(calibrated, model_input(features))

    return scorer


def truth_scorer(truth) -> WinScorer:
    """The generator's true win probability (an upper bound for any model of the data)."""

    def scorer(features: pd.DataFrame) -> np.ndarray:
        return truth.win_probability(features["deal_id"], features["stage"])

    return scorer
