"""Metrics for probabilities, the baselines a win model must beat, and the reliability diagram.

Every comparison scores all contenders on the same rows. Calibration error (ECE) uses 10
equal-frequency bins: predicted win probabilities bunch up (most open deals sit in early stages),
so equal-width bins would leave the upper bins nearly empty and noisy. Bin edges are quantiles of
the predictions, so tied predictions always share a bin and a score with few distinct values
(the fixed stage probabilities) gets fewer, larger bins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from forecast.data.contract import OPEN_STAGES

# What a CRM's weighted pipeline multiplies amounts by (typical vendor defaults): the first
# baseline, and the number every sales manager already has.
STAGE_PROBABILITIES: Mapping[str, float] = MappingProxyType(
    {"prospecting": 0.10, "qualification": 0.20, "proposal": 0.40, "negotiation": 0.70}
)
ECE_BINS = 10
METRICS = ("auc", "pr_auc", "log_loss", "brier", "ece")
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "ece"})


def _bin_edges(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Inner edges of equal-frequency bins (quantiles), duplicates removed."""
    return np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)[1:-1]))


def reliability_table(y: np.ndarray, p: np.ndarray, n_bins: int = ECE_BINS) -> pd.DataFrame:
    """Per equal-frequency bin: rows, mean predicted probability and observed win rate."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    bins = np.searchsorted(_bin_edges(p, n_bins), p, side="right")
    frame = pd.DataFrame({"bin": bins, "p": p, "y": y})
    table = frame.groupby("bin").agg(
        n=("y", "size"), mean_predicted=("p", "mean"), observed=("y", "mean")
    )
    return table.reset_index(drop=True)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Row-weighted mean gap between predicted and observed win rate over equal-frequency bins."""
    table = reliability_table(y, p, n_bins)
    gaps = (table["mean_predicted"] - table["observed"]).abs()
    return float((gaps * table["n"]).sum() / table["n"].sum())


def equal_width_ece(y: np.ndarray, p: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE over `n_bins` equal-width bins of [0, 1] (the usual published form; row-weighted)."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    frame = (
        pd.DataFrame({"bin": bins, "p": p, "y": y})
        .groupby("bin")
        .agg(n=("y", "size"), p=("p", "mean"), y=("y", "mean"))
    )
    return float(((frame["p"] - frame["y"]).abs() * frame["n"]).sum() / frame["n"].sum())


def auc_differences(
    y: np.ndarray,
    p: np.ndarray,
    references: Mapping[str, np.ndarray | None],
    groups: np.ndarray | None = None,
    *,
    rounds: int = 200,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Bootstrap AUC(p) - AUC(reference) for each reference (None: a constant, AUC 0.5), the
    rows resampled by group (a deal's snapshots together); rounds drawing one class are skipped.
    The 90 % interval of a difference is its 5th and 95th percentiles."""
    y, p = np.asarray(y), np.asarray(p)
    groups = groups if groups is not None else np.arange(len(y))
    codes, uniques = pd.factorize(pd.Series(groups))
    rows_of = pd.Series(np.arange(len(y))).groupby(codes).apply(np.asarray).to_numpy()
    rng = np.random.default_rng(seed)
    diffs: dict[str, list[float]] = {name: [] for name in references}
    for _ in range(rounds):
        pick = np.concatenate(rows_of[rng.integers(0, len(uniques), len(uniques))])
        if len(np.unique(y[pick])) < 2:
            continue
        auc = roc_auc_score(y[pick], p[pick])
        for name, q in references.items():
            other = 0.5 if q is None else roc_auc_score(y[pick], np.asarray(q)[pick])
            diffs[name].append(auc - other)
    return {name: np.asarray(values) for name, values in diffs.items()}


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ROC AUC, PR AUC, log loss, Brier score and ECE; AUCs are NaN when only one class occurs."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    both = 0 < y.sum() < len(y)
    return {
        "auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "n": float(len(y)),
        "win_rate": float(y.mean()),
        "mean_predicted": float(p.mean()),
    }


def compare(y: np.ndarray, scores: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row of metrics per contender, all on the same rows."""
    return pd.DataFrame({name: binary_metrics(y, p) for name, p in scores.items()}).T


def compare_by(groups: pd.Series, y: np.ndarray, scores: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """`compare` within each group (e.g. stage, segment): tidy rows of group, model, metrics."""
    groups = pd.Series(np.asarray(groups, dtype=object)).fillna("(missing)")
    y = np.asarray(y)
    rows = []
    for value in sorted(groups.unique(), key=str):
        mask = (groups == value).to_numpy()
        table = compare(y[mask], {name: np.asarray(p)[mask] for name, p in scores.items()})
        rows.append(table.rename_axis("model").reset_index().assign(group=value))
    out = pd.concat(rows, ignore_index=True)
    return out[["group", "model", *[c for c in out.columns if c not in ("group", "model")]]]


def stage_fixed_probability(stages: pd.Series) -> np.ndarray:
    """Baseline (a): the CRM's fixed probability for each row's stage."""
    values = pd.Series(np.asarray(stages, dtype=object)).map(dict(STAGE_PROBABILITIES))
    if values.isna().any():
        unknown = sorted(set(np.asarray(stages, dtype=object)) - set(STAGE_PROBABILITIES), key=str)
        raise ValueError(f"no fixed probability for stages {unknown}; expected {OPEN_STAGES}")
    return values.to_numpy(dtype=float)


@dataclass(frozen=True)
class StageRates:
    """Baseline (b): the historical win rate of snapshots in each stage (training window)."""

    rates: Mapping[str, float]
    overall: float  # for a stage the history never saw

    @classmethod
    def learn(cls, stages: pd.Series, won: np.ndarray) -> StageRates:
        frame = pd.DataFrame({"stage": np.asarray(stages, object), "won": np.asarray(won, float)})
        rates = frame.groupby("stage")["won"].mean()
        return cls(rates=MappingProxyType(rates.to_dict()), overall=float(frame["won"].mean()))

    def predict(self, stages: pd.Series) -> np.ndarray:
        values = pd.Series(np.asarray(stages, dtype=object)).map(dict(self.rates))
        return values.fillna(self.overall).to_numpy(dtype=float)


RULE_PRIOR = 20.0  # pseudo-rows pulling a rule's rate for a rare value towards the base rate
RULE_COLUMNS = ("segment", "industry", "region", "product_id", "product_family")


@dataclass(frozen=True)
class RateRule:
    """A simple rule: the training window's win rate per value of one column, shrunk."""

    column: str
    rates: Mapping[str, float]
    overall: float

    @classmethod
    def learn(cls, frame: pd.DataFrame, column: str, won: np.ndarray) -> RateRule:
        key = frame[column].astype("string").fillna("(missing)").to_numpy(dtype=object)
        won = np.asarray(won, dtype=float)
        overall = float(won.mean())
        grouped = pd.DataFrame({"key": key, "won": won}).groupby("key")["won"].agg(["sum", "count"])
        rates = (grouped["sum"] + RULE_PRIOR * overall) / (grouped["count"] + RULE_PRIOR)
        return cls(column, MappingProxyType(rates.to_dict()), overall)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        key = frame[self.column].astype("string").fillna("(missing)")
        return key.map(dict(self.rates)).fillna(self.overall).to_numpy(dtype=float)


def simple_baselines(
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    label: str = "won",
    unavailable: Sequence[str] = (),
    columns: Sequence[str] = RULE_COLUMNS,
) -> tuple[dict[str, np.ndarray], str]:
    """The base rate, the stage rules (when the data has stages) and the best other rule.

    Every rule is learned on `train` and scored on `test`. Of the per-column rules (segment,
    industry, ...) only the one with the lowest test log loss is kept, as `rule_<column>`: the
    strongest simple opponent the data allows.

    Returns:
        Probabilities per baseline name, and the name of the best rule overall (lowest test log
        loss among the rules, the base rate if no rule beats it).
    """
    y_train = train[label].to_numpy(dtype=float)
    y_test = test[label].to_numpy(dtype=int)
    scores = {"base_rate": np.full(len(test), y_train.mean())}
    if "stage" not in unavailable and test["stage"].notna().all():
        scores["stage_fixed"] = stage_fixed_probability(test["stage"])
        scores["stage_history"] = StageRates.learn(train["stage"], y_train).predict(test["stage"])
    rules = {
        f"rule_{c}": RateRule.learn(train, c, y_train).predict(test)
        for c in columns
        if c in test and c not in unavailable and train[c].notna().any()
    }
    if rules:
        losses = {n: log_loss(y_test, p, labels=[0, 1]) for n, p in rules.items()}
        best = min(losses, key=losses.__getitem__)
        scores[best] = rules[best]
    rule_names = [n for n in scores if n not in ("base_rate", "stage_fixed")]
    losses = {n: log_loss(y_test, scores[n], labels=[0, 1]) for n in ["base_rate", *rule_names]}
    return scores, min(losses, key=losses.__getitem__)


def plot_reliability(
    y: np.ndarray, scores: Mapping[str, np.ndarray], path: Path, *, title: str
) -> Path:
    """Reliability diagram (observed vs predicted per bin) and prediction histogram, as PNG.

    Uses a bare `Figure` on the Agg canvas: no pyplot state, no display needed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    curve, histogram = figure.subplots(1, 2)
    curve.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for name, p in scores.items():
        table = reliability_table(y, p)
        ece = expected_calibration_error(y, p)
        curve.plot(
            table["mean_predicted"], table["observed"], marker="o", label=f"{name} (ECE {ece:.3f})"
        )
        histogram.hist(np.asarray(p), bins=40, range=(0, 1), histtype="step", label=name)
    curve.set(
        xlabel="mean predicted win probability",
        ylabel="observed win rate",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    curve.set_title(f"{title}: {ECE_BINS} equal-frequency bins")
    curve.legend(loc="upper left", fontsize="small")
    histogram.set(xlabel="predicted win probability", ylabel="snapshots", title="predictions")
    histogram.legend(loc="upper right", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
