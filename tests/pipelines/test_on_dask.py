"""Beyond one machine (issue 19): the deal and account features computed on a Dask
`LocalCluster` of two worker processes are the single-process features, every column and row;
LightGBM trained on the cluster (lightgbm.dask) is close to one process's; scoring on the
cluster gives the same book; without a cluster Dask is never imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lightgbm import LGBMClassifier
from sklearn.metrics import log_loss, roc_auc_score

from forecast.cluster import dask_client
from forecast.data.parts import partition_of
from forecast.data.world import make_crm
from forecast.features.accounts import (
    account_features,
    churn_snapshot_dates,
    churn_training_frame,
)
from forecast.features.deals import deal_features, deal_snapshots, snapshot_dates
from forecast.features.on_dask import account_features_on, deal_features_on
from forecast.features.orders import inactivity_features, inactivity_training_frame
from forecast.model import make_lightgbm, model_input
from forecast.settings import get_settings
from forecast.training import registry
from forecast.training.drift import fit_weighted, recency_weights
from forecast.training.on_dask import lightgbm_on
from forecast.training.win import WinParams
from forecast.training.win_task import TrainHooks, prepare
from tests.orders_world import make_orders

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client():
    with dask_client(local_cluster=2) as client:
        yield client


@pytest.mark.parametrize("dirt", [0.0, 0.2], ids=["clean", "dirty"])
def test_features_on_a_cluster_are_the_single_process_features(client, dirt):
    tables = make_crm(2_500, seed=3, dirt=dirt).tables
    snapshots = deal_snapshots(tables, snapshot_dates("2023-01-01", tables.as_of))
    snapshots = snapshots.sample(frac=1.0, random_state=0)  # any order comes back as given
    alone = deal_features(tables, snapshots)
    heard: list[tuple[int, int]] = []
    on_cluster = deal_features_on(
        client, tables, snapshots, partitions=7, progress=lambda *done: heard.append(done)
    )
    assert len(alone) > 10_000
    pd.testing.assert_frame_equal(on_cluster, alone, check_exact=True)
    assert heard == [(i, 7) for i in range(1, 8)], "each part's end is heard, in turn"


@pytest.mark.parametrize("dirt", [0.0, 0.2], ids=["clean", "dirty"])
def test_subscription_churn_features_on_a_cluster_are_the_single_process_ones(client, dirt):
    tables = make_crm(2_500, seed=3, dirt=dirt).tables
    dates = churn_snapshot_dates(tables.revenue["period"].min(), tables.as_of)
    alone = churn_training_frame(tables, dates, labelled_only=False)
    on_cluster = churn_training_frame(
        tables,
        dates,
        labelled_only=False,
        features=partial(account_features_on, client, featurize=account_features),
    )
    assert len(alone) > 4_000
    pd.testing.assert_frame_equal(on_cluster, alone, check_exact=True)


def test_inactivity_churn_features_on_a_cluster_are_the_single_process_ones(client):
    tables, _ = make_orders(800, seed=1)
    dates = churn_snapshot_dates(tables.orders["at"].min(), tables.as_of)
    alone = inactivity_training_frame(tables, dates, horizon_days=90)
    on_cluster = inactivity_training_frame(
        tables,
        dates,
        horizon_days=90,
        features=partial(account_features_on, client, featurize=inactivity_features),
    )
    assert len(alone) > 5_000
    pd.testing.assert_frame_equal(on_cluster, alone, check_exact=True)


def test_a_deal_is_in_one_partition_whatever_the_process():
    ids = pd.Series([f"D{i}" for i in range(1_000)]).to_numpy()
    parts = partition_of(ids, 8)
    assert set(parts) == set(range(8)) and (parts == partition_of(ids[::-1], 8)[::-1]).all()
    code = "from forecast.data.parts import partition_of as p; print(p(['D1', 'D2'], 8))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == str(partition_of(ids[[1, 2]], 8))


def test_a_categorical_feature_with_no_value_trains_on_the_workers(client):
    """An export without history leaves `stage` empty; LightGBM's data-parallel learner died
    on such a categorical column (signal 11 on both workers, maven-crm). Now it trains, and
    the model scores as the single-process one does."""
    data = prepare(make_crm(2_000, seed=2).tables, WinParams(), TrainHooks())
    train, test, features = data.slices.train, data.slices.test, data.features
    x = model_input(train, features).assign(stage=None)
    x_test = model_input(test, features).assign(stage=None)
    y = train["won"].to_numpy(int)
    model = fit_weighted(lightgbm_on(client, lambda: make_lightgbm(features))(), x, y, None)
    alone = make_lightgbm(features).fit(x, y).predict_proba(x_test)[:, 1]
    on_cluster = model.predict_proba(x_test)[:, 1]
    assert abs(roc_auc_score(test["won"], on_cluster) - roc_auc_score(test["won"], alone)) < 0.03


def test_lightgbm_trained_by_the_workers_is_a_plain_booster_close_to_one_process(client):
    """`lightgbm.dask` trains data-parallel on both workers; what comes back is the
    single-process pipeline (a plain LGBMClassifier to log, serve and explain), close to the
    single-process fit on the same rows in every run, and the weights are used."""
    data = prepare(make_crm(3_000, seed=1).tables, WinParams(), TrainHooks())
    train, test, features = data.slices.train, data.slices.test, data.features
    x, y = model_input(train, features), train["won"].to_numpy(int)
    x_test, y_test = model_input(test, features), test["won"].to_numpy(int)
    weights = recency_weights(train["as_of"], 182)

    def on_cluster(w):
        model = fit_weighted(lightgbm_on(client, lambda: make_lightgbm(features))(), x, y, w)
        assert type(model.steps[-1][1]) is LGBMClassifier
        return model.predict_proba(x_test)[:, 1]

    alone = make_lightgbm(features).fit(x, y).predict_proba(x_test)[:, 1]
    first, again, weighted = on_cluster(None), on_cluster(None), on_cluster(weights)
    assert len(x) > 10_000 and len(x_test) > 1_000
    # measured: AUC 0.753 on the cluster against 0.746 alone, log loss 0.717 against 0.732,
    # mean |difference| 0.022 (each worker finds the bins of its features from half the rows)
    # lightgbm.dask hands out the workers' ranks in an order that changes from run to run
    # (measured over 8 runs: two models, 0.0195 apart on the mean |difference|)
    for run in (first, again):
        assert abs(roc_auc_score(y_test, run) - roc_auc_score(y_test, alone)) < 0.02
        assert abs(log_loss(y_test, run) - log_loss(y_test, alone)) < 0.03
        assert np.abs(run - alone).mean() < 0.04
    alone_weighted = fit_weighted(make_lightgbm(features), x, y, weights).predict_proba(x_test)
    nearer, farther = (np.abs(weighted - p).mean() for p in (alone_weighted[:, 1], alone))
    assert nearer < farther / 2, "the recency weights reach the workers"


def _forecast(*args: str, cluster: bool = False) -> subprocess.CompletedProcess:
    more = ["--local-cluster", "2"] if cluster else []
    done = subprocess.run([str(BIN / "forecast"), *args, *more], capture_output=True, text=True)
    assert done.returncode == 0, f"{args}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def trained_alone(tmp_path_factory) -> Iterator[tuple[Path, dict]]:
    """A 1,500-deal world with both models trained in one process (deal-win v1 the champion),
    and that training's JSON: the CLI tests below compare the cluster's answers with it."""
    home = tmp_path_factory.mktemp("on-dask") / "home"
    env = {"FORECAST_HOME": str(home), "FORECAST_TRAINING_THREADS": "1"}
    with pytest.MonkeyPatch.context() as patch:
        for name in ("FORECAST_STORE_DIR", "FORECAST_TRACKING_URI", "FORECAST_DATABASE_URL"):
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        get_settings.cache_clear()
        _forecast("data", "generate", "--deals", "1500", "--quiet")
        alone = json.loads(_forecast("train", "win", "--json").stdout)  # stdout is the JSON
        _forecast("train", "churn")
        yield home, alone
    get_settings.cache_clear()


@pytest.fixture
def at_trained_alone(trained_alone, forecast_home, monkeypatch) -> tuple[Path, dict]:
    monkeypatch.setenv("FORECAST_HOME", str(trained_alone[0]))
    get_settings.cache_clear()
    return trained_alone


def test_training_on_a_cluster_comes_close_and_scoring_gives_the_same_book(at_trained_alone):
    home, alone = at_trained_alone
    training = _forecast("train", "win", "--json", cluster=True)
    assert "Dask dashboard: http://127.0.0.1:" in training.stderr
    assert "[LightGBM]" not in training.stderr, "the workers' network log is not shown"
    clustered = json.loads(training.stdout)
    tags = [registry.client().get_run(r["run_id"]).data.tags for r in (alone, clustered)]
    assert [t["trained_on"] for t in tags] == [
        "one process", "Dask cluster of 2 workers (LightGBM by lightgbm.dask)"
    ]  # fmt: skip
    for contender in ("base_rate", "stage_history", "rule_segment", "logistic"):
        assert clustered["metrics"][contender] == alone["metrics"][contender], contender
    # LightGBM itself is trained data-parallel: close to, not bit for bit, one process's
    # (fit_on_cluster's own test bounds the difference on more rows)
    assert abs(clustered["metrics"]["lightgbm"]["auc"] - alone["metrics"]["lightgbm"]["auc"]) < 0.03

    _forecast("models", "promote", "deal-win", str(alone["version"]), "--force")
    out = home / "scores"
    _forecast("score", "deals", "--all", "--no-log", "--out", f"{out}-alone.parquet")
    _forecast(
        "score", "deals", "--all", "--no-log", "--out", f"{out}-cluster.parquet", cluster=True
    )
    book = pd.read_parquet(f"{out}-alone.parquet")
    assert len(book) > 50 and book["reasons"].str.len().gt(0).all()
    pd.testing.assert_frame_equal(pd.read_parquet(f"{out}-cluster.parquet"), book)


def test_the_forecast_backtest_and_account_scores_on_a_cluster_are_the_same(at_trained_alone):
    """`forecast revenue`, `forecast revenue-backtest` and `forecast score accounts` with the
    features computed by the cluster's workers: the same answers, digit for digit."""
    home, alone = at_trained_alone
    _forecast("models", "promote", "deal-win", str(alone["version"]), "--force")
    quarter = ["revenue", "--json", "--draws", "1000", "--level", "rep"]
    one = json.loads(_forecast(*quarter).stdout)
    assert len(one["nodes"]) >= 5
    assert json.loads(_forecast(*quarter, cluster=True).stdout) == one

    backtest = ["revenue-backtest", "--first", "2026Q3", "--weeks", "1,9", "--draws", "300"]
    backtest += ["--no-churn"]
    tables = [
        [
            line
            for line in _forecast(*backtest, cluster=cluster).stdout.splitlines()
            if "MLflow run" not in line
        ]
        for cluster in (False, True)
    ]
    assert len(tables[0]) > 15 and tables[0] == tables[1]

    out = home / "accounts"
    _forecast("score", "accounts", "--all", "--out", f"{out}-alone.parquet")
    _forecast("score", "accounts", "--all", "--out", f"{out}-cluster.parquet", cluster=True)
    accounts = pd.read_parquet(f"{out}-alone.parquet")
    assert len(accounts) > 50 and accounts["churn_probability"].between(0, 1).all()
    pd.testing.assert_frame_equal(pd.read_parquet(f"{out}-cluster.parquet"), accounts)


def test_without_a_cluster_dask_is_not_imported():
    code = (
        "import sys, forecast.cli, forecast.training.win; "
        "print([m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]"


def test_a_scheduler_that_does_not_answer_is_named(forecast_home):
    forecast = str(BIN / "forecast")
    subprocess.run([forecast, "data", "generate", "--deals", "300", "--quiet"], check=True)
    env = os.environ | {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}
    done = subprocess.run(
        [forecast, "train", "win", "--scheduler", "tcp://127.0.0.1:9"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 1
    assert "no Dask scheduler answered at tcp://127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr
