"""The MLflow model registry: every new version is `challenger`; `champion` only through the gate.

The gate compares on the SAME rows: the champion is re-scored on the challenger's out-of-time test
slice. A challenger is promoted when

- it beats every baseline on log loss (the base rate, the stage probabilities where the data
  has stages, and the best per-column rule the data allows), and
- its ROC AUC is not clearly below the best rule's nor clearly no better than a coin's
  (`auc_failures`: a bootstrap over deals, 90 % interval of the difference), first champion or
  not, and
- with a champion in place, it is no worse than it: AUC not lower by more than AUC_TOLERANCE and
  log loss not higher by more than LOG_LOSS_TOLERANCE (0.005 each: the spread seen between
  seeds of the same data, so a fresher model is not held back by noise), and
- it is not a tie: both AUC and log loss within TIE (1e-9) of the champion's means the same model
  again, and swapping it in would gain nothing.

The champion's history is a JSON list of versions in the registered model's tag
`champion_history`; `rollback` steps back through it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from sklearn.metrics import log_loss, roc_auc_score

from forecast.model import win_probability
from forecast.settings import disable_telemetry, get_settings
from forecast.training import evaluate
from forecast.training.home_store import follow_moved_home

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
AUC_TOLERANCE = 0.005
LOG_LOSS_TOLERANCE = 0.005
TIE = 1e-9
BOOTSTRAP_ROUNDS = 200
ROLLED_BACK_TAG = "rolled_back"
HISTORY_TAG = "champion_history"
GATE_TAG = "gate"
EVALUATION_TAG = "evaluation"


class RegistryError(RuntimeError):
    """A registry request that cannot be done (unknown model, nothing to roll back to...)."""


@dataclass(frozen=True)
class Evaluation:
    """What the gate needs: the out-of-time rows and how the new model and baselines scored."""

    features: pd.DataFrame  # model input of the test rows
    won: np.ndarray
    metrics: Mapping[str, float]  # the new model's `auc` and `log_loss` on these rows
    baselines: Mapping[str, float]  # baseline name -> log loss on these rows
    probability: np.ndarray | None = None  # the new model's P on these rows
    rules: Mapping[str, np.ndarray] = field(default_factory=dict)  # base rate, best rule: P
    groups: np.ndarray | None = None  # resampled together in the bootstrap (a deal's rows)


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict on one version, with the numbers it was based on."""

    name: str
    version: str
    promoted: bool
    reason: str
    champion_version: str | None = None
    challenger: Mapping[str, float] | None = None
    champion: Mapping[str, float] | None = None

    def summary(self) -> str:
        verdict = "promoted to champion" if self.promoted else "stays challenger"
        return f"{verdict}: {self.reason}"


def client() -> mlflow.MlflowClient:
    """A client on the project's store (the URI always comes from settings)."""
    disable_telemetry()
    follow_moved_home()
    uri = get_settings().mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


# --- the rule ------------------------------------------------------------------------------------


def baseline_failures(log_loss_value: float, baselines: Mapping[str, float]) -> list[str]:
    """One sentence per baseline whose log loss the model does not beat."""
    return [
        f"log loss {log_loss_value:.4f} does not beat the {name} baseline's {value:.4f}"
        for name, value in baselines.items()
        if not log_loss_value < value
    ]


def auc_failures(evaluation: Evaluation, *, seed: int = 0) -> list[str]:
    """One sentence per simple rule whose ROC AUC the model is clearly below, by bootstrap.

    The rows are resampled by group (a deal's snapshots together) BOOTSTRAP_ROUNDS times; the
    model fails against a rule when the upper end of the 90 % interval of its AUC minus the
    rule's is below 0: it ranks worse than the rule, beyond noise. The base rate ranks nothing
    (AUC 0.5): a model that is not clearly above it is no better than a coin.
    """
    if evaluation.probability is None or not evaluation.rules:
        return []
    references = {n: None if n == "base_rate" else r for n, r in evaluation.rules.items()}
    diffs = evaluate.auc_differences(
        evaluation.won, evaluation.probability, references, evaluation.groups,
        rounds=BOOTSTRAP_ROUNDS, seed=seed,
    )  # fmt: skip
    failures = []
    for name, values in diffs.items():
        if not len(values):
            continue
        low, high = np.quantile(values, [0.05, 0.95])
        worse = high < 0 if name != "base_rate" else low <= 0
        if worse:
            what = "above a coin" if name == "base_rate" else f"as good as the {name} rule"
            failures.append(
                f"AUC {evaluation.metrics['auc']:.4f} is not clearly {what} (model minus "
                f"{name}: 90 % interval {low:+.3f} .. {high:+.3f}, {len(values)} bootstrap "
                "rounds by deal)"
            )
    return failures


def judge(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    baselines: Mapping[str, float],
    champion_version: str | None = None,
) -> tuple[bool, str]:
    """The gate's rule on numbers measured on the same rows: (promote?, why)."""
    failures = baseline_failures(challenger["log_loss"], baselines)
    if failures:
        return False, "; ".join(failures)
    beats = ", ".join(f"{n} {v:.4f}" for n, v in baselines.items())
    if champion is None:
        return True, f"first champion; log loss {challenger['log_loss']:.4f} beats {beats}"
    name = f"champion v{champion_version}"
    d_auc = challenger["auc"] - champion["auc"]
    d_loss = challenger["log_loss"] - champion["log_loss"]
    if abs(d_auc) <= TIE and abs(d_loss) <= TIE:
        return False, f"tie with {name} (AUC and log loss within {TIE:g}): nothing to gain"
    if d_auc < -AUC_TOLERANCE:
        return False, (
            f"AUC {challenger['auc']:.4f} is {-d_auc:.4f} below {name}'s {champion['auc']:.4f} "
            f"on the same rows (tolerance {AUC_TOLERANCE})"
        )
    if d_loss > LOG_LOSS_TOLERANCE:
        return False, (
            f"log loss {challenger['log_loss']:.4f} is {d_loss:.4f} above {name}'s "
            f"{champion['log_loss']:.4f} on the same rows (tolerance {LOG_LOSS_TOLERANCE})"
        )
    return True, (
        f"no worse than {name} on the same rows (AUC {challenger['auc']:.4f} vs "
        f"{champion['auc']:.4f}, log loss {challenger['log_loss']:.4f} vs "
        f"{champion['log_loss']:.4f}) and log loss beats {beats}"
    )


# --- registering and gating ----------------------------------------------------------------------


def register(
    name: str, model_uri: str, run_id: str, evaluation: Evaluation, rule_failures: list[str]
) -> str:
    """A new version of `name` from a logged model, with alias `challenger`; returns the version.
    Its evaluation is kept on it with the rules it ranks clearly worse than (`auc_failures`), so
    a promotion by hand is held to the same bar."""
    c = client()
    version = mlflow.register_model(model_uri, name, tags={"run_id": run_id}).version
    c.set_registered_model_alias(name, CHALLENGER, version)
    recorded = {
        **evaluation.metrics,
        "baselines": dict(evaluation.baselines),
        "rule_failures": rule_failures,
    }
    c.set_model_version_tag(name, version, EVALUATION_TAG, json.dumps(recorded))
    log.info("registered %s version %s as %s", name, version, CHALLENGER)
    return str(version)


def champion_version(name: str) -> str | None:
    try:
        return str(client().get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def latest_params(name: str) -> tuple[str | None, dict[str, str]]:
    """The latest registered version of `name` and its run's parameters (None, {} when none
    is registered): what the last training was told, for a nightly retrain to keep."""
    try:
        versions = client().search_model_versions(f"name='{name}'")
    except MlflowException:
        return None, {}
    if not versions:
        return None, {}
    latest = max(versions, key=lambda v: int(v.version))
    try:
        return str(latest.version), dict(client().get_run(latest.run_id or "").data.params)
    except MlflowException:  # registered from outside a run, or its run deleted
        log.warning("%s v%s has no run to read what it was trained with", name, latest.version)
        return str(latest.version), {}


def no_champion(name: str, how_to_train: str) -> str:
    """Why `name` has no champion and what to do: train one, or, when versions are registered
    (the gate keeps back one that does not beat the baselines), look and promote by hand."""
    try:
        versions = [int(v.version) for v in client().search_model_versions(f"name='{name}'")]
    except MlflowException:
        versions = []
    if not versions:
        return f"{name} has no champion: train one with `{how_to_train}`"
    latest = max(versions)
    return (
        f"{name} has no champion: version {latest} is registered but not champion (the gate "
        "keeps back a model that does not beat the baselines; `forecast models list` shows its "
        f"verdict). Promote it anyway with `forecast models promote {name} {latest} --force`, or "
        f"train again with more history (`{how_to_train}`)"
    )


def rescore(name: str, version: str, evaluation: Evaluation) -> dict[str, float]:
    """A registered version's AUC and log loss on the evaluation's rows."""
    model = mlflow.sklearn.load_model(f"models:/{name}/{version}")
    missing = [c for c in getattr(model, "feature_names_in_", []) if c not in evaluation.features]
    if missing:
        raise RegistryError(f"{name} v{version} needs columns the new rows lack: {missing}")
    p = win_probability(model, evaluation.features)
    return {
        "auc": float(roc_auc_score(evaluation.won, p)),
        "log_loss": float(log_loss(evaluation.won, p, labels=[0, 1])),
    }


def gate(
    name: str,
    version: str,
    evaluation: Evaluation,
    *,
    run_id: str | None = None,
    rule_failures: list[str] | None = None,
) -> GateDecision:
    """Decide whether `version` becomes champion; record the decision on the version and run.
    `rule_failures`: `auc_failures` of the evaluation, when already measured."""
    current = champion_version(name)
    champion = None
    if current is not None and current != version:
        try:
            champion = rescore(name, current, evaluation)
        except RegistryError as err:
            decision = GateDecision(
                name, version, False, f"{err}: compare and promote by hand", current
            )
            _record(decision, run_id)
            return decision
    promoted, reason = judge(evaluation.metrics, champion, evaluation.baselines, current)
    failures = auc_failures(evaluation) if rule_failures is None else rule_failures
    if promoted and failures:
        promoted, reason = False, "; ".join(failures)
    decision = GateDecision(
        name, version, promoted, reason, current, dict(evaluation.metrics), champion
    )
    if promoted:
        _make_champion(name, version, reason)
    _record(decision, run_id)
    return decision


def register_and_gate(
    name: str, model_uri: str, run_id: str, evaluation: Evaluation
) -> GateDecision:
    """Register a logged model as challenger, then run the gate on it."""
    failures = auc_failures(evaluation)
    version = register(name, model_uri, run_id, evaluation, failures)
    return gate(name, version, evaluation, run_id=run_id, rule_failures=failures)


def _record(decision: GateDecision, run_id: str | None) -> None:
    """The verdict as a tag on the version and, when known, on the run (with the numbers)."""
    c = client()
    c.set_model_version_tag(decision.name, decision.version, GATE_TAG, decision.summary())
    log.info("%s v%s %s", decision.name, decision.version, decision.summary())
    if run_id is None:
        return
    c.set_tag(run_id, "gate_decision", "promoted" if decision.promoted else "refused")
    c.set_tag(run_id, "gate_reason", decision.reason)
    c.set_tag(run_id, "registered_version", decision.version)
    if decision.champion:
        for metric, value in decision.champion.items():
            c.log_metric(run_id, f"gate_champion_{metric}", value)


def _history(name: str) -> list[str]:
    tags = client().get_registered_model(name).tags
    return json.loads(tags.get(HISTORY_TAG, "[]"))


def _make_champion(name: str, version: str, reason: str) -> None:
    c = client()
    history = _history(name)
    c.set_registered_model_alias(name, CHAMPION, version)
    found = c.get_model_version(name, version)
    if CHALLENGER in found.aliases:  # the challenger has become the champion
        c.delete_registered_model_alias(name, CHALLENGER)
    if ROLLED_BACK_TAG in found.tags:  # champion again
        c.delete_model_version_tag(name, version, ROLLED_BACK_TAG)
    if not history or history[-1] != version:
        history.append(version)
    c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    c.set_model_version_tag(name, version, "promotion", reason)


def _rolled_back(tags: Mapping[str, str]) -> str:
    back = tags.get(ROLLED_BACK_TAG)
    return f"; rolled back: {back}" if back else ""


# --- manual operations ---------------------------------------------------------------------------


def _version(name: str, version: str):
    try:
        return client().get_model_version(name, version)
    except MlflowException:
        raise RegistryError(f"no version {version} of registered model {name!r}") from None


def bar_failures(evaluation: Mapping) -> list[str]:
    """What a version's recorded evaluation (its `evaluation` tag) fails of the bar every
    champion must clear: the baselines' log loss, the rules' and a coin's ranking."""
    failures = baseline_failures(evaluation["log_loss"], evaluation["baselines"])
    return failures + list(evaluation.get("rule_failures", []))


def served_below_bar(name: str, version: str) -> list[str]:
    """What a version promoted by hand with --force fails of the bar (empty otherwise): a
    service shows it beside the scores, which may say little."""
    tags = _version(name, version).tags
    if not tags.get("promotion", "").endswith("(forced)"):
        return []
    evaluation = json.loads(tags.get(EVALUATION_TAG, "null") or "null")
    return ["no recorded evaluation"] if evaluation is None else bar_failures(evaluation)


def forced_sentence(name: str, version: str, below_bar: Sequence[str]) -> str | None:
    """What every answer from a champion promoted over the gate's bar (`below_bar`, as
    `served_below_bar` gives it) says of it; None for one that cleared the bar."""
    if not below_bar:
        return None
    return (
        f"The {name} model in service (v{version}) was promoted by hand over the gate: "
        f"{below_bar[0]}. Its scores may say little."
    )


def promote(name: str, version: str, *, force: bool = False) -> str:
    """Make `version` champion by hand; it must still beat the baselines on log loss and rank
    no worse than the rules (nor as a coin) unless `force`: what it is not held to is the
    comparison with the champion.

    Returns:
        What was done, in a sentence.
    """
    found = _version(name, version)
    evaluation = json.loads(found.tags.get(EVALUATION_TAG, "null") or "null")
    if evaluation is None and not force:
        raise RegistryError(f"{name} v{version} has no recorded evaluation; use --force to promote")
    if evaluation is not None:
        failures = bar_failures(evaluation)
        if failures and not force:
            raise RegistryError(
                f"{name} v{version} refused: " + "; ".join(failures) + " (--force to override)"
            )
    reason = "promoted by hand" + (" (forced)" if force else "")
    _make_champion(name, str(version), reason)
    client().set_model_version_tag(name, str(version), GATE_TAG, f"promoted to champion: {reason}")
    log.info("%s v%s %s", name, version, reason)
    return f"{name} v{version} is now {CHAMPION} ({reason})"


def rollback(name: str) -> str:
    """Champion back to the previous champion; the replaced version is tagged `rolled_back`
    (until it is champion again)."""
    c = client()
    history = _history(name)
    current = champion_version(name)
    if current is not None and (not history or history[-1] != current):
        history.append(current)  # promoted outside this module: still roll back from it
    if len(history) < 2:
        raise RegistryError(f"{name} has no previous champion to roll back to (history {history})")
    replaced = history.pop()
    previous = history[-1]
    c.set_registered_model_alias(name, CHAMPION, previous)
    c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    c.set_model_version_tag(name, replaced, ROLLED_BACK_TAG, f"replaced by v{previous}")
    log.info("%s champion rolled back from v%s to v%s", name, replaced, previous)
    return f"{name} {CHAMPION} rolled back from v{replaced} to v{previous}"


def list_models() -> pd.DataFrame:
    """Every version of every registered model: aliases, run, test metrics and gate verdict."""
    c = client()
    rows = []
    for model in c.search_registered_models():
        for mv in c.search_model_versions(f"name='{model.name}'"):
            full = c.get_model_version(model.name, mv.version)  # search results omit aliases
            evaluation = json.loads(full.tags.get(EVALUATION_TAG, "{}") or "{}")
            rows.append(
                {
                    "name": model.name,
                    "version": int(full.version),
                    "aliases": ",".join(sorted(full.aliases)),
                    "created": pd.Timestamp(full.creation_timestamp, unit="ms").floor("s"),
                    "run_id": full.run_id,
                    "test_auc": evaluation.get("auc", float("nan")),
                    "test_log_loss": evaluation.get("log_loss", float("nan")),
                    "gate": full.tags.get(GATE_TAG, "") + _rolled_back(full.tags),
                }
            )
    columns = [
        "name",
        "version",
        "aliases",
        "created",
        "run_id",
        "test_auc",
        "test_log_loss",
        "gate",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["name", "version"], ignore_index=True)


def load_champion(name: str, version: str | None = None):
    """The champion (or `version`, e.g. the champion's as read a moment before) as a
    scikit-learn estimator (calibrated pipeline)."""
    client()
    try:
        return mlflow.sklearn.load_model(
            f"models:/{name}@{CHAMPION}" if version is None else f"models:/{name}/{version}"
        )
    except MlflowException:
        raise RegistryError(f"{name} has no {CHAMPION}") from None
