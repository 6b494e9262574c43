"""The deal win pipeline end to end on a small generated world: MLflow run, model, card, canary."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from forecast.data.world import make_crm
from forecast.features.deal_schema import DEAL_FEATURES
from forecast.model import TreeParams
from forecast.settings import get_settings
from forecast.training.leakage import LeakageSuspected
from forecast.training.task import NotEnoughDataError
from forecast.training.win import train_win
from forecast.training.win_task import EXPERIMENT, MIN_CLOSED_PER_CLASS, TrainHooks, WinParams

PARAMS = WinParams(tree=TreeParams(n_estimators=40, n_jobs=1))


@pytest.fixture(scope="module")
def world():
    return make_crm(5000, seed=5)


@pytest.fixture(scope="module")
def run_home(tmp_path_factory) -> Path:
    """One FORECAST_HOME for the module's shared training run (training takes seconds)."""
    return tmp_path_factory.mktemp("win-run-home")


@pytest.fixture(scope="module")
def trained(world, run_home):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FORECAST_HOME", str(run_home))
        get_settings.cache_clear()
        result = train_win(world.tables, truth=world.truth, params=PARAMS, card_dir=run_home)
    get_settings.cache_clear()
    return result


@pytest.fixture
def in_run_home(run_home, forecast_home, monkeypatch) -> Path:
    """Point this test at the shared run's store (after the per-test home was set)."""
    monkeypatch.setenv("FORECAST_HOME", str(run_home))
    get_settings.cache_clear()
    return run_home


def _client() -> mlflow.MlflowClient:
    return mlflow.MlflowClient(get_settings().mlflow_tracking_uri)


def test_training_logs_one_run_with_metrics_against_the_baselines(trained, in_run_home):
    client = _client()
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert [r.info.run_id for r in runs] == [trained.run_id]
    run = runs[0]
    for metric in (
        "test_auc",
        "test_pr_auc",
        "test_log_loss",
        "test_brier",
        "test_ece",
        "baseline_stage_fixed_auc",
        "baseline_stage_fixed_log_loss",
        "baseline_stage_history_log_loss",
        "baseline_logistic_auc",
        "truth_auc",
        "gain_share_max",
    ):
        assert np.isfinite(run.data.metrics[metric]), metric
    assert run.data.metrics["test_log_loss"] < run.data.metrics["baseline_stage_fixed_log_loss"]
    assert run.data.params["seed"] == "0"
    assert len(run.data.tags["data_fingerprint"]) == 64
    assert run.data.tags["code_version"]
    assert run.data.tags["version.lightgbm"]
    artifacts = {a.path for a in client.list_artifacts(trained.run_id, "evaluation")}
    assert {"evaluation/reliability.png", "evaluation/metrics_by_stage.csv"} <= artifacts
    assert "evaluation/metrics_by_segment.csv" in artifacts
    # the choice over held-out windows and the drift it saw, logged with the run
    drift = ("held_out_windows", "base_rate_by_quarter", "feature_drift_psi", "selection")
    assert {f"evaluation/{name}.csv" for name in drift} <= artifacts
    assert run.data.tags["candidate"] == trained.candidate
    assert run.data.tags["calibration"] == trained.calibration_method
    half_life = "none" if trained.half_life is None else str(trained.half_life)
    assert run.data.tags["half_life_days"] == half_life
    assert [a.path for a in client.list_artifacts(trained.run_id, "card")] == ["card/deal-win.md"]
    # artifacts live under FORECAST_HOME, never in the current directory
    assert str(in_run_home.resolve()) in run.info.artifact_uri


def test_the_model_card_says_what_won_and_against_what(trained):
    card = trained.card_path.read_text()
    assert trained.card_path.name == "deal-win.md"
    assert (
        f"Chosen: **{trained.candidate}**, calibrated with **{trained.calibration_method}**" in card
    )
    for text in ("## Data", "baseline: fixed stage probabilities", "truth", "## Known limits"):
        assert text in card
    # the choice over held-out windows, and the drift it saw
    assert "held-out windows before the test slice" in " ".join(card.split())
    assert "## Drift" in card and "Positive rate by quarter" in card and "| feature | psi |" in card


def test_the_logged_model_serves_probabilities_through_pyfunc(trained, in_run_home):
    model = mlflow.pyfunc.load_model(trained.model_uri)
    rows = trained.evaluation().features.head(50)
    out = np.asarray(model.predict(rows))
    assert out.shape == (50, 2)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    assert len(np.unique(out[:, 1])) > 2  # probabilities, not 0/1 labels
    np.testing.assert_allclose(out[:, 1], trained.model.predict_proba(rows)[:, 1])
    inputs = model.metadata.get_input_schema().input_types_dict()
    assert {t.name for t in inputs.values()} <= {"string", "double"}


def test_the_same_inputs_and_seed_give_the_same_model(world, trained, tmp_path):
    again = train_win(world.tables, truth=world.truth, params=PARAMS, card_dir=tmp_path / "again")
    rows = trained.evaluation().features
    assert again.fingerprint == trained.fingerprint
    np.testing.assert_array_equal(
        again.model.predict_proba(rows), trained.model.predict_proba(rows)
    )


def test_too_few_closed_deals_are_refused_with_the_reason(tmp_path):
    small = make_crm(100, seed=0)
    with pytest.raises(NotEnoughDataError, match=f"at least {MIN_CLOSED_PER_CLASS} of each"):
        train_win(small.tables, params=PARAMS, card_dir=tmp_path)


def test_a_leaking_feature_stops_training(world, tmp_path):
    def label_copy(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"outcome_copy": frame["won"]})

    hooks = TrainHooks(extra_features=label_copy)
    refused = r"(?s)suspected leakage in 1 column.*outcome_copy: the feature"
    with pytest.raises(LeakageSuspected, match=refused):
        train_win(world.tables, params=PARAMS, hooks=hooks, card_dir=tmp_path)
    client = _client()
    [run] = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert run.info.status == "FAILED"
    assert "gain_share_top" not in run.data.tags  # refused before anything was fitted
    assert not client.list_artifacts(run.info.run_id, "card")
    assert not (tmp_path / "deal-win.md").exists()


def test_train_and_retrain_commands_print_metrics_and_the_gate(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from forecast.cli import app
    from forecast.data.ingest import generate
    from forecast.training import win as train

    generate(5000, seed=5, imported_at=pd.Timestamp("2026-11-15"))
    monkeypatch.setattr(
        train, "WinParams", lambda seed=0, **kw: WinParams(seed=seed, tree=PARAMS.tree, **kw)
    )
    monkeypatch.setattr(train, "default_card_dir", lambda: tmp_path)
    runner = CliRunner()

    shown = runner.invoke(app, ["train", "win"])
    assert shown.exit_code == 0, shown.output
    assert "stage_fixed" in shown.stdout and "truth" in shown.stdout
    assert "deal-win v1 promoted to champion: first champion" in shown.stdout

    again = runner.invoke(app, ["retrain", "--json"])
    assert again.exit_code == 0, again.output
    outcome = next(o for o in json.loads(again.stdout) if o["pipeline"] == "win")
    assert outcome["pipeline"] == "win" and outcome["version"] == "2"
    assert not outcome["promoted"] and "tie with champion v1" in outcome["reason"]
    assert outcome["metrics"]["model"]["log_loss"] < outcome["metrics"]["stage_fixed"]["log_loss"]


def test_global_importance_is_logged_with_the_model_version(trained, in_run_home):
    logged = _client().download_artifacts(trained.run_id, "explain/global_importance.json")
    importance = json.loads(Path(logged).read_text())
    assert set(importance) == {f.name for f in DEAL_FEATURES}
    assert max(importance.values()) > 0
