"""Behaviour of the deal win model: directions true by design, invariances, odd inputs.

The model is fitted once per module on a small generated world, without MLflow.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from forecast.data.contract import OPEN_STAGES
from forecast.data.world import make_crm
from forecast.features.deal_schema import CATEGORICAL, DEAL_FEATURES, FEATURE_NAMES
from forecast.model import (
    CategoryCoder,
    TreeParams,
    base_pipeline,
    model_input,
    monotone_violations,
    win_probability,
)
from forecast.training.choice import fit_and_choose
from forecast.training.win_task import TASK, TrainHooks, WinParams, prepare

PARAMS = WinParams(tree=TreeParams(n_estimators=80, n_jobs=1))
ACTIVITY_COUNTS = ("activities_7d", "activities_30d", "activities_90d", "calls_90d", "emails_90d")
MONOTONE = [f for f in DEAL_FEATURES if f.monotone != 0]


@pytest.fixture(scope="module")
def fitted():
    world = make_crm(5000, seed=7)
    data = prepare(world.tables, PARAMS, TrainHooks())
    chosen = fit_and_choose(TASK, data.slices, data.features, PARAMS)
    return data, chosen.candidates, chosen


@pytest.fixture(scope="module")
def rows(fitted) -> pd.DataFrame:
    data, _, _ = fitted
    return model_input(data.slices.test)


@pytest.fixture(scope="module", params=["calibrated", "lightgbm", "logistic"])
def model(request, fitted):
    _, candidates, chosen = fitted
    return chosen.calibration.model if request.param == "calibrated" else candidates[request.param]


def test_more_recent_activity_does_not_lower_the_probability(model, rows):
    busier = rows.copy()
    for column in ACTIVITY_COUNTS:
        busier[column] += 3
    busier["days_since_last_activity"] = 0.0
    weeks = np.maximum(busier["deal_age_days"] / 7, 1.0)
    busier["activities_per_week"] += 3 / weeks
    before, after = win_probability(model, rows), win_probability(model, busier)
    assert after.mean() > before.mean()
    if "logistic" in base_pipeline(model).named_steps:
        # on this 5,000-deal world the overlapping 7/30/90-day windows get coefficients of both
        # signs (they are collinear and engagement weighs little), so single deals move either
        # way; on the default world 0.1 % of deals move down. Only the average is a promise here.
        return
    # activity is not declared monotone, so single deals may move either way; few do (5.5 % of
    # the trees' deals here since engagement weighs less in the world; the bound was 5 %)
    assert (after < before - 1e-9).mean() <= 0.06


@pytest.mark.parametrize("which", ["lightgbm", "chosen and calibrated"])
@pytest.mark.parametrize("feature", MONOTONE, ids=lambda f: f.name)
def test_declared_monotone_features_hold_deal_by_deal(fitted, rows, feature, which):
    _, candidates, chosen = fitted
    model = candidates["lightgbm"] if which == "lightgbm" else chosen.calibration.model
    step = 1.0 if rows[feature.name].abs().max() > 1 else 0.1
    moved = rows.assign(**{feature.name: rows[feature.name] + step})
    change = win_probability(model, moved) - win_probability(model, rows)
    assert (feature.monotone * change >= -1e-12).all()


def test_a_later_stage_raises_the_probability_on_average(model, rows):
    position = rows["stage"].map({s: i for i, s in enumerate(OPEN_STAGES)})
    movable = rows[position < len(OPEN_STAGES) - 1]
    later = movable.assign(stage=[OPEN_STAGES[i + 1] for i in position[movable.index]])
    before, after = win_probability(model, movable), win_probability(model, later)
    # the rest of the row (activity at the old stage's pace, days in stage) still speaks of the
    # earlier stage, so the lift is smaller than the true one: +0.03 to +0.04 on this world since
    # touches were made more frequent (the bound was +0.05 with sparser touches)
    assert after.mean() > before.mean() + 0.025
    by_stage = pd.Series(win_probability(model, rows)).groupby(rows["stage"].to_numpy()).mean()
    assert by_stage.reindex(OPEN_STAGES).is_monotonic_increasing


def test_the_probability_does_not_depend_on_deal_id_or_batch(model, fitted, rows):
    data, _, _ = fitted
    frame = data.slices.test
    renamed = frame.assign(deal_id=[f"X{i}" for i in range(len(frame))])
    assert np.array_equal(win_probability(model, frame), win_probability(model, renamed))
    order = np.random.default_rng(0).permutation(len(rows))
    shuffled = win_probability(model, rows.iloc[order])
    assert np.allclose(shuffled, win_probability(model, rows)[order], rtol=0, atol=1e-12)


@pytest.mark.parametrize("column", CATEGORICAL)
def test_an_unseen_category_scores_like_a_missing_one(model, rows, column):
    sample = rows.head(50)
    unseen = win_probability(model, sample.assign(**{column: "never seen before"}))
    assert np.isfinite(unseen).all() and ((unseen > 0) & (unseen < 1)).all()
    if not isinstance(base_pipeline(model).steps[0][1], CategoryCoder):
        return  # the one-hot model ignores unknown categories its own way
    missing = win_probability(model, sample.assign(**{column: None}))
    np.testing.assert_array_equal(unseen, missing)


@pytest.mark.parametrize("column", FEATURE_NAMES)
def test_a_missing_value_in_any_column_scores(model, rows, column):
    sample = rows.head(20).copy()
    sample[column] = None if column in CATEGORICAL else np.nan
    p = win_probability(model, sample)
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()


def test_a_row_with_nothing_known_scores(model, rows):
    empty = rows.head(1).copy()
    empty.loc[:, :] = np.nan
    empty[list(CATEGORICAL)] = None
    p = win_probability(model, model_input(empty))
    assert np.isfinite(p).all()


def test_model_input_has_no_integer_or_category_columns(rows):
    dtypes = rows.dtypes
    assert set(dtypes[list(CATEGORICAL)].astype(str)) == {"object"}
    numeric = [c for c in FEATURE_NAMES if c not in CATEGORICAL]
    assert set(dtypes[numeric].astype(str)) == {"float64"}


def test_lightgbm_is_told_which_columns_are_categorical(fitted):
    _, candidates, _ = fitted
    booster = base_pipeline(candidates["lightgbm"]).named_steps["lgbm"].booster_
    infos = booster.dump_model()["feature_infos"]
    assert all(infos[c]["values"] for c in CATEGORICAL)
    assert not any(infos[c].get("values") for c in FEATURE_NAMES if c not in CATEGORICAL)


def test_category_coder_follows_the_estimator_contract():
    frame = pd.DataFrame({"colour": ["red", "blue", None], "size": [1.0, np.nan, 3.0]})
    coder = CategoryCoder(categorical=["colour"])
    with pytest.raises(NotFittedError):
        coder.transform(frame)
    assert coder.fit(frame) is coder
    assert clone(coder).get_params() == {"categorical": ["colour"]}
    assert not hasattr(clone(coder), "categories_")
    coded = coder.transform(pd.DataFrame({"colour": ["blue", "green", None], "size": [2, 2, 2]}))
    assert coded["colour"].tolist()[0] == 0.0  # sorted: blue, red
    assert np.isnan(coded["colour"].tolist()[1:]).all()  # unseen and missing: NaN
    assert coded["size"].dtype == "float64"


def test_a_logistic_bending_a_declared_direction_is_flagged(fitted):
    _, candidates, _ = fitted
    logistic = clone(candidates["logistic"])
    data, _, _ = fitted
    train = data.slices.train
    # the rep's records made to count against winning: the fitted coefficients turn negative
    flipped = model_input(train).assign(
        rep_win_rate=lambda f: -f["rep_win_rate"],
        rep_stage_win_rate=lambda f: -f["rep_stage_win_rate"],
    )
    logistic.fit(flipped, train["won"].to_numpy(dtype=int))
    flagged = {v.split(" ")[0] for v in monotone_violations(logistic, DEAL_FEATURES)}
    assert flagged & {"rep_win_rate", "rep_stage_win_rate"}
    assert flagged <= {"rep_win_rate", "rep_stage_win_rate"}
    assert monotone_violations(candidates["lightgbm"], DEAL_FEATURES) == []


def test_lightgbm_trains_with_the_threads_the_setting_gives(monkeypatch):
    from forecast.model import make_lightgbm
    from forecast.settings import get_settings

    for threads in ("1", "3"):
        monkeypatch.setenv("FORECAST_TRAINING_THREADS", threads)
        get_settings.cache_clear()
        tree = WinParams().tree
        assert tree.n_jobs == int(threads)
        lgbm = make_lightgbm(params=tree).named_steps["lgbm"]
        assert lgbm.get_params()["n_jobs"] == int(threads)
    monkeypatch.delenv("FORECAST_TRAINING_THREADS")
    get_settings.cache_clear()
    assert WinParams().tree.n_jobs == 2  # a machine of its own: two threads
