"""A small deal-win model trained on a generated world, shared by the model tests."""

from __future__ import annotations

import pytest

from forecast.data.world import make_crm
from forecast.explain.reasons import typical_of_won
from forecast.explain.scorers import FastScorer
from forecast.features.deal_schema import DEAL_FEATURES
from forecast.features.deals import snapshot_dates, training_frame
from forecast.model import TreeParams, calibrate, make_lightgbm, model_input


@pytest.fixture(scope="session")
def trained():
    world = make_crm(6000, seed=4, start="2023-01-01", as_of="2025-12-31")
    frame = training_frame(world.tables, snapshot_dates("2023-03-01", "2025-08-31"))
    train = frame[frame["as_of"] < "2025-01-01"]
    later = frame[(frame["as_of"] >= "2025-01-01") & (frame["as_of"] < "2025-05-01")]
    test = frame[frame["as_of"] >= "2025-05-01"].reset_index(drop=True)
    trees = make_lightgbm(params=TreeParams(n_estimators=120, n_jobs=1)).fit(
        model_input(train), train["won"].to_numpy()
    )
    model = calibrate(
        trees, model_input(later), later["won"].to_numpy(), later["deal_id"].to_numpy()
    ).model
    return {
        "world": world,
        "model": model,
        "scorer": FastScorer(model, DEAL_FEATURES),
        "typical": typical_of_won(train, DEAL_FEATURES),
        "test": test,
    }
