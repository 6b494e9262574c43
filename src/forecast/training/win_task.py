"""The deal-win task: its name and parameters, the out-of-time windows and slices, and the
snapshot frame it trains on."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forecast.data.tables import CrmTables, no_features
from forecast.features.deal_schema import (
    DEAL_FEATURES,
    KEY_COLUMNS,
    Feature,
    attribute_features,
    unavailable_features,
)
from forecast.features.deals import snapshot_dates, training_frame
from forecast.features.on_dask import deal_features_with, deal_frames_of_parts
from forecast.model import TreeParams
from forecast.training.drift import HALF_LIVES, ROLLING_FOLDS
from forecast.training.leakage import source_of
from forecast.training.task import CANDIDATES, NotEnoughDataError, Task, fingerprint

if TYPE_CHECKING:
    from distributed import Client

    from forecast.cluster import Progress

log = logging.getLogger(__name__)

EXPERIMENT = "deal-win"

MODEL_NAME = "deal-win"

TASK = Task("win", MODEL_NAME, EXPERIMENT, label="won", group="deal_id", can_leave_out=True)

MIN_CLOSED_PER_CLASS = 40  # won and lost closed deals needed, each, before anything is trained

BASELINES = ("base_rate", "stage_fixed", "stage_history")  # and the best rule_<column>

METRIC_PREFIX = {
    "model": "test",
    "model_uncalibrated": "test_uncalibrated",
    "base_rate": "baseline_base_rate",
    "stage_fixed": "baseline_stage_fixed",
    "stage_history": "baseline_stage_history",
    "logistic": "baseline_logistic",
    "lightgbm": "candidate_lightgbm",
    "truth": "truth",
}


@dataclass(frozen=True)
class WinParams:
    """Everything that decides the model, logged as the run's parameters."""

    seed: int = 0
    label_lag_days: int | None = None  # None: chosen from the data (`WindowChoice.fit`)
    test_days: int | None = None
    calibration_days: int | None = None
    snapshot_freq: str = "W-SUN"
    tree: TreeParams = field(default_factory=TreeParams)
    logistic_c: float = 0.1
    candidates: tuple[str, ...] = CANDIDATES
    half_lives: tuple[int | None, ...] = HALF_LIVES  # recency weightings tried (days)
    rolling_folds: int = ROLLING_FOLDS  # held-out windows the choice is made on
    allow_columns: tuple[str, ...] = ()  # columns the leak guard would refuse, checked by a person
    # columns known only at the close (a won deal's amount set to what was booked): kept for
    # bookings, but no feature reads them
    leave_out: tuple[str, ...] = ()

    def flat(self) -> dict[str, object]:
        out = {k: v for k, v in asdict(self).items() if k != "tree"}
        out["candidates"] = ",".join(self.candidates)
        out["half_lives"] = ",".join("none" if h is None else str(h) for h in self.half_lives)
        out["allow_columns"] = ",".join(self.allow_columns)
        out["leave_out"] = ",".join(self.leave_out)
        return out | {f"tree_{k}": v for k, v in asdict(self.tree).items()}


FULL_WINDOWS = (120, 91, 91)  # label lag, test, calibration days when the history allows them

MIN_TRAIN_DAYS = 182  # history before the calibration slice that the full windows need

MIN_WINDOW_DAYS = 28


@dataclass(frozen=True)
class WindowChoice:
    """Label lag, test and calibration days, and why: given, or fitted to the data's span."""

    label_lag_days: int
    test_days: int
    calibration_days: int
    why: str

    @classmethod
    def fit(cls, tables: CrmTables, params: WinParams) -> WindowChoice:
        """The full windows when the history holds them, else windows scaled to the data.

        The label lag is then the 90th percentile of the closed deals' cycle length (so most
        deals in the test slice have closed by the export), and test and calibration each take
        a quarter of what is left; a window set on the command line is always kept.
        """
        given = (params.label_lag_days, params.test_days, params.calibration_days)
        deals = tables.deals
        start = deals["created_at"].min()
        span = (tables.as_of - start).days if pd.notna(start) else 0
        if span >= sum(FULL_WINDOWS) + MIN_TRAIN_DAYS:
            lag, test, cal = (
                g if g is not None else d for g, d in zip(given, FULL_WINDOWS, strict=True)
            )
            why = "the full windows (the history is long enough)"
        else:
            closed = deals[deals["closed_at"].notna()]
            cycle = (closed["closed_at"] - closed["created_at"]).dt.days
            fitted_lag = int(np.clip(np.ceil(cycle.quantile(0.9)) if len(cycle) else 90, 14, 120))
            lag = given[0] if given[0] is not None else fitted_lag
            rest = max(span - lag, 0)
            fitted = max(MIN_WINDOW_DAYS, min(91, 7 * round(rest / 4 / 7)))
            test = given[1] if given[1] is not None else fitted
            cal = given[2] if given[2] is not None else fitted
            lag_why = (
                f"90th percentile of the cycle length ({fitted_lag} days)"
                if len(cycle)
                else f"{fitted_lag} days (no closed deals to measure cycles on)"
            )
            why = (
                f"windows fitted to a {span}-day history: label lag = {lag_why}, test and "
                "calibration a quarter each of what is left"
            )
        if any(g is not None for g in given):
            why += "; set on the command line: " + ", ".join(
                f"{n} {g}"
                for n, g in zip(("label lag", "test", "calibration"), given, strict=True)
                if g is not None
            )
        return cls(int(lag), int(test), int(cal), why)


@dataclass(frozen=True)
class TrainHooks:
    """Ways for tests and experiments to alter the data; real runs use none (logged if used).

    Attributes:
        extra_features: returns new numeric columns (same index) to add to the snapshot frame;
            they become model features (how the leakage canary is tested).
        fit_rows: rewrites the train and calibration rows, never the test rows (e.g. shuffled
            labels, for a model that must fail the gate).
    """

    extra_features: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    fit_rows: Callable[[pd.DataFrame], pd.DataFrame] | None = None


@dataclass(frozen=True)
class Windows:
    """Snapshot windows: train (start, train_end], calibration (.., calibration_end], test."""

    start: pd.Timestamp
    train_end: pd.Timestamp
    calibration_end: pd.Timestamp
    test_end: pd.Timestamp
    export_as_of: pd.Timestamp

    choice: WindowChoice | None = None

    @classmethod
    def before(cls, tables: CrmTables, params: WinParams) -> Windows:
        choice = WindowChoice.fit(tables, params)
        test_end = tables.as_of.normalize() - pd.Timedelta(days=choice.label_lag_days)
        calibration_end = test_end - pd.Timedelta(days=choice.test_days)
        train_end = calibration_end - pd.Timedelta(days=choice.calibration_days)
        start = tables.deals["created_at"].min()
        if pd.isna(start) or start >= train_end - pd.Timedelta(days=MIN_WINDOW_DAYS):
            raise NotEnoughDataError(
                f"the data starts {start:%Y-%m-%d} but training must end by "
                f"{train_end:%Y-%m-%d} (export as-of {tables.as_of:%Y-%m-%d} minus "
                f"{choice.label_lag_days} days of label lag, {choice.test_days} days of test and "
                f"{choice.calibration_days} of calibration, {choice.why}): export more history, "
                "or set shorter windows with --label-lag-days, --test-days, --calibration-days"
            )
        return cls(start.normalize(), train_end, calibration_end, test_end, tables.as_of, choice)

    def describe(self) -> dict[str, str]:
        day = "%Y-%m-%d"
        return {
            "train": f"{self.start:{day}} .. {self.train_end:{day}}",
            "calibration": f"{self.train_end:{day}} .. {self.calibration_end:{day}}",
            "test": f"{self.calibration_end:{day}} .. {self.test_end:{day}}",
            "export_as_of": f"{self.export_as_of:{day}}",
        } | ({"choice": self.choice.why} if self.choice else {})


@dataclass(frozen=True)
class Slices:
    train: pd.DataFrame
    calibration: pd.DataFrame
    test: pd.DataFrame
    unlabelled_share: Mapping[str, float]
    history: pd.DataFrame  # every labelled snapshot before the test slice (rolling windows)


@dataclass(frozen=True)
class OnCluster:
    """Where the features are computed: the cluster of `client` (`progress` hears its parts
    finish); with `parts`, a store in parts (its version folder) whose workers read their parts
    themselves, the calling process holding none of the deals' own rows (docs/scale.md)."""

    client: Client
    progress: Progress | None = None
    parts: Path | None = None


def build_frame(
    tables: CrmTables,
    windows: Windows,
    params: WinParams,
    hooks: TrainHooks,
    cluster: OnCluster | None = None,
) -> tuple[pd.DataFrame, tuple[Feature, ...], Mapping[str, str]]:
    """Weekly snapshots from the first deal to the test window's end, features and labels,
    the features used and those the data cannot give; on the `cluster` when given (the same
    numbers)."""
    dates = snapshot_dates(windows.start, windows.test_end, freq=params.snapshot_freq)
    if cluster is not None and cluster.parts is not None:
        context, frames = deal_frames_of_parts(
            cluster.client, cluster.parts, tables, dates, _as_given, progress=cluster.progress
        )
        # the parts' rows in one process's order: by date, then the deals in store order
        frame = pd.concat(frames, ignore_index=True)
        order = np.argsort(frame["as_of"].to_numpy("datetime64[ns]"), kind="stable")
        frame = frame.iloc[order].reset_index(drop=True)
        attributes, unavailable = context.attributes, context.unavailable
    else:
        client, progress = (cluster.client, cluster.progress) if cluster else (None, None)
        featurize = deal_features_with(client, progress)
        frame = training_frame(tables, dates, labelled_only=False, features=featurize)
        attributes, unavailable = attribute_features(tables), unavailable_features(tables)
    features = (*DEAL_FEATURES, *attributes)
    if hooks.extra_features is not None:
        extra = hooks.extra_features(frame)
        frame = pd.concat([frame, extra.set_axis(frame.index)], axis=1)
        features = (*features, *(Feature(str(c)) for c in extra.columns))
    return frame, features, unavailable


ATTRIBUTES_TABLE = "deal_attributes."


def reads(column: str) -> bool:
    """Whether a deal-win feature reads `column` (as `deals.amount`, an attribute's column, or
    a feature's own name)."""
    names = {source_of(f.name) for f in DEAL_FEATURES} | {f.name for f in DEAL_FEATURES}
    return column.startswith(ATTRIBUTES_TABLE) or column in names


def check_leave_out(leave_out: Sequence[str]) -> None:
    """`left_in`'s check before the features are made (an attribute's column: after).

    Raises:
        ValueError: a column no feature reads.
    """
    left_in(DEAL_FEATURES, [c for c in leave_out if not c.startswith(ATTRIBUTES_TABLE)])


def left_in(features: Sequence[Feature], leave_out: Sequence[str]) -> tuple[Feature, ...]:
    """`features` but those reading a column of `leave_out` (as `deals.amount`, or a feature's
    own name).

    Raises:
        ValueError: a column no feature reads, named with those that can be left out.
    """
    read = {source_of(f.name) for f in features} | {f.name for f in features}
    if unknown := [c for c in leave_out if c not in read]:
        columns = sorted({source_of(f.name) for f in features})
        raise ValueError(
            f"--leave-out {', '.join(unknown)}: no feature reads it; the columns the features "
            f"read: {', '.join(columns)}"
        )
    dropped = set(leave_out)
    return tuple(f for f in features if f.name not in dropped and source_of(f.name) not in dropped)


def _as_given(frame: pd.DataFrame, part: CrmTables) -> pd.DataFrame:
    return frame


def check_trainable(tables: CrmTables, params: WinParams | None = None) -> Windows:
    """What `prepare` refuses before a feature is computed, checked on the labels alone (quick
    enough for `forecast data doctor`): windows the history can hold, enough won and lost deals
    open at a snapshot, both outcomes in every out-of-time slice. Returns the windows.

    Raises:
        NotEnoughDataError: saying which, as `forecast train win` would.
    """
    params = params or WinParams()
    windows = Windows.before(tables, params)
    dates = snapshot_dates(windows.start, windows.test_end, freq=params.snapshot_freq)
    frame = training_frame(tables, dates, labelled_only=False, features=no_features)
    check_closed_deals(frame, windows, tables)
    split(frame, windows)
    return windows


def check_closed_deals(frame: pd.DataFrame, windows: Windows, tables: CrmTables) -> None:
    """Refuse to train on fewer than MIN_CLOSED_PER_CLASS won and lost deals each."""
    outcome = frame.dropna(subset=["won"]).drop_duplicates("deal_id")["won"]
    won, lost = int((outcome == 1).sum()), int((outcome == 0).sum())
    if won < MIN_CLOSED_PER_CLASS or lost < MIN_CLOSED_PER_CLASS:
        deals = tables.deals
        counts = deals["outcome"].value_counts()
        missing = [o for o in ("won", "lost") if not counts.get(o, 0)]
        never_open = bool((deals["closed_at"] <= deals["created_at"]).mean() > 0.9)
        if missing:
            hint = (
                f"there are no {missing[0]} deals at all: a win model learns from both "
                f"outcomes, so export the {missing[0]} (or disqualified) opportunities too; an "
                "export of orders or of won deals only cannot train it"
            )
        elif never_open:
            hint = (
                "most deals close the moment they are created, so none was open to learn "
                "from: map the date each deal was opened to created_at"
            )
        else:
            hint = "import more history, or wait for more deals to close"
        raise NotEnoughDataError(
            f"not enough closed deals to train a win model: {won} won and {lost} lost deals "
            f"were open at a weekly snapshot up to {windows.test_end:%Y-%m-%d}; at least "
            f"{MIN_CLOSED_PER_CLASS} of each are needed ({hint})"
        )


FEW_DEALS = 100  # fewer closed deals of an outcome in a slice than this: its figures are noisy


def warn_if_little(slices: Slices) -> None:
    """Say how little there is to learn from and to test on, when it is little."""
    for name in ("train", "test"):
        part = getattr(slices, name).drop_duplicates("deal_id")
        won, lost = int((part["won"] == 1).sum()), int((part["won"] == 0).sum())
        if min(won, lost) < FEW_DEALS:
            log.warning(
                "the %s slice holds only %s won and %s lost deals: its figures are noisy (the "
                "gate's bootstrap interval says how much)",
                name,
                won,
                lost,
            )


def split(frame: pd.DataFrame, windows: Windows) -> Slices:
    """Out-of-time slices by as_of, labelled rows only; train purged of later slices' deals.

    Only the train slice is purged: trees could learn a deal from its earlier snapshots. The
    calibration map is one-dimensional and cannot, and purging it would keep only the deals
    that closed fast (mostly early losses) and bias the map.
    """
    as_of = frame["as_of"]
    parts = {
        "train": frame[as_of <= windows.train_end],
        "calibration": frame[(as_of > windows.train_end) & (as_of <= windows.calibration_end)],
        "test": frame[(as_of > windows.calibration_end) & (as_of <= windows.test_end)],
    }
    later = pd.concat([parts["calibration"]["deal_id"], parts["test"]["deal_id"]])
    parts["train"] = parts["train"][~parts["train"]["deal_id"].isin(later)]
    unlabelled = {n: float(p["won"].isna().mean()) if len(p) else 0.0 for n, p in parts.items()}
    labelled = {n: p[p["won"].notna()].reset_index(drop=True) for n, p in parts.items()}
    for name, part in labelled.items():
        if part["won"].nunique() < 2:
            raise NotEnoughDataError(
                f"the {name} slice ({windows.describe()[name]}) has {len(part)} labelled "
                "snapshots and not both outcomes: more history is needed"
            )
    before_test = frame[(as_of <= windows.calibration_end) & frame["won"].notna()]
    history = before_test.reset_index(drop=True)  # not purged: each rolling fold purges its own
    return Slices(**labelled, unlabelled_share=unlabelled, history=history)


@dataclass(frozen=True)
class Prepared:
    """The data side of a run: windows, slices, the features used and their fingerprint."""

    windows: Windows
    slices: Slices
    features: tuple[Feature, ...]
    fingerprint: str
    unavailable: Mapping[str, str] = field(default_factory=dict)


def prepare(
    tables: CrmTables, params: WinParams, hooks: TrainHooks, cluster: OnCluster | None = None
) -> Prepared:
    """Snapshots, features (on the `cluster` when given), the closed-deal check and the
    out-of-time split."""
    windows = Windows.before(tables, params)
    check_leave_out(params.leave_out)
    frame, features, unavailable = build_frame(tables, windows, params, hooks, cluster)
    features = left_in(features, params.leave_out)
    check_closed_deals(frame, windows, tables)
    slices = split(frame, windows)
    if hooks.fit_rows is not None:
        slices = replace(
            slices,
            train=hooks.fit_rows(slices.train),
            calibration=hooks.fit_rows(slices.calibration),
            history=hooks.fit_rows(slices.history),
        )
    columns = [*KEY_COLUMNS, *(f.name for f in features), "won"]
    inputs = pd.concat([slices.train, slices.calibration, slices.test])
    return Prepared(windows, slices, features, fingerprint(inputs, columns), unavailable)
