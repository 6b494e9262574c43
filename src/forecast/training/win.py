"""Train the deal win model out of time, check it against baselines, log one MLflow run.

The time line, from the export's as-of (`tables.as_of`) backwards, on weekly snapshots:

    | train ... | calibration (91 d) | test (91 d) | label lag (120 d) | as-of

- test: the latest slice whose labels are known. Deals still open at the as-of have no label, so
  test snapshots end `label_lag_days` (120) before it: 95 % of closed deals close within 94 days
  of creation on the default world, so almost every test deal is resolved (the share that is
  not, and so is dropped, is logged as `test_unlabelled_share`).
- calibration: the slice before, where the probability map (sigmoid or isotonic) is fitted.
- train: everything earlier.

The candidate, its half-life and its map (or none) are chosen on three held-out windows before
the test slice, shifted back a window at a time (`forecast.training.drift`).

A deal's weekly snapshots can fall in several slices. The train slice drops every deal that is
also in a later slice, so the trees never see a test deal's label (this is also what a model
trained at the end of the train window could have known: those deals were still open).
The model logged is the one tested: trained up to the train window's end and calibrated on
the next slice (about seven months behind the export when it is registered), or, when no map
beat none in every held-out window, trained up to the calibration window's end and not mapped.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.metrics import log_loss

from forecast.data.tables import CrmTables
from forecast.data.world import WorldTruth
from forecast.features.deals import (
    ATTRIBUTE_PREFIX,
    DEAL_FEATURES,
    KEY_COLUMNS,
    Feature,
    attribute_features,
    snapshot_dates,
    training_frame,
    unavailable_features,
)
from forecast.model import TreeParams, model_input
from forecast.training import evaluate
from forecast.training.choice import Fitted, flat_metrics
from forecast.training.drift import HALF_LIVES, ROLLING_FOLDS, DriftReport
from forecast.training.leakage import LEAK_AUC, LeakageSuspected, Suspect, screen_columns
from forecast.training.registry import Evaluation, GateDecision
from forecast.training.shared import retrain, train
from forecast.training.task import CANDIDATES, NotEnoughDataError, RetrainOutcome, Task, fingerprint
from forecast.training.tracking import (
    choice_card_lines,
    code_version,
    default_card_dir,
    log_choice,
    markdown,
)

log = logging.getLogger(__name__)

EXPERIMENT = "deal-win"
MODEL_NAME = "deal-win"
TASK = Task("win", MODEL_NAME, EXPERIMENT, label="won", group="deal_id")
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

__all__ = ["LeakageSuspected", "NotEnoughDataError", "RetrainOutcome"]


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

    def flat(self) -> dict[str, object]:
        out = {k: v for k, v in asdict(self).items() if k != "tree"}
        out["candidates"] = ",".join(self.candidates)
        out["half_lives"] = ",".join("none" if h is None else str(h) for h in self.half_lives)
        out["allow_columns"] = ",".join(self.allow_columns)
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
class WinTrainResult:
    """What a training run produced; `evaluation()` is what the registry's gate needs."""

    run_id: str
    model_uri: str
    model: BaseEstimator
    candidate: str
    calibration_method: str
    selection: (
        pd.DataFrame
    )  # candidate x calibration: held-out log loss (see forecast.training.drift)
    metrics: pd.DataFrame  # contenders x metrics on the test rows
    by_stage: pd.DataFrame
    by_segment: pd.DataFrame
    windows: Windows
    slices: Slices
    features: tuple[Feature, ...]
    gain_share: pd.Series
    fingerprint: str
    code_version: str
    card_path: Path
    params: WinParams
    unavailable: Mapping[str, str] = field(default_factory=dict)  # feature -> why it is off
    rule_scores: Mapping[str, np.ndarray] = field(default_factory=dict)  # base rate, best rule
    drift: DriftReport | None = None  # what the choice over held-out windows saw
    half_life: int | None = None  # days, of the chosen candidate's recency weights

    def evaluation(self) -> Evaluation:
        """The test rows and scores the gate compares a champion with."""
        test = self.slices.test
        baselines = [n for n in self.metrics.index if n in BASELINES or n.startswith("rule_")]
        return Evaluation(
            features=model_input(test, self.features),
            won=test["won"].to_numpy(dtype=int),
            metrics={m: float(self.metrics.loc["model", m]) for m in ("auc", "log_loss")},
            baselines={name: float(self.metrics.loc[name, "log_loss"]) for name in baselines},
            probability=self.model.predict_proba(model_input(test, self.features))[:, 1],
            rules=self.rule_scores,
            groups=test["deal_id"].to_numpy(),
        )


# --- data ----------------------------------------------------------------------------------------


def build_frame(
    tables: CrmTables, windows: Windows, params: WinParams, hooks: TrainHooks
) -> tuple[pd.DataFrame, tuple[Feature, ...]]:
    """Weekly snapshots from the first deal to the test window's end, features and labels."""
    dates = snapshot_dates(windows.start, windows.test_end, freq=params.snapshot_freq)
    frame = training_frame(tables, dates, labelled_only=False)
    features = (*DEAL_FEATURES, *attribute_features(tables))
    if hooks.extra_features is not None:
        extra = hooks.extra_features(frame)
        frame = pd.concat([frame, extra.set_axis(frame.index)], axis=1)
        features = (*features, *(Feature(str(c)) for c in extra.columns))
    return frame, features


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


# --- the pipeline --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """The data side of a run: windows, slices, the features used and their fingerprint."""

    windows: Windows
    slices: Slices
    features: tuple[Feature, ...]
    fingerprint: str
    unavailable: Mapping[str, str] = field(default_factory=dict)


def prepare(tables: CrmTables, params: WinParams, hooks: TrainHooks) -> Prepared:
    """Snapshots, features, the closed-deal check and the out-of-time split."""
    windows = Windows.before(tables, params)
    frame, features = build_frame(tables, windows, params, hooks)
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
    return Prepared(
        windows, slices, features, fingerprint(inputs, columns), unavailable_features(tables)
    )


def baseline_scores(data: Prepared) -> dict[str, np.ndarray]:
    """The simple baselines learned on the train slice, scored on the test rows: the base
    rate, the stage rules where the data has stages, and the best per-column rule."""
    attributes = tuple(f.name for f in data.features if f.name.startswith(ATTRIBUTE_PREFIX))
    baselines, _ = evaluate.simple_baselines(
        data.slices.train,
        data.slices.test,
        unavailable=list(data.unavailable),
        columns=(*evaluate.RULE_COLUMNS, *attributes),
    )
    return baselines


def score_test(data: Prepared, fitted: Fitted, truth: WorldTruth | None) -> dict[str, np.ndarray]:
    """P(won) on the test rows from the model, its uncalibrated self and every baseline."""
    test = data.slices.test
    x = model_input(test, data.features)
    lightgbm = fitted.candidates["lightgbm"].predict_proba(x)[:, 1]
    baselines = baseline_scores(data)
    scores = {
        "model": fitted.calibration.model.predict_proba(x)[:, 1],
        "model_uncalibrated": fitted.candidates[fitted.chosen].predict_proba(x)[:, 1],
        **baselines,
        "logistic": fitted.candidates["logistic"].predict_proba(x)[:, 1],
        "lightgbm": lightgbm,
    }
    if truth is not None:
        scores["truth"] = truth.win_probability(test["deal_id"], test["stage"])
    return scores


class WinPipeline:
    """The deal win task: weekly deal snapshots, windows fitted to the data, stage and rule
    baselines; `forecast.training.shared` runs it."""

    task = TASK

    def prepare(self, tables: CrmTables, params: WinParams, hooks: TrainHooks) -> Prepared:
        return prepare(tables, params, hooks)

    def report(self, data: Prepared) -> None:
        s = data.slices
        log.info(
            "win model: %s train, %s calibration, %s test snapshots (%s)",
            *(f"{len(part):,}" for part in (s.train, s.calibration, s.test)),
            "; ".join(f"{k} {v}" for k, v in data.windows.describe().items()),
        )
        warn_if_little(s)
        for reason in dict.fromkeys(data.unavailable.values()):
            names = [n for n, r in data.unavailable.items() if r == reason]
            log.warning("features off (%s): %s", reason, ", ".join(names))

    def log_inputs(self, params: WinParams, data: Prepared, hooks: TrainHooks) -> None:
        _log_inputs(params, data, hooks)

    def mapped_suspects(self, tables: CrmTables) -> list[Suspect]:
        return screen_columns(tables)

    def score(
        self, data: Prepared, fitted: Fitted, truth: WorldTruth | None, params: WinParams
    ) -> dict[str, np.ndarray]:
        return score_test(data, fitted, truth)

    def result(
        self,
        run_id: str,
        model_uri: str,
        data: Prepared,
        fitted: Fitted,
        scores: Mapping[str, np.ndarray],
        *,
        params: WinParams,
        card_path: Path,
    ) -> WinTrainResult:
        test = data.slices.test
        y = test["won"].to_numpy(dtype=int)
        return WinTrainResult(
            run_id=run_id,
            model_uri=model_uri,
            model=fitted.calibration.model,
            candidate=fitted.chosen,
            calibration_method=fitted.calibration.method,
            selection=fitted.selection,
            drift=fitted.drift,
            half_life=fitted.half_life,
            metrics=evaluate.compare(y, scores),
            by_stage=evaluate.compare_by(test["stage"], y, scores),
            by_segment=evaluate.compare_by(test["segment"], y, scores),
            windows=data.windows,
            slices=data.slices,
            features=data.features,
            gain_share=fitted.gain_share,
            fingerprint=data.fingerprint,
            code_version=code_version(),
            card_path=card_path,
            params=params,
            unavailable=data.unavailable,
            rule_scores=_rule_scores(scores, y),
        )

    def log_results(self, result: WinTrainResult, scores: Mapping[str, np.ndarray]) -> None:
        _log_results(result, result.slices.test["won"].to_numpy(dtype=int), scores)

    def write_card(self, result: WinTrainResult, decision: GateDecision | None) -> Path:
        return write_card(result, decision)


WIN = WinPipeline()


def train_win(
    tables: CrmTables,
    *,
    truth: WorldTruth | None = None,
    params: WinParams | None = None,
    hooks: TrainHooks | None = None,
    card_dir: Path | None = None,
    on_step: Callable[[str], None] | None = None,
) -> WinTrainResult:
    """Train, calibrate, evaluate and log the deal win model as one MLflow run.

    Args:
        tables: the CRM as exported (its `as_of` sets the time line, see the module docstring).
        truth: the generator's truth on generated worlds, scored as the ceiling; None otherwise.
        params: model and window settings (defaults: `WinParams()`).
        hooks: test and experiment hooks (see `TrainHooks`).
        card_dir: where `deal-win.md` is written (default: `default_card_dir()`).
        on_step: called with each step's name, for progress display.

    Returns:
        The run's id and model, and the metrics against the baselines on the test rows.

    Raises:
        NotEnoughDataError: fewer than MIN_CLOSED_PER_CLASS won or lost deals, or a slice lacks
            one of the outcomes.
        LeakageSuspected: the leak guard refused a column, or the test AUC is above 0.99; the
            run is then marked FAILED and no model is logged.
    """
    return train(
        WIN,
        tables,
        params=params or WinParams(),
        hooks=hooks or TrainHooks(),
        truth=truth,
        card_dir=card_dir or default_card_dir(),
        on_step=on_step,
    )


def _rule_scores(scores: Mapping[str, np.ndarray], y: np.ndarray) -> dict[str, np.ndarray]:
    """The base rate and the best rule by test log loss: what the model's AUC must hold up to."""
    rules = [n for n in scores if n == "stage_history" or n.startswith("rule_")]
    losses = {n: log_loss(y, scores[n], labels=[0, 1]) for n in rules}
    best = min(losses, key=losses.__getitem__) if losses else None
    return {"base_rate": scores["base_rate"]} | ({best: scores[best]} if best else {})


def _log_inputs(params: WinParams, data: Prepared, hooks: TrainHooks) -> None:
    slices = data.slices
    mlflow.log_params(
        params.flat() | {f"window_{k}": v for k, v in data.windows.describe().items()}
    )
    parts = {name: getattr(slices, name) for name in ("train", "calibration", "test")}
    mlflow.log_params(
        {f"{name}_rows": len(part) for name, part in parts.items()}
        | {f"{name}_deals": part["deal_id"].nunique() for name, part in parts.items()}
        | {"features": ",".join(f.name for f in data.features)}
    )
    mlflow.log_metrics({f"{k}_unlabelled_share": v for k, v in slices.unlabelled_share.items()})
    if used := [n for n in ("extra_features", "fit_rows") if getattr(hooks, n) is not None]:
        mlflow.set_tag("hooks", ",".join(used))


def _log_results(
    result: WinTrainResult, y_test: np.ndarray, scores: Mapping[str, np.ndarray]
) -> None:
    """Metrics, reliability diagram, per-stage and per-segment tables and the model card."""
    mlflow.log_metrics(flat_metrics(result.metrics, METRIC_PREFIX, rate_name="test_win_rate"))
    log_choice(result)
    shown = {
        k: v
        for k, v in scores.items()
        if k in ("model", "base_rate", "stage_fixed", "stage_history", "truth")
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        evaluate.plot_reliability(y_test, shown, folder / "reliability.png", title="deal win, test")
        result.metrics.rename_axis("contender").to_csv(folder / "metrics.csv")
        result.by_stage.to_csv(folder / "metrics_by_stage.csv", index=False)
        result.by_segment.to_csv(folder / "metrics_by_segment.csv", index=False)
        mlflow.log_artifacts(str(folder), artifact_path="evaluation")
    write_card(result)
    mlflow.log_artifact(str(result.card_path), artifact_path="card")


# --- model card ----------------------------------------------------------------------------------


CONTENDER_NAMES = {
    "model": "**model** (as served)",
    "model_uncalibrated": "its candidate on the train slice, no map",
    "base_rate": "baseline: base rate (train slice)",
    "stage_fixed": "baseline: fixed stage probabilities",
    "stage_history": "baseline: stage win rate (history)",
    "logistic": "baseline: logistic regression",
    "lightgbm": "candidate: LightGBM, uncalibrated",
    "truth": "truth (the generator's probability)",
}


def _card_data(result: WinTrainResult) -> list[str]:
    w, s, p = result.windows, result.slices, result.params
    spans = w.describe()

    def rows(name: str) -> str:
        part = getattr(s, name)
        return f"{len(part):,} snapshots of {part['deal_id'].nunique():,} deals"

    return [
        "## Data",
        "",
        f"- Export as-of {w.export_as_of:%Y-%m-%d}; snapshots of every open deal"
        f" ({p.snapshot_freq}).",
        f"- Train {spans['train']}: {rows('train')}.",
        f"- Calibration {spans['calibration']}: {rows('calibration')}.",
        f"- Windows: {w.choice.why if w.choice else 'as given'}.",
        f"- Test {spans['test']}: {rows('test')}. It ends {_lag(w)} days before the",
        f"  export so its deals have closed; {s.unlabelled_share['test']:.1%} of its snapshots",
        "  were still open then and are left out.",
        "- The train slice drops every deal that is also in a later slice.",
        f"- Data fingerprint `{result.fingerprint[:16]}`, code `{result.code_version}`,"
        f" seed {p.seed}.",
    ]


def _lag(windows: Windows) -> int:
    return (windows.export_as_of.normalize() - windows.test_end).days


def _card_choice(result: WinTrainResult) -> list[str]:
    return choice_card_lines(result, "deal")


def _card_metrics(result: WinTrainResult) -> list[str]:
    m = result.metrics
    table = m[list(evaluate.METRICS)].rename(index=CONTENDER_NAMES).rename_axis("contender")
    reference = "stage_fixed" if "stage_fixed" in m.index else "base_rate"
    lift = 1 - float(m.loc["model", "log_loss"] / m.loc[reference, "log_loss"])
    fixed = ", ".join(f"{k} {v:.2f}" for k, v in evaluate.STAGE_PROBABILITIES.items())
    against = (
        f"the CRM's fixed stage probabilities ({fixed})"
        if reference == "stage_fixed"
        else "the base rate (this data has no stage history)"
    )
    by_stage = result.by_stage.pivot(index="group", columns="model", values="log_loss")
    by_segment = result.by_segment.pivot(index="group", columns="model", values="auc")
    return [
        "## Test metrics against the baselines (same rows)",
        "",
        f"ECE over {evaluate.ECE_BINS} equal-frequency bins. Log loss is {lift:.1%} lower than",
        f"{against}. `rule_<column>` is the best simple rule the data allows: the training",
        "window's win rate per value of that column.",
        "",
        markdown(table.reset_index()),
        "",
        "Log loss by stage:",
        "",
        markdown(by_stage.rename_axis("stage").reset_index()),
        "",
        "ROC AUC by segment:",
        "",
        markdown(by_segment.rename_axis("segment").reset_index()),
    ]


def _card_features(result: WinTrainResult) -> list[str]:
    direction = {1: "never lowers", -1: "never raises", 0: ""}
    table = pd.DataFrame(
        {
            "feature": [f.name for f in result.features],
            "kind": [f.kind for f in result.features],
            "monotone": [direction[f.monotone] for f in result.features],
            "gain share": [float(result.gain_share.get(f.name, 0.0)) for f in result.features],
        }
    )
    return [
        "## Features",
        "",
        "Point in time (`forecast.features.deals`); monotone constraints as declared there;",
        "gain share from the LightGBM candidate.",
        "",
        markdown(table),
    ]


def _card_limits(result: WinTrainResult) -> list[str]:
    m = result.metrics
    lines = ["## Known limits", ""]
    if "truth" in m.index:
        lines += [
            f"- The generator's truth scores ROC AUC {m.loc['truth', 'auc']:.3f} on the same rows,"
            f" the model {m.loc['model', 'auc']:.3f}. Part of the truth is recorded nowhere:",
            "  each deal's latent engagement shows only through a few activities early on, a",
            "  rep's skill and a product's fit only through a few hundred closed deals, and each",
            "  deal has its own noise. No model of the recorded data can reach it.",
        ]
    off = result.unavailable
    if off:
        lines += [
            f"- {len(off)} of {len(DEAL_FEATURES)} features are off (empty on every row), because"
            " the data lacks what they read:",
            *(
                f"  - {reason}: {', '.join(n for n, r in off.items() if r == reason)}"
                for reason in dict.fromkeys(off.values())
            ),
        ]
    if result.params.allow_columns:
        lines += [
            "- The leak guard was overridden for: "
            f"{', '.join(result.params.allow_columns)} (checked by a person, `--allow-column`).",
        ]
    return [
        *lines,
        "- Only deals that closed are scored: deals still open at the export (longer, and more",
        "  often lost) are missing from the test slice.",
        "- Weekly snapshots weigh a deal by how long it stays open, in training and in metrics.",
        "- Monotone constraints hold only for the features declared monotone; elsewhere the",
        "  trees may bend (checked on average by tests/model/test_win_model.py).",
        "- The leak guard (`forecast.training.leakage`) refuses, before any fit, columns filled",
        "  mostly for one",
        f"  outcome, a final close date used as the expected close, and any feature that alone"
        f" reaches out-of-time AUC {LEAK_AUC}.",
    ]


def card_text(result: WinTrainResult, decision: GateDecision | None = None) -> str:
    """The model card: data window, features, choice, calibration, metrics, limits."""
    head = [
        f"# Model card: deal win probability (`{MODEL_NAME}`)",
        "",
        "The probability that an open deal is eventually won, from what the CRM knew when it is",
        f"scored. MLflow run `{result.run_id}`, model `{result.model_uri}`.",
    ]
    if decision is not None:
        head += ["", f"Registry: `{decision.name}` v{decision.version} {decision.summary()}."]
    sections = [
        head,
        _card_data(result),
        _card_choice(result),
        _card_metrics(result),
        _card_features(result),
        _card_limits(result),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


def write_card(result: WinTrainResult, decision: GateDecision | None = None) -> Path:
    result.card_path.parent.mkdir(parents=True, exist_ok=True)
    result.card_path.write_text(card_text(result, decision))
    return result.card_path


# --- retraining: every pipeline through its gate ------------------------------------------------


def retrain_win(
    tables: CrmTables,
    *,
    truth: WorldTruth | None = None,
    seed: int = 0,
    params: WinParams | None = None,
    card_dir: Path | None = None,
    on_step: Callable[[str], None] | None = None,
) -> RetrainOutcome:
    """Train the win model, register it as challenger and run the gate.

    `params` (windows, allowed columns, ...) default to `WinParams(seed=seed)`.
    """
    return retrain(
        WIN,
        tables,
        params=params or WinParams(seed=seed),
        hooks=TrainHooks(),
        truth=truth,
        card_dir=card_dir or default_card_dir(),
        on_step=on_step,
    )
