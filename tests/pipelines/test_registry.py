"""The registry gate: challenger on registration, champion only when no worse on the same rows.

One module-wide store holds three versions of deal-win trained on a small world:
v1 (first: promoted), v2 (the same inputs and seed: a tie, not promoted) and v3 (trained on
shuffled labels: refused). Tests that change aliases work on a copy of that store's database.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from forecast.cli import app
from forecast.data.world import make_crm
from forecast.model import TreeParams
from forecast.settings import get_settings
from forecast.training import registry
from forecast.training.win import train_win
from forecast.training.win_task import MODEL_NAME, TrainHooks, WinParams

PARAMS = WinParams(tree=TreeParams(n_estimators=40, n_jobs=1))


def _shuffled(part: pd.DataFrame) -> pd.DataFrame:
    return part.assign(won=np.random.default_rng(1).permutation(part["won"].to_numpy()))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, list[registry.GateDecision]]:
    home = tmp_path_factory.mktemp("registry-home")
    world = make_crm(5000, seed=9)
    decisions = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FORECAST_HOME", str(home))
        get_settings.cache_clear()
        for hooks in (TrainHooks(), TrainHooks(), TrainHooks(fit_rows=_shuffled)):
            result = train_win(world.tables, params=PARAMS, hooks=hooks, card_dir=home)
            decisions.append(
                registry.register_and_gate(
                    MODEL_NAME, result.model_uri, result.run_id, result.evaluation()
                )
            )
    get_settings.cache_clear()
    return home, decisions


@pytest.fixture
def shared(store, forecast_home, monkeypatch) -> list[registry.GateDecision]:
    """Read-only use of the module's store."""
    monkeypatch.setenv("FORECAST_HOME", str(store[0]))
    get_settings.cache_clear()
    return store[1]


@pytest.fixture
def own_copy(store, forecast_home) -> None:
    """This test's own copy of the registry database (artifacts stay shared, read-only)."""
    forecast_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(store[0] / "mlflow.db", forecast_home / "mlflow.db")


def _aliases() -> dict[str, str]:
    model = registry.client().get_registered_model(MODEL_NAME)
    return {alias: str(version) for alias, version in model.aliases.items()}


def _tag(version: str, key: str) -> str:
    return registry.client().get_model_version(MODEL_NAME, version).tags[key]


def test_the_first_version_is_promoted(shared):
    first = shared[0]
    assert first.promoted and first.version == "1"
    assert "first champion" in first.reason
    assert _aliases()["champion"] == "1"
    assert _tag("1", "gate").startswith("promoted to champion")


def test_a_tie_does_not_promote(shared):
    tie = shared[1]
    assert not tie.promoted
    assert "tie with champion v1" in tie.reason
    assert tie.champion == pytest.approx(tie.challenger, abs=registry.TIE)
    assert _tag("2", "gate").startswith("stays challenger: tie")


def test_a_challenger_trained_on_shuffled_labels_is_refused_with_a_reason(shared):
    refused = shared[2]
    assert not refused.promoted
    # a model of noise loses to the stage baselines (the first one it fails is named)
    assert re.search(r"does not beat the stage_(fixed|history) baseline", refused.reason)
    # re-scored on the same rows, the champion ranks far better; a model of noise still ranks
    # somewhat (AUC 0.69 here), as its trees may split only the declared monotone ways
    assert refused.champion["auc"] - refused.challenger["auc"] > 0.05
    assert _aliases() == {"champion": "1", "challenger": "3"}
    run = registry.client().get_run(_tag("3", "run_id"))
    assert run.data.tags["gate_decision"] == "refused"
    assert run.data.tags["gate_reason"] == refused.reason
    assert "gate_champion_auc" in run.data.metrics


def test_rollback_restores_the_previous_champion(own_copy):
    registry.promote(MODEL_NAME, "2")
    assert _aliases()["champion"] == "2"
    message = registry.rollback(MODEL_NAME)
    assert message == f"{MODEL_NAME} champion rolled back from v2 to v1"
    assert _aliases()["champion"] == "1"
    assert _tag("2", "rolled_back") == "replaced by v1"
    with pytest.raises(registry.RegistryError, match="no previous champion"):
        registry.rollback(MODEL_NAME)


def test_promote_and_rollback_through_the_cli(own_copy, monkeypatch):
    runner = CliRunner()
    refused = runner.invoke(app, ["models", "promote", MODEL_NAME, "3"])
    assert refused.exit_code == 1
    assert "does not beat" in refused.output and "--force" in refused.output
    assert _aliases()["champion"] == "1"

    forced = runner.invoke(app, ["models", "promote", MODEL_NAME, "3", "--force"])
    assert forced.exit_code == 0, forced.output
    assert _aliases()["champion"] == "3"

    back = runner.invoke(app, ["models", "rollback", MODEL_NAME])
    assert back.exit_code == 0, back.output
    assert "rolled back from v3 to v1" in back.output
    assert _aliases()["champion"] == "1"

    listed = runner.invoke(app, ["models", "list", "--json"])
    rows = json.loads(listed.stdout)
    assert [r["version"] for r in rows] == [1, 2, 3]
    assert rows[0]["aliases"] == "champion"

    # read at 80 columns: every line fits, each version's gate reasons in full below the table
    from rich.console import Console

    from forecast.cli import models as cli_models

    monkeypatch.setattr(cli_models, "console", Console(width=80))
    shown = runner.invoke(app, ["models", "list"])
    assert shown.exit_code == 0, shown.output
    assert max(len(line) for line in shown.stdout.splitlines()) <= 80
    for row in rows:
        reason = str(row["gate"]).partition(":")[2].strip()
        assert not reason or " ".join(reason.split()) in " ".join(shown.stdout.split())


def test_by_hand_a_version_is_still_held_to_the_rules_and_the_coin(own_copy):
    """Promoting by hand skips the comparison with the champion, not the bar every model must
    clear: a version ranking no better than a coin (as the gate measured it when registering
    it) is refused without --force, like one losing to a baseline."""
    recorded = json.loads(_tag("2", "evaluation"))
    assert recorded["rule_failures"] == []  # measured at registration: v2 ranks well
    coin = "AUC 0.4991 is not clearly above a coin (model minus base_rate: 90 % interval ...)"
    registry.client().set_model_version_tag(
        MODEL_NAME, "2", "evaluation", json.dumps({**recorded, "rule_failures": [coin]})
    )
    with pytest.raises(registry.RegistryError, match=r"not clearly above a coin.*--force"):
        registry.promote(MODEL_NAME, "2")
    assert _aliases()["champion"] == "1"
    assert "forced" in registry.promote(MODEL_NAME, "2", force=True)
    registry.rollback(MODEL_NAME)
    listed = registry.list_models().set_index("version")
    assert listed.loc[2, "gate"].endswith("; rolled back: replaced by v1")
    registry.promote(MODEL_NAME, "2", force=True)  # champion again: no longer "rolled back"
    assert "rolled back" not in registry.list_models().set_index("version").loc[2, "gate"]


def test_promoting_an_unknown_version_says_so(own_copy):
    with pytest.raises(registry.RegistryError, match="no version 9"):
        registry.promote(MODEL_NAME, "9")


BASELINES = {"stage_fixed": 0.65, "stage_history": 0.60}


@pytest.mark.parametrize(
    ("challenger", "champion", "promoted", "why"),
    [
        ({"auc": 0.78, "log_loss": 0.55}, None, True, "first champion"),
        ({"auc": 0.78, "log_loss": 0.61}, None, False, "does not beat the stage_history"),
        ({"auc": 0.78, "log_loss": 0.55}, {"auc": 0.78, "log_loss": 0.55}, False, "tie"),
        ({"auc": 0.78, "log_loss": 0.55}, {"auc": 0.78 + 5e-10, "log_loss": 0.55}, False, "tie"),
        ({"auc": 0.776, "log_loss": 0.553}, {"auc": 0.78, "log_loss": 0.55}, True, "no worse"),
        ({"auc": 0.774, "log_loss": 0.55}, {"auc": 0.78, "log_loss": 0.55}, False, "AUC 0.7740"),
        ({"auc": 0.78, "log_loss": 0.556}, {"auc": 0.78, "log_loss": 0.55}, False, "log loss"),
        ({"auc": 0.79, "log_loss": 0.54}, {"auc": 0.78, "log_loss": 0.55}, True, "no worse"),
    ],
)
def test_the_gate_rule(challenger, champion, promoted, why):
    decided, reason = registry.judge(challenger, champion, BASELINES, "1")
    assert decided is promoted
    assert why in reason


def test_the_champion_is_rescored_on_the_challengers_rows(tmp_path, forecast_home):
    """A champion trained at an earlier as-of is judged on the challenger's test rows, not on
    its own: the gate's champion figures are the champion model's on those rows."""
    import mlflow
    from sklearn.metrics import log_loss, roc_auc_score

    from forecast.features.asof import tables_as_of
    from forecast.model import win_probability

    world = make_crm(5000, seed=9).tables
    earlier = tables_as_of(world, world.as_of - pd.Timedelta(days=120))
    first = train_win(earlier, params=PARAMS, card_dir=tmp_path)
    own = first.evaluation()
    assert registry.register_and_gate(MODEL_NAME, first.model_uri, first.run_id, own).promoted
    later = train_win(world, params=PARAMS, card_dir=tmp_path)
    rows = later.evaluation()
    decision = registry.register_and_gate(MODEL_NAME, later.model_uri, later.run_id, rows)
    assert decision.champion_version == "1" and decision.champion is not None
    champion = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/1")
    p = win_probability(champion, rows.features)
    assert decision.champion["auc"] == pytest.approx(roc_auc_score(rows.won, p), abs=1e-12)
    assert decision.champion["log_loss"] == pytest.approx(log_loss(rows.won, p), abs=1e-12)
    # the challenger's rows are later than the champion's own test rows, and other rows
    assert len(rows.won) != len(own.won) or not np.array_equal(rows.won, own.won)
    assert decision.champion["log_loss"] != pytest.approx(own.metrics["log_loss"], abs=1e-9)


def test_without_a_champion_the_message_names_the_version_the_gate_kept_back(own_copy):
    """After the gate kept every version back, "train one" would send the person round in a
    circle: the message names the latest version and how to promote it."""
    assert registry.no_champion("account-churn", "forecast train churn") == (
        "account-churn has no champion: train one with `forecast train churn`"
    )
    registry.client().delete_registered_model_alias(MODEL_NAME, "champion")
    message = registry.no_champion(MODEL_NAME, "forecast train win")
    assert "version 3 is registered but not champion" in message
    assert f"`forecast models promote {MODEL_NAME} 3 --force`" in message


def test_a_home_moved_to_another_folder_serves_its_own_models(store, tmp_path, monkeypatch):
    """MLflow keeps absolute artifact paths: a home shipped elsewhere (a backup restored, a
    laptop's home on a server) reads its own folder, not the one it was made in; a home
    holding the store's database but not its artifacts is left alone."""
    made, moved, bare = tmp_path / "made", tmp_path / "moved", tmp_path / "bare"
    shutil.copytree(store[0], made)
    bare.mkdir()
    shutil.copy(store[0] / "mlflow.db", bare / "mlflow.db")
    (bare / "mlartifacts").mkdir()  # an artifacts folder without the runs' folders

    def runs_artifacts(home: Path) -> str:
        monkeypatch.setenv("FORECAST_HOME", str(home))
        get_settings.cache_clear()
        version = registry.client().get_model_version(MODEL_NAME, "1")
        return registry.client().get_run(version.run_id).info.artifact_uri

    try:
        assert runs_artifacts(bare).startswith((store[0] / "mlartifacts").as_uri() + "/")
        registry.load_champion(MODEL_NAME)  # read from where the store was made
        runs_artifacts(made)  # the copy follows itself, from its first use
        shutil.move(made, moved)  # the folder it was made in is gone
        assert runs_artifacts(moved).startswith((moved / "mlartifacts").as_uri() + "/")
        assert registry.load_champion(MODEL_NAME) is not None
    finally:
        get_settings.cache_clear()
