"""Model choice under drift: rolling-origin evaluation, recency weights, and the drift report.

One calibration slice is one period: a base rate that moved between periods (a bank's
conversion went from 6 % to 31 %; a CRM's win rate from 82 % to 60 %) makes a choice from one
slice a bet on that period. So each candidate is evaluated the way it will be used, at several
origins before the test slice:

    fold k:  | train (weighted by recency) | calibration | held out |   (shifted back k windows)

Each (candidate, half-life, calibration) is fitted on the fold's train rows, its calibration
map on the fold's calibration rows, and scored on the held-out rows; the choice is the lowest
log loss averaged over the folds with the most recent weighing most (each fold half the one
after it). "none" is one of the calibrations: a map is applied only where it helped on the
held-out windows, and a model left without one learns from the calibration window too (under
drift the latest rows are the most telling, and a map fitted on them is fitted on one regime).
"shift" follows a base rate that keeps moving: the model refitted on every row, its log-odds
moved by as much as the calibration window's rate moved away from what the model fitted before
that window expected (`log_odds_shift`). It bets that the move goes on for one more window;
the held-out windows judge the bet, and like a map it is kept only where it beat "none" in
every one of them (the guard against a move that stopped or turned).
The report for the card: the base rate by period, the features whose distribution moved most
between the train and test slices (PSI), each candidate per window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, logit
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import log_loss, roc_auc_score

from forecast.features.deal_schema import Feature
from forecast.model import CALIBRATION_METHODS, log_odds_shift, model_input
from forecast.training.on_dask import fit_on_cluster, on_cluster

log = logging.getLogger(__name__)

UNCALIBRATED = "none"
SHIFT = "shift"  # refitted on every row, log-odds moved as the latest window's rate moved
REFITTED = (UNCALIBRATED, SHIFT)  # fitted on every row before the test slice, no map
BASE_RATE = "base_rate"  # reported beside the candidates in every window, never served
METHODS = (UNCALIBRATED, SHIFT, *CALIBRATION_METHODS)
HALF_LIVES: tuple[int | None, ...] = (None, 182)  # days; None: every row weighs the same
ROLLING_FOLDS = 3
MIN_UNITS = 30  # of each outcome in a fold's train, calibration and held-out rows
PSI_BINS = 10
DAY = "%Y-%m-%d"


@dataclass(frozen=True)
class Separation:
    """How rows are kept apart from later rows they must not learn from.

    A unit (deal) seen later leaves the earlier rows when `purge_group` (its label is its final
    outcome, so trees could learn it from its earlier snapshots); rows whose label window
    (`embargo`) reaches the later rows' first date leave too (churn's labels look ahead).
    """

    group: str
    purge_group: bool
    embargo: pd.Timedelta

    def earlier(self, rows: pd.DataFrame, later: pd.DataFrame) -> pd.DataFrame:
        kept = rows[rows["as_of"] + self.embargo < later["as_of"].min()]
        if self.purge_group:
            kept = kept[~kept[self.group].isin(later[self.group])]
        return kept.reset_index(drop=True)


@dataclass(frozen=True)
class Fold:
    """One origin: rows to fit on, to calibrate on and to score (in that order in time), and
    everything before the held-out rows (what a model left uncalibrated is fitted on)."""

    train: pd.DataFrame
    calibration: pd.DataFrame
    held_out: pd.DataFrame
    before_held_out: pd.DataFrame

    @property
    def period(self) -> str:
        dates = self.held_out["as_of"]
        return f"{dates.min():{DAY}} .. {dates.max():{DAY}}"


def rolling_folds(
    history: pd.DataFrame,
    *,
    window: int,
    label: str,
    separation: Separation,
    folds: int = ROLLING_FOLDS,
) -> list[Fold]:
    """The folds over `history` (every labelled row before the test slice), latest first.

    Fold k holds out the k-th latest `window` snapshot dates (as many as the test slice has:
    13 weekly dates, 3 monthly ones), calibrates on the `window` dates before them and trains on
    everything earlier (kept apart by `separation`). Folds without `MIN_UNITS` units of each
    outcome in every part are skipped.
    """
    dates = np.sort(history["as_of"].unique())
    as_of = history["as_of"].to_numpy()
    group = separation.group
    out = []
    for k in range(folds):
        end = len(dates) - k * window
        if end - 2 * window < 1:  # no date left to train on
            break
        held = np.isin(as_of, dates[end - window : end])
        cal = np.isin(as_of, dates[end - 2 * window : end - window])
        held_out, calibration = history[held], history[cal]
        if not (_enough(held_out, label, group) and _enough(calibration, label, group)):
            continue
        earlier = history[as_of < dates[end - 2 * window]]
        train = separation.earlier(earlier, pd.concat([calibration, held_out]))
        before = separation.earlier(history[as_of < dates[end - window]], held_out)
        if _enough(train, label, group):
            out.append(Fold(train, calibration.reset_index(drop=True),
                            held_out.reset_index(drop=True), before))  # fmt: skip
    return out


def _enough(part: pd.DataFrame, label: str, group: str) -> bool:
    units = part.drop_duplicates(group)[label]
    return int((units == 1).sum()) >= MIN_UNITS and int((units == 0).sum()) >= MIN_UNITS


def recency_weights(as_of: pd.Series, half_life: int | None) -> np.ndarray | None:
    """Each row's weight halves every `half_life` days back from the latest row (None: equal)."""
    if half_life is None:
        return None
    age = (as_of.max() - as_of).dt.days.to_numpy(dtype=float)
    return np.power(0.5, age / half_life)


def fit_weighted(
    model: BaseEstimator, x: pd.DataFrame, y: np.ndarray, weights: np.ndarray | None
) -> BaseEstimator:
    """Fit a pipeline with per-row weights passed to its last step (on a Dask cluster's workers
    when its last step trains there: `forecast.training.on_dask`)."""
    if on_cluster(model):
        return fit_on_cluster(model, x, y, weights)
    if weights is None:
        return model.fit(x, y)
    return model.fit(x, y, **{f"{model.steps[-1][0]}__sample_weight": weights})


def calibrated(model: BaseEstimator, x: pd.DataFrame, y: np.ndarray, method: str) -> BaseEstimator:
    """The model with a `method` map fitted on (x, y), or the model itself for "none"."""
    if method == UNCALIBRATED:
        return model
    return CalibratedClassifierCV(FrozenEstimator(model), method=method).fit(x, y)


@dataclass(frozen=True)
class Choice:
    """Each candidate's best half-life and calibration, and the table they came from."""

    windows: pd.DataFrame  # fold x candidate x half_life x method: held-out log loss, AUC, ...
    scores: pd.DataFrame  # candidate x half_life x method: recency-weighted log loss, steady

    def best(self, candidate: str) -> tuple[int | None, str, float]:
        """The half-life and calibration with the lowest weighted log loss, among the steady
        ones: no map, or a map that beat no map in every held-out window."""
        rows = self.scores[(self.scores["candidate"] == candidate) & self.scores["steady"]]
        row = rows.loc[rows["log_loss"].idxmin()]
        half_life = None if pd.isna(row["half_life"]) else int(row["half_life"])
        return half_life, str(row["method"]), float(row["log_loss"])

    def by_method(self, candidate: str, half_life: int | None) -> pd.Series:
        """The candidate's weighted held-out log loss per calibration, at one half-life."""
        rows = self.scores[_configured(self.scores, candidate, half_life)]
        return rows.set_index("method")["log_loss"]


def _configured(frame: pd.DataFrame, candidate: str, half_life: int | None) -> pd.Series:
    """Rows of `frame` (scores or windows) of one candidate at one half-life."""
    same = frame["half_life"].isna() if half_life is None else frame["half_life"] == half_life
    return (frame["candidate"] == candidate) & same


def evaluate_folds(
    folds: Sequence[Fold],
    makers: Mapping[str, Callable[[], BaseEstimator]],
    features: Sequence[Feature],
    *,
    label: str,
    half_lives: Sequence[int | None] = HALF_LIVES,
    on_step: Callable[[str], None] | None = None,
) -> Choice:
    """Every (candidate, half-life, calibration) fitted and scored on every fold; `on_step` is
    told which window is being fitted (progress)."""
    rows = []
    for number, fold in enumerate(folds):
        if on_step:
            on_step(f"held-out window {number + 1} of {len(folds)} ({fold.period})")
        x_train, y_train = _xy(fold.train, features, label)
        x_cal, y_cal = _xy(fold.calibration, features, label)
        x_out, y_out = _xy(fold.held_out, features, label)
        x_all, y_all = _xy(fold.before_held_out, features, label)
        window = {
            "fold": number,
            "period": fold.period,
            "held_out_rows": len(y_out),
            "held_out_rate": float(y_out.mean()),
        }
        # the simplest contender: the rate of everything before the window
        constant = np.full(len(y_out), y_all.mean())
        rows.append(window | _figures(BASE_RATE, None, UNCALIBRATED, y_out, constant))
        for name, make in makers.items():
            for half_life in half_lives:
                weights = recency_weights(fold.train["as_of"], half_life)
                model = fit_weighted(make(), x_train, y_train, weights)
                # left uncalibrated, a model learns from the calibration window too
                everything = fit_weighted(
                    make(), x_all, y_all, recency_weights(fold.before_held_out["as_of"], half_life)
                )
                plain = everything.predict_proba(x_out)[:, 1]
                refitted = {
                    UNCALIBRATED: plain,
                    SHIFT: expit(logit(plain) + log_odds_shift(model, x_cal, y_cal)),
                }
                for method in METHODS:
                    p = refitted.get(method)
                    if p is None:
                        p = calibrated(model, x_cal, y_cal, method).predict_proba(x_out)[:, 1]
                    rows.append(window | _figures(name, half_life, method, y_out, p))
    windows = pd.DataFrame(rows)
    # the latest fold weighs 1, each earlier one half the one after it
    windows["weight"] = np.power(0.5, windows["fold"].astype(float))
    keys = ["candidate", "half_life", "method"]
    weighted = windows.assign(w_loss=windows["log_loss"] * windows["weight"])
    sums = weighted.groupby(keys, dropna=False)[["w_loss", "weight"]].sum()
    scores = (sums["w_loss"] / sums["weight"]).rename("log_loss").reset_index()
    return Choice(windows=windows, scores=scores.assign(steady=_steady(windows, scores)))


def _steady(windows: pd.DataFrame, scores: pd.DataFrame) -> np.ndarray:
    """Per row of `scores`: no map, or a map that beat no map in every window at the same
    candidate and half-life. A map that wins on the weighted mean but loses in a window follows
    noise or one window's base rate, and the next window is as likely to go the other way."""
    keys = ["fold", "candidate", "half_life"]
    plain = windows[windows["method"] == UNCALIBRATED].set_index(keys)["log_loss"]
    mapped = windows[windows["method"] != UNCALIBRATED]
    against = plain.reindex(pd.MultiIndex.from_frame(mapped[keys])).to_numpy()
    beat = mapped.assign(beat=mapped["log_loss"].to_numpy() < against)
    every = beat.groupby(["candidate", "half_life", "method"], dropna=False)["beat"].all()
    index = pd.MultiIndex.from_frame(scores[["candidate", "half_life", "method"]])
    steady = every.reindex(index).astype("boolean").fillna(True).to_numpy(dtype=bool)
    return steady | (scores["method"] == UNCALIBRATED).to_numpy()


def _figures(
    name: str, half_life: int | None, method: str, y: np.ndarray, p: np.ndarray
) -> dict[str, object]:
    return {
        "candidate": name,
        "half_life": half_life,
        "method": method,
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "auc": float(roc_auc_score(y, p)),
        "mean_predicted": float(p.mean()),
    }


def _xy(part: pd.DataFrame, features: Sequence[Feature], label: str):
    return model_input(part, features), part[label].to_numpy(dtype=int)


# --- the drift report ---------------------------------------------------------------------------


def base_rate_by_period(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """Labelled snapshots and their positive share per quarter of `as_of`."""
    period = frame["as_of"].dt.to_period("Q").astype(str)
    table = frame.groupby(period)[label].agg(rows="size", rate="mean")
    return table.rename_axis("period").reset_index()


def psi(expected: pd.Series, actual: pd.Series, bins: int = PSI_BINS) -> float:
    """Population stability index of `actual` against `expected`: sum (a - e) ln(a / e) over
    bins (deciles of `expected` for numbers, categories otherwise; missing is a bin of its own)."""
    if pd.api.types.is_numeric_dtype(expected) and pd.api.types.is_numeric_dtype(actual):
        values = expected.dropna().to_numpy(dtype=float)
        inner = np.linspace(0, 1, bins + 1)[1:-1]
        edges = np.unique(np.quantile(values, inner)) if len(values) else np.array([])

        def binned(s: pd.Series) -> pd.Series:
            codes = np.searchsorted(edges, s.to_numpy(dtype=float), side="right").astype(object)
            codes[s.isna().to_numpy()] = "missing"
            return pd.Series(codes)

        e, a = binned(expected), binned(actual)
    else:
        e, a = expected.astype(object).fillna("missing"), actual.astype(object).fillna("missing")
    shares = pd.concat(
        [e.value_counts(normalize=True), a.value_counts(normalize=True)], axis=1
    ).fillna(0.0)
    # a bin empty on one side would be infinite: floor both shares at half a row of the smaller side
    floor = 0.5 / max(min(len(e), len(a)), 1)
    e_share, a_share = (shares.iloc[:, i].clip(lower=floor).to_numpy() for i in (0, 1))
    return float(np.sum((a_share - e_share) * np.log(a_share / e_share)))


def feature_drift(
    train: pd.DataFrame, test: pd.DataFrame, features: Sequence[Feature], top: int = 5
) -> pd.DataFrame:
    """The `top` features by PSI between the train and the test slice."""
    rows = [
        {"feature": f.name, "psi": psi(train[f.name], test[f.name])}
        for f in features
        if f.name in train and f.name in test
    ]
    table = pd.DataFrame(rows, columns=["feature", "psi"])
    return table.sort_values("psi", ascending=False).head(top).reset_index(drop=True)


@dataclass(frozen=True)
class DriftReport:
    """What the card shows about drift and the choice."""

    base_rates: pd.DataFrame  # period, rows, rate
    moved: pd.DataFrame  # feature, psi (largest first)
    windows: pd.DataFrame  # per fold and candidate: its chosen half-life and calibration's figures
    folds: int


def drift_report(
    slices, features: Sequence[Feature], label: str, choice: Choice | None, chosen: Mapping
) -> DriftReport:
    """The card's drift section. `chosen`: candidate -> (half_life, method) used for it."""
    labelled = pd.concat([slices.history, slices.test], ignore_index=True)
    windows = pd.DataFrame()
    folds = 0
    if choice is not None and not choice.windows.empty:
        w = choice.windows
        picked = [
            w[_configured(w, name, half_life) & (w["method"] == method)]
            for name, (half_life, method) in chosen.items()
        ]
        columns = ["period", "held_out_rows", "held_out_rate", "candidate", "half_life", "method",
                   "log_loss", "auc", "mean_predicted"]  # fmt: skip
        windows = pd.concat(picked)[columns].sort_values(["period", "candidate"])
        windows["half_life"] = windows["half_life"].map(
            lambda h: "none" if pd.isna(h) else f"{int(h)} days"
        )
        folds = int(w["fold"].nunique())
    return DriftReport(
        base_rates=base_rate_by_period(labelled, label),
        moved=feature_drift(slices.train, slices.test, features),
        windows=windows.reset_index(drop=True),
        folds=folds,
    )
