"""The churn run's result and its model card."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from forecast.features.deal_schema import Feature
from forecast.model import (
    model_input,
)
from forecast.training import evaluate
from forecast.training.churn_baselines import RATE_PRIOR
from forecast.training.churn_task import (
    DEFINITION_OF,
    GATE_BASELINES,
    LABEL,
    MODEL_NAME,
    SUBSCRIPTION,
    ChurnParams,
    ChurnSlices,
    Definition,
)
from forecast.training.drift import DriftReport
from forecast.training.registry import Evaluation, GateDecision
from forecast.training.tracking import (
    allowed_card_lines,
    choice_card_lines,
    markdown,
)


@dataclass(frozen=True)
class ChurnTrainResult:
    """What a churn training run produced; `evaluation()` is what the registry's gate needs."""

    run_id: str
    model_uri: str
    model: BaseEstimator
    candidate: str
    calibration_method: str
    selection: pd.DataFrame
    metrics: pd.DataFrame  # contenders x metrics on the test rows
    by_segment: pd.DataFrame
    reliability: pd.DataFrame  # the model's reliability table on the test rows
    slices: ChurnSlices
    features: tuple[Feature, ...]
    gain_share: pd.Series
    fingerprint: str
    code_version: str
    export_as_of: pd.Timestamp
    card_path: Path
    params: ChurnParams
    rule_scores: Mapping[str, np.ndarray] = field(default_factory=dict)  # base rate, rate table
    drift: DriftReport | None = None  # what the choice over held-out windows saw
    half_life: int | None = None  # days, of the chosen candidate's recency weights

    def evaluation(self) -> Evaluation:
        """The test rows and scores the gate compares a champion with (label in `won`)."""
        test = self.slices.test
        x = model_input(test, self.features)
        return Evaluation(
            features=x,
            won=test[LABEL].to_numpy(dtype=int),
            metrics={m: float(self.metrics.loc["model", m]) for m in ("auc", "log_loss")},
            baselines={n: float(self.metrics.loc[n, "log_loss"]) for n in GATE_BASELINES},
            probability=self.model.predict_proba(x)[:, 1],
            rules=self.rule_scores,
            groups=test["account_id"].to_numpy(),
        )


METRIC_PREFIX = {
    "model": "test",
    "model_uncalibrated": "test_uncalibrated",
    "base_rate": "baseline_base_rate",
    "rate_table": "baseline_rate_table",
    "logistic": "baseline_logistic",
    "lightgbm": "candidate_lightgbm",
    "truth": "truth",
}

CONTENDER_NAMES = {
    "model": "**model** (as served)",
    "model_uncalibrated": "its candidate on the train slice, no map",
    "base_rate": "baseline: train churn rate",
    "rate_table": "baseline: rate table (contract end x low usage)",
    "recency_table": "baseline: recency table (days since last purchase x one purchase)",
    "logistic": "baseline: logistic regression",
    "lightgbm": "candidate: LightGBM, uncalibrated",
    "truth": "truth (the generator's probability)",
}


def card_text(result: ChurnTrainResult, decision: GateDecision | None = None) -> str:
    """The model card: data window, choice, calibration, metrics, features, limits."""
    definition = DEFINITION_OF[result.params.definition]
    sections = [
        _head(result, definition, decision),
        _data(result, definition),
        choice_card_lines(result, "account"),
        _metrics(result, definition),
        _features(result, definition),
        _limits(result, definition),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


def _head(
    result: ChurnTrainResult, definition: Definition, decision: GateDecision | None
) -> list[str]:
    p = result.params
    why = (
        "the export has recurring revenue"
        if definition is SUBSCRIPTION
        else f"the export has orders and no recurring revenue; {p.horizon_days} days cover "
        "80 % of the gaps between a customer's purchases"
    )
    head = [
        f"# Model card: account churn risk (`{MODEL_NAME}`)",
        "",
        f"The probability that {definition.event} within {p.horizon_days} days, from what the",
        f"CRM knew at the snapshot. MLflow run `{result.run_id}`, model `{result.model_uri}`.",
        "",
        f"Churn definition: **{definition.name}** ({why}).",
    ]
    if decision is not None:
        head += ["", f"Registry: `{decision.name}` v{decision.version} {decision.summary()}."]
    return head


def _data(result: ChurnTrainResult, definition: Definition) -> list[str]:
    s, p = result.slices, result.params

    def rows(name: str) -> str:
        part = getattr(s, name)
        return f"{len(part):,} snapshots of {part['account_id'].nunique():,} accounts"

    return [
        "## Data",
        "",
        f"- Export as-of {result.export_as_of:%Y-%m-%d}; monthly snapshots (day"
        f" {p.snapshot_day}) of {definition.population}.",
        f"- Train {s.spans['train']}: {rows('train')}; {s.embargo_rows:,} later snapshots left"
        " out because their label window reaches the calibration slice.",
        f"- Calibration {s.spans['calibration']}: {rows('calibration')}.",
        f"- Test {s.spans['test']}: {rows('test')} (the latest dates whose label is known).",
        f"- Data fingerprint `{result.fingerprint[:16]}`, code `{result.code_version}`,"
        f" seed {p.seed}.",
    ]


def _metrics(result: ChurnTrainResult, definition: Definition) -> list[str]:
    names = CONTENDER_NAMES | (
        {} if definition is SUBSCRIPTION else {"rate_table": CONTENDER_NAMES["recency_table"]}
    )
    table = result.metrics[list(evaluate.METRICS)].rename(index=names).rename_axis("contender")
    by_segment = result.by_segment.pivot(index="group", columns="model", values="auc")
    return [
        "## Test metrics against the baselines (same rows)",
        "",
        f"ECE over {evaluate.ECE_BINS} equal-frequency bins. Rule: {definition.rule_text},",
        f"shrunk to the overall rate with {RATE_PRIOR:.0f} pseudo-rows.",
        "",
        markdown(table.reset_index(), 4),
        "",
        "ROC AUC by segment:",
        "",
        markdown(by_segment.rename_axis("segment").reset_index()),
        "",
        "Reliability of the model (test):",
        "",
        markdown(result.reliability, 4),
    ]


def _features(result: ChurnTrainResult, definition: Definition) -> list[str]:
    gain = pd.DataFrame(
        {
            "feature": [f.name for f in result.features],
            "kind": [f.kind for f in result.features],
            "gain share": [float(result.gain_share.get(f.name, 0.0)) for f in result.features],
        }
    )
    module = "accounts" if definition is SUBSCRIPTION else "orders"
    return [
        "## Features",
        "",
        f"Point in time (`forecast.features.{module}`); gain share from the LightGBM candidate.",
        "",
        markdown(gain),
    ]


def _limits(result: ChurnTrainResult, definition: Definition) -> list[str]:
    m = result.metrics
    limits = ["## Known limits", ""]
    if "truth" in m.index:
        limits += [
            f"- The generator's truth scores ROC AUC {m.loc['truth', 'auc']:.3f} on the same rows,"
            f" the model {m.loc['model', 'auc']:.3f}: account health is seen only through noisy",
            "  usage, tickets, surveys and payment delays.",
        ]
    test = result.slices.test
    per_account = len(test) / max(test["account_id"].nunique(), 1)
    if per_account > 1.05:  # a one-month test slice holds one snapshot per account
        limits += [
            "- Monthly snapshots of the same account are correlated: the test slice holds "
            f"{per_account:.1f}",
            "  snapshots per account, so its metrics are less certain than its row count says.",
        ]
    if definition is SUBSCRIPTION:
        limits += [
            "- Churn here is recurring revenue that stops; a downgrade is not churn.",
            "- Monotone directions are declared for tickets (+) and usage (-) only; the others",
            "  are checked on average by tests/model/test_churn_model.py.",
        ]
    else:
        limits += [
            "- Churn here is no purchase within the horizon: a customer who buys less is not",
            "  churned, and one who pauses longer than the horizon and comes back was.",
            "- History before the export's first order is unseen: early snapshots know little",
            "  of a customer's past (tenure and counts are left-censored).",
        ]
    limits += allowed_card_lines(result.params.allow_columns)
    return limits


def write_card(result: ChurnTrainResult, decision: GateDecision | None = None) -> Path:
    result.card_path.parent.mkdir(parents=True, exist_ok=True)
    result.card_path.write_text(card_text(result, decision))
    return result.card_path
