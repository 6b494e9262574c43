"""The choice under drift: held-out windows kept apart in time, recency weights, PSI, and a
choice that follows a moving base rate without hurting a stationary one."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
import skops.io
from scipy.special import logit
from sklearn.metrics import log_loss

from forecast.explain.scorers import check_scorer, scorer_for
from forecast.features.deal_schema import Feature
from forecast.model import (
    SKOPS_TRUSTED_TYPES,
    TreeParams,
    log_odds_shift,
    make_lightgbm,
    make_logistic,
    model_input,
    shifted,
)
from forecast.training.choice import fit_and_choose
from forecast.training.drift import (
    SHIFT,
    UNCALIBRATED,
    Choice,
    Separation,
    _steady,
    psi,
    recency_weights,
    rolling_folds,
)
from forecast.training.task import CANDIDATES, Task

FEATURES = (Feature("signal"), Feature("noise"))
TASK = Task("synthetic", "synthetic", "synthetic", label="won", group="unit")
WEEK = pd.Timedelta(days=7)


@dataclass(frozen=True)
class Params:
    seed: int = 0
    tree: TreeParams = field(default_factory=lambda: TreeParams(n_estimators=60, n_jobs=1))
    logistic_c: float = 1.0
    candidates: tuple[str, ...] = CANDIDATES
    half_lives: tuple[int | None, ...] = (None, 182)
    rolling_folds: int = 3


@dataclass(frozen=True)
class Slices:
    train: pd.DataFrame
    calibration: pd.DataFrame
    test: pd.DataFrame
    history: pd.DataFrame


def world(drift: float, *, weeks: int = 156, per_week: int = 150, seed: int = 0) -> Slices:
    """One row per unit and week; log-odds = signal + an intercept that moves by `drift` over
    the whole span. The last 13 weeks test, the 13 before calibrate."""
    rng = np.random.default_rng(seed)
    n = weeks * per_week
    week = np.repeat(np.arange(weeks), per_week)
    signal, noise = rng.normal(size=n), rng.normal(size=n)
    intercept = -1.5 + drift * week / weeks
    won = (rng.random(n) < 1 / (1 + np.exp(-(signal + intercept)))).astype(float)
    as_of = pd.Timestamp("2023-01-01") + week * WEEK
    frame = pd.DataFrame(
        {"unit": np.arange(n), "as_of": as_of, "signal": signal, "noise": noise, "won": won}
    )
    test_start = frame["as_of"].max() - 13 * WEEK
    cal_start = test_start - 13 * WEEK
    history = frame[frame["as_of"] <= test_start]
    return Slices(
        train=history[history["as_of"] <= cal_start],
        calibration=history[history["as_of"] > cal_start],
        test=frame[frame["as_of"] > test_start].reset_index(drop=True),
        history=history.reset_index(drop=True),
    )


def test_held_out_windows_come_after_what_their_models_learn_from():
    rows = world(0.0, weeks=80, per_week=100).history
    # a unit seen in consecutive rows, some of them across a week's boundary (as a deal's
    # weekly snapshots are): those at a window's edge must leave the earlier part
    rows = rows.assign(unit=rows["unit"] // 3)
    folds = rolling_folds(
        rows, window=13, label="won",
        separation=Separation("unit", purge_group=True, embargo=pd.Timedelta(0)),
    )  # fmt: skip
    assert len(folds) == 3
    ends = [fold.held_out["as_of"].max() for fold in folds]
    assert ends == sorted(ends, reverse=True)  # latest first
    for fold in folds:
        assert fold.train["as_of"].max() < fold.calibration["as_of"].min()
        assert fold.calibration["as_of"].max() < fold.held_out["as_of"].min()
        later = set(fold.calibration["unit"]) | set(fold.held_out["unit"])
        assert not later & set(fold.train["unit"])  # purged
        assert not set(fold.held_out["unit"]) & set(fold.before_held_out["unit"])
        assert fold.before_held_out["as_of"].max() < fold.held_out["as_of"].min()


def test_an_embargo_keeps_label_windows_out_of_later_parts():
    rows = world(0.0, weeks=80, per_week=40).history
    embargo = pd.Timedelta(days=90)
    folds = rolling_folds(
        rows, window=13, label="won",
        separation=Separation("unit", purge_group=False, embargo=embargo),
    )  # fmt: skip
    assert folds
    for fold in folds:
        assert (fold.train["as_of"] + embargo < fold.calibration["as_of"].min()).all()
        assert (fold.before_held_out["as_of"] + embargo < fold.held_out["as_of"].min()).all()


def test_too_little_history_gives_no_fold():
    rows = world(0.0, weeks=30, per_week=40).history
    separation = Separation("unit", purge_group=True, embargo=pd.Timedelta(0))
    assert rolling_folds(rows, window=13, label="won", separation=separation) == []


def test_recency_weights_halve_every_half_life():
    as_of = pd.Series(pd.to_datetime(["2024-01-01", "2024-07-01", "2024-12-30"]))
    weights = recency_weights(as_of, 182)
    np.testing.assert_allclose(weights, [0.25, 0.5, 1.0], rtol=0.02)
    assert recency_weights(as_of, None) is None


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    base = pd.Series(rng.normal(size=5000))
    assert psi(base, pd.Series(rng.normal(size=5000))) < 0.02
    assert psi(base, pd.Series(rng.normal(loc=1.0, size=5000))) > 0.25
    categories = pd.Series(["a"] * 900 + ["b"] * 100)
    assert psi(categories, categories) == pytest.approx(0.0)
    assert psi(categories, pd.Series(["a"] * 500 + ["b"] * 400 + [None] * 100)) > 0.25


def _equal_weight_lightgbm_loss(slices: Slices) -> float:
    """What ignoring drift gives: LightGBM on the train slice, equal weights, no map."""
    model = make_lightgbm(FEATURES, params=Params().tree).fit(
        model_input(slices.train, FEATURES), slices.train["won"].to_numpy(int)
    )
    p = model.predict_proba(model_input(slices.test, FEATURES))[:, 1]
    return float(log_loss(slices.test["won"], p))


def _chosen_loss(slices: Slices):
    fitted = fit_and_choose(TASK, slices, FEATURES, Params())
    p = fitted.calibration.model.predict_proba(model_input(slices.test, FEATURES))[:, 1]
    return fitted, float(log_loss(slices.test["won"], p)), float(p.mean())


def test_under_drift_the_choice_follows_the_base_rate():
    slices = world(drift=2.5)
    fitted, loss, mean = _chosen_loss(slices)
    report = fitted.drift
    assert report.folds == 3
    rates = report.base_rates["rate"].to_numpy()
    assert rates[-1] > rates[0] + 0.2  # the report shows the rate that moved
    # the choice leans on recent rows (a half-life, or a map fitted on the latest window)
    assert fitted.half_life is not None or fitted.calibration.method != UNCALIBRATED
    # each window also shows the base rate, and the chosen candidate beat it in every one
    windows = report.windows.set_index(["period", "candidate"])["log_loss"].unstack()
    assert len(windows) == 3
    assert (windows[fitted.chosen] < windows["base_rate"]).all()
    ignoring = _equal_weight_lightgbm_loss(slices)
    assert loss < ignoring - 0.005, (loss, ignoring)
    assert abs(mean - slices.test["won"].mean()) < 0.05


def test_without_drift_the_choice_costs_nothing():
    slices = world(drift=0.0)
    fitted, loss, _ = _chosen_loss(slices)
    assert loss <= _equal_weight_lightgbm_loss(slices) + 0.005
    # a map is kept only where it beat none on the held-out windows
    selection = fitted.selection.loc[fitted.chosen]
    assert float(selection[fitted.calibration.method]) <= float(selection[UNCALIBRATED])


def test_what_a_model_left_without_a_map_learns_from_ends_before_the_test_rows():
    slices = world(2.5)
    # units seen both before and inside the test slice, as a deal's weekly snapshots are
    history = slices.history.assign(unit=slices.history["unit"] % 5000)
    test = slices.test.assign(unit=slices.test["unit"] % 5000)
    for separation in (
        Separation("unit", purge_group=True, embargo=pd.Timedelta(0)),
        Separation("unit", purge_group=False, embargo=pd.Timedelta(days=90)),
    ):
        before = separation.earlier(history, test)
        assert len(before) > 0
        assert (before["as_of"] + separation.embargo < test["as_of"].min()).all()
        if separation.purge_group:
            assert not set(before["unit"]) & set(test["unit"])


def test_a_map_is_kept_only_where_it_beat_no_map_in_every_window():
    # sigmoid wins the weighted mean on one big win in the latest window and loses in the other
    # two; isotonic wins by a little in all three
    losses = {
        UNCALIBRATED: [0.60, 0.60, 0.60],
        "sigmoid": [0.55, 0.61, 0.61],
        "isotonic": [0.599, 0.599, 0.599],
    }
    windows = pd.DataFrame(
        [
            {"fold": fold, "candidate": "logistic", "half_life": None, "method": method,
             "log_loss": loss[fold], "weight": 0.5**fold}
            for method, loss in losses.items()
            for fold in range(3)
        ]
    )  # fmt: skip
    keys = ["candidate", "half_life", "method"]
    weighted = windows.assign(w=windows["log_loss"] * windows["weight"])
    sums = weighted.groupby(keys, dropna=False)[["w", "weight"]].sum()
    scores = (sums["w"] / sums["weight"]).rename("log_loss").reset_index()
    choice = Choice(windows, scores.assign(steady=_steady(windows, scores)))
    assert scores.set_index("method")["log_loss"].idxmin() == "sigmoid"
    assert choice.best("logistic")[1] == "isotonic"
    windows.loc[windows["method"] == "isotonic", "log_loss"] = 0.61
    scores = scores.assign(
        log_loss=np.where(scores["method"] == "isotonic", 0.61, scores["log_loss"])
    )
    choice = Choice(windows, scores.assign(steady=_steady(windows, scores)))
    assert choice.best("logistic")[1] == UNCALIBRATED


@pytest.mark.parametrize("kind", ["lightgbm", "logistic"])
def test_a_shift_moves_every_rows_log_odds_by_as_much_and_is_served_as_it_was_fitted(kind):
    rows = world(0.0, weeks=20, per_week=100).history
    x, y = model_input(rows, FEATURES), rows["won"].to_numpy(int)
    make = {"lightgbm": lambda: make_lightgbm(FEATURES, params=Params().tree),
            "logistic": lambda: make_logistic(FEATURES, c=1.0)}[kind]  # fmt: skip
    model = make().fit(x, y)
    before = logit(model.predict_proba(x)[:, 1])
    # the rate of the other outcome: far from the model's, so the shift is large
    shift = log_odds_shift(model, x, 1 - y)
    moved = shifted(model, shift)
    assert shift > 1.0
    np.testing.assert_allclose(logit(moved.predict_proba(x)[:, 1]) - before, shift, atol=1e-9)
    assert moved.predict_proba(x)[:, 1].mean() == pytest.approx(1 - y.mean(), abs=1e-9)
    np.testing.assert_array_equal(logit(model.predict_proba(x)[:, 1]), before)  # a copy moved
    # saved as MLflow saves it (skops), and scored by the service's fast path, unchanged
    loaded = skops.io.loads(skops.io.dumps(moved), trusted=list(SKOPS_TRUSTED_TYPES))
    np.testing.assert_allclose(loaded.predict_proba(x), moved.predict_proba(x), atol=1e-12)
    assert check_scorer(scorer_for(loaded, FEATURES), loaded, x, what=kind) < 1e-9


def test_a_base_rate_that_keeps_moving_is_followed_by_a_shift_and_a_steady_one_is_not():
    for drift in (2.5, -2.5):
        slices = world(drift)
        fitted, loss, mean = _chosen_loss(slices)
        assert fitted.calibration.method == SHIFT, fitted.selection
        chosen = fitted.selection.loc[fitted.chosen]
        assert float(chosen[SHIFT]) < float(chosen[UNCALIBRATED])
        assert abs(mean - slices.test["won"].mean()) < 0.03
        assert loss < _equal_weight_lightgbm_loss(slices) - 0.005
    fitted = fit_and_choose(TASK, world(0.0), FEATURES, Params())
    assert fitted.calibration.method != SHIFT, fitted.selection
