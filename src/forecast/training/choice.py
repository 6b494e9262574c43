"""The candidates and their choice: fitted on the training slice, chosen and calibrated over
held-out windows, checked for leaks before any fit and for implausible results after."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from forecast.features.deal_schema import Feature
from forecast.model import (
    CALIBRATION_METHODS,
    Calibration,
    base_pipeline,
    calibrate,
    calibration_scores,
    log_odds_shift,
    make_lightgbm,
    make_logistic,
    model_input,
    monotone_violations,
    shifted,
)
from forecast.training import evaluate
from forecast.training.drift import (
    BASE_RATE,
    METHODS,
    REFITTED,
    SHIFT,
    UNCALIBRATED,
    Choice,
    DriftReport,
    Separation,
    calibrated,
    drift_report,
    evaluate_folds,
    fit_weighted,
    recency_weights,
    rolling_folds,
)
from forecast.training.leakage import LeakageSuspected, Suspect, refuse, screen_features
from forecast.training.on_dask import lightgbm_on
from forecast.training.task import CANDIDATES, ModelParams, Slices, Task

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

LEAKAGE_AUC = 0.99  # no honest out-of-time model of these outcomes gets this close to perfect


def candidate_makers(
    features: Sequence[Feature], params: ModelParams, client: Client | None = None
) -> dict[str, Callable[[], BaseEstimator]]:
    """Every candidate, unfitted. `params` needs `tree`, `seed` and `logistic_c`; with a Dask
    `client`, LightGBM trains on its cluster's workers (`forecast.training.on_dask`)."""

    def lightgbm() -> BaseEstimator:
        return make_lightgbm(features, params=params.tree, seed=params.seed)

    return {
        "lightgbm": lightgbm if client is None else lightgbm_on(client, lightgbm),
        "logistic": lambda: make_logistic(features, c=params.logistic_c, seed=params.seed),
    }


def fit_candidates(
    train: pd.DataFrame,
    features: Sequence[Feature],
    params: ModelParams,
    *,
    label: str,
    half_lives: Mapping[str, int | None] | None = None,
    client: Client | None = None,
) -> dict[str, BaseEstimator]:
    """Every candidate fitted on the train slice (LightGBM always: the leakage canary reads it),
    each with its recency weighting (`half_lives`: candidate -> days; default equal weights);
    LightGBM on the cluster of `client` when given."""
    x, y = model_input(train, features), train[label].to_numpy(dtype=int)
    makers = candidate_makers(features, params, client)
    half_lives = half_lives or {}
    return {
        name: fit_weighted(
            makers[name](), x, y, recency_weights(train["as_of"], half_lives.get(name))
        )
        for name in CANDIDATES
    }


def gain_shares(model: BaseEstimator) -> pd.Series:
    """Each feature's share of the LightGBM pipeline's total split gain, largest first."""
    lgbm = base_pipeline(model).named_steps["lgbm"]
    gain = pd.Series(lgbm.booster_.feature_importance("gain"), index=lgbm.booster_.feature_name())
    return (gain / gain.sum()).sort_values(ascending=False)


def check_leakage(
    train: pd.DataFrame,
    test: pd.DataFrame,
    features: Sequence[Feature],
    *,
    label: str,
    allowed: Sequence[str] = (),
    columns: Sequence[Suspect] = (),
    group: str | None = None,
    can_leave_out: bool,
) -> tuple[list[Suspect], dict[str, float]]:
    """Before any fit: refuse every feature (or mapped column) that knows the outcome.

    Args:
        train, test: the out-of-time slices (a single feature is learned on train, scored on
            test).
        features: the model's features.
        allowed: columns or features a person has checked and allows.
        label: the label column.
        columns: suspects already found in the mapped columns (`leakage.screen_columns`).
        group: the unit whose snapshots are resampled together for a feature's AUC interval.
        can_leave_out: the pipeline trains without a column (`--leave-out`): the fix says so.

    Returns:
        The allowed suspects and each feature's single-feature out-of-time AUC.

    Raises:
        LeakageSuspected: naming each suspect, its evidence and the fix.
    """
    suspects, aucs = screen_features(
        train, test, features, label, group=group, can_leave_out=can_leave_out
    )
    return refuse([*columns, *suspects], allowed, can_leave_out=can_leave_out), aucs


def check_implausible_auc(test_auc: float, top_feature: str) -> None:
    """After the fit: no honest out-of-time model of these outcomes gets this close to perfect."""
    if test_auc > LEAKAGE_AUC:
        raise LeakageSuspected(
            f"suspected leakage: out-of-time AUC {test_auc:.4f} > {LEAKAGE_AUC} "
            f"({top_feature} carries the most gain); check which columns are known only at "
            "the close"
        )


def choose(
    fitted: Mapping[str, BaseEstimator],
    calibration: pd.DataFrame,
    features: Sequence[Feature],
    allowed: Sequence[str],
    *,
    label: str = "won",
    group: str = "deal_id",
) -> tuple[str, pd.DataFrame]:
    """The eligible candidate with the lowest out-of-fold calibrated log loss (calibration slice).

    A candidate that bends a declared monotone feature the wrong way is not eligible. Folds are
    grouped by `group` (a deal's, or an account's, snapshots stay on one side).
    """
    x = model_input(calibration, features)
    y = calibration[label].to_numpy(dtype=int)
    groups = calibration[group].to_numpy()
    rows = {}
    for name in allowed:
        violations = monotone_violations(fitted[name], features)
        rows[name] = calibration_scores(fitted[name], x, y, groups) | {
            "not eligible": "; ".join(violations)
        }
        if violations:
            log.warning("%s not eligible: against declared direction: %s", name, violations)
    table = pd.DataFrame(rows).T.rename_axis("candidate")
    eligible = table[table["not eligible"] == ""]
    best = eligible[list(CALIBRATION_METHODS)].astype(float).min(axis=1).idxmin()
    return str(best), table


def flat_metrics(
    table: pd.DataFrame, prefixes: Mapping[str, str], *, rate_name: str
) -> dict[str, float]:
    """`test_auc`, `baseline_stage_fixed_log_loss`, `truth_auc`, ... from the contenders table.

    Shared by every pipeline: `prefixes` names each contender's metrics, `rate_name` the test
    slice's positive rate.
    """
    return {
        f"{prefixes.get(name, f'baseline_{name}')}_{metric}": float(value)
        for name, row in table.iterrows()
        for metric, value in row.items()
        if metric in (*evaluate.METRICS, "mean_predicted") and np.isfinite(value)
    } | {
        "test_rows": float(table.loc["model", "n"]),
        rate_name: float(table.loc["model", "win_rate"]),
    }


@dataclass(frozen=True)
class Fitted:
    """The fitted candidates, the LightGBM gain shares, the calibrated choice, the guard's word,
    and what the choice saw (the drift report)."""

    candidates: Mapping[str, BaseEstimator]
    gain_share: pd.Series
    chosen: str
    selection: pd.DataFrame
    calibration: Calibration
    allowed: tuple[Suspect, ...] = ()  # suspects a person allowed
    single_auc: Mapping[str, float] = field(default_factory=dict)  # each feature alone
    drift: DriftReport | None = None
    half_life: int | None = None  # of the chosen candidate's recency weights (days)


def choose_and_calibrate(
    task: Task,
    calibration: pd.DataFrame,
    features: Sequence[Feature],
    candidates: Mapping[str, BaseEstimator],
    shares: pd.Series,
    allowed: Sequence[str],
) -> Fitted:
    """Pick the candidate on the calibration slice and fit its calibration map there (when the
    history is too short for held-out windows)."""
    chosen, selection = choose(
        candidates, calibration, features, allowed, label=task.label, group=task.group
    )
    x, y = model_input(calibration, features), calibration[task.label].to_numpy(dtype=int)
    scores = selection.loc[chosen, list(CALIBRATION_METHODS)].astype(float).to_dict()
    fitted = calibrate(candidates[chosen], x, y, calibration[task.group].to_numpy(), scores)
    log.info("%s: chose %s with %s", task.name, chosen, _calibration_words(fitted.method))
    return Fitted(candidates, shares, chosen, selection, fitted)


def _calibration_words(method: str) -> str:
    return "no calibration map" if method == UNCALIBRATED else f"{method} calibration"


def choose_over_windows(
    task: Task,
    slices: Slices,
    features: Sequence[Feature],
    params: ModelParams,
    choice: Choice,
    before_test: pd.DataFrame,
    *,
    client: Client | None = None,
) -> Fitted:
    """Each candidate fitted on the train slice with its best half-life; the eligible one with
    the lowest recency-weighted held-out log loss is calibrated on the calibration slice with
    its best map, or, when no map beat none, refitted on every row before the test slice
    (`before_test`) and left uncalibrated or shifted (`SHIFT`), as the held-out windows judged
    it."""
    plan = {name: choice.best(name) for name in params.candidates}
    candidates = fit_candidates(
        slices.train, features, params, label=task.label,
        half_lives={name: half_life for name, (half_life, _, _) in plan.items()}, client=client,
    )  # fmt: skip
    rows = {}
    for name, (half_life, method, loss) in plan.items():
        violations = monotone_violations(candidates[name], features)
        if violations:
            log.warning("%s not eligible: against declared direction: %s", name, violations)
        by_method = choice.by_method(name, half_life)
        days = "none" if half_life is None else f"{half_life} days"
        rows[name] = {"half_life": days, **by_method.to_dict(), "method": method,
                      "log_loss": loss, "not eligible": "; ".join(violations)}  # fmt: skip
    selection = pd.DataFrame(rows).T.rename_axis("candidate")
    eligible = selection[selection["not eligible"] == ""]
    chosen = str(eligible["log_loss"].astype(float).idxmin())
    half_life, method, _ = plan[chosen]
    x = model_input(slices.calibration, features)
    y = slices.calibration[task.label].to_numpy(dtype=int)
    scores = {m: float(selection.loc[chosen, m]) for m in METHODS}
    if method in REFITTED:
        weights = recency_weights(before_test["as_of"], half_life)
        x_all, y_all = model_input(before_test, features), before_test[task.label].to_numpy(int)
        make = candidate_makers(features, params, client)[chosen]
        model = fit_weighted(make(), x_all, y_all, weights)
        if method == SHIFT:
            model = shifted(model, log_odds_shift(candidates[chosen], x, y))
    else:
        model = calibrated(candidates[chosen], x, y, method)
    calibration = Calibration(model, method, scores)
    log.info(
        "%s: chose %s (half-life %s) with %s over %d windows",
        task.name, chosen, half_life, _calibration_words(method), choice.windows["fold"].nunique(),
    )  # fmt: skip
    chosen_plan = {name: (h, m) for name, (h, m, _) in plan.items()}
    chosen_plan[BASE_RATE] = (None, UNCALIBRATED)  # how the simplest rule did, window by window
    return Fitted(
        candidates, gain_shares(candidates["lightgbm"]), chosen, selection, calibration,
        drift=drift_report(slices, features, task.label, choice, chosen_plan),
        half_life=half_life,
    )  # fmt: skip


def fit_and_choose(
    task: Task,
    slices: Slices,
    features: Sequence[Feature],
    params: ModelParams,
    *,
    allowed: Sequence[str] = (),
    columns: Sequence[Suspect] = (),
    window: int | None = None,
    on_step: Callable[[str], None] | None = None,
    client: Client | None = None,
) -> Fitted:
    """The leak guard, then every candidate evaluated over rolling windows, chosen, fitted on
    the train slice and calibrated (see `forecast.training.drift`).

    Args:
        task: the pipeline.
        slices: train, calibration and test frames (the guard learns on train, scores test), and
            the history before the test slice (the rolling windows).
        features: the model's features.
        params: candidates and their settings.
        allowed: columns a person allows past the guard.
        columns: suspects already found in the mapped columns.
        window: snapshot dates in each held-out window (default: as many as the test slice).
        on_step: told which held-out window is being fitted (progress).
        client: a Dask client: LightGBM is trained by its cluster's workers (`lightgbm.dask`).

    Raises:
        LeakageSuspected: the guard refused; nothing was fitted.
    """
    kept, single_auc = check_leakage(
        slices.train,
        slices.test,
        features,
        label=task.label,
        allowed=allowed,
        columns=columns,
        group=task.group,
        can_leave_out=task.can_leave_out,
    )
    separation = Separation(
        task.group, task.purge_group, pd.Timedelta(days=getattr(params, "horizon_days", 0))
    )
    folds = rolling_folds(
        slices.history,
        window=window or slices.test["as_of"].nunique(),
        label=task.label,
        separation=separation,
        folds=params.rolling_folds,
    )
    if folds:
        makers = candidate_makers(features, params, client)
        choice = evaluate_folds(
            folds, {name: makers[name] for name in params.candidates}, features,
            label=task.label, half_lives=params.half_lives, on_step=on_step,
        )  # fmt: skip
        earlier = separation.earlier(slices.history, slices.test)
        chosen = choose_over_windows(task, slices, features, params, choice, earlier, client=client)
    else:
        log.warning("%s: too little history for held-out windows; choosing on one slice", task.name)
        candidates = fit_candidates(slices.train, features, params, label=task.label, client=client)
        shares = gain_shares(candidates["lightgbm"])
        chosen = choose_and_calibrate(
            task, slices.calibration, features, candidates, shares, params.candidates
        )
        chosen = replace(chosen, drift=drift_report(slices, features, task.label, None, {}))
    return replace(chosen, allowed=tuple(kept), single_auc=single_auc)
