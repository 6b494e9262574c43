"""The deal-win run's result and its model card."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from forecast.features.deal_schema import DEAL_FEATURES, Feature
from forecast.model import model_input
from forecast.training import evaluate
from forecast.training.drift import DriftReport
from forecast.training.leakage import LEAK_AUC
from forecast.training.registry import Evaluation, GateDecision
from forecast.training.tracking import (
    allowed_card_lines,
    choice_card_lines,
    markdown,
)
from forecast.training.win_task import BASELINES, MODEL_NAME, Slices, Windows, WinParams


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
    if result.params.leave_out:
        lines += [
            "- Left out of the model by a person (`--leave-out`, set at the close): "
            f"{', '.join(result.params.leave_out)}; no feature reads it, and it still counts "
            "where it is no feature (bookings, the amount at stake).",
        ]
    lines += allowed_card_lines(result.params.allow_columns)
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
        f" reaches out-of-time AUC {LEAK_AUC} (the lower end of its 90 % interval).",
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
