"""A store in parts read by the Dask workers themselves (issue 19): each worker reads its part's
deals and their own rows, the calling process only the tables the records that span deals read;
the snapshots, features and labels are the single-process ones, every column and row."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer

from forecast.cli.common import cluster
from forecast.cluster import dask_client
from forecast.data import derive
from forecast.data.ingest import generate_in_parts
from forecast.data.parts import partition_of
from forecast.data.store import current_path, read_store, read_version, store_manifest
from forecast.data.world import make_crm
from forecast.features.deal_context import DealContext, OwnRows
from forecast.features.deals import deal_features, deal_snapshots, snapshot_dates, training_frame
from forecast.features.on_dask import (
    CONTEXT_TABLES,
    deal_frames_of_parts,
    own_tables,
    shipped,
)
from forecast.training import registry
from forecast.training.churn_task import (
    DEFINITION_OF,
    ChurnFacts,
    ChurnHooks,
    ChurnParams,
    _frame_of_part,
    resolve,
)
from forecast.training.churn_task import prepare as prepare_churn
from forecast.training.win import WinParams
from forecast.training.win_task import TrainHooks, prepare

BIN = Path(sys.executable).parent
NOW = pd.Timestamp("2026-12-06")
KEY = ["deal_id", "as_of"]


@pytest.fixture(scope="module")
def client():
    with dask_client(local_cluster=2) as client:
        yield client


def in_key_order(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEY, kind="stable").reset_index(drop=True)


def row_hashes(frame: pd.DataFrame, part: object) -> np.ndarray:
    """One hash per row (run on a worker: only these travel back)."""
    return pd.util.hash_pandas_object(in_key_order(frame), index=False).to_numpy()


@pytest.mark.parametrize("dirt", [0.0, 0.2], ids=["clean", "dirty"])
def test_own_rows_summed_per_part_give_the_whole_context(dirt):
    tables = make_crm(2_500, seed=3, dirt=dirt).tables
    for crm in (tables, derive.deals_only(tables)):
        deal_ids = crm.deals["deal_id"].to_numpy()
        part = partition_of(deal_ids, 3)
        pieces = [OwnRows.of(own_tables(crm, deal_ids[part == p])) for p in range(3)]
        whole, joined = OwnRows.of(crm), OwnRows.joined(pieces)
        # (a part here holds its deals' activities, not its accounts' own as a store's does)
        assert (joined.attributes, joined.history_derived, joined.activities > 0) == (
            whole.attributes, whole.history_derived, whole.activities > 0,
        )  # fmt: skip
        assert joined.history_derived == derive.history_is_derived(crm.deal_history)
        # the calling process holds none of the deals' own rows
        shared = crm.replace(**{n: t.iloc[0:0] for n, t in crm.items() if n not in CONTEXT_TABLES})
        snapshots = deal_snapshots(crm, snapshot_dates("2023-01-01", crm.as_of))
        context = DealContext.of_own(shared, joined)
        assert context.unavailable == DealContext.of(crm).unavailable
        # closes at the same moment sum in another order here: equal to the last bits or so
        pd.testing.assert_frame_equal(
            deal_features(crm, snapshots, context=context),
            deal_features(crm, snapshots),
            check_exact=False,
            rtol=1e-12,
        )


def test_workers_reading_their_parts_make_the_single_process_frame(client, tmp_path):
    store = tmp_path / "store"
    generate_in_parts(6_000, 3, seed=2, imported_at=NOW, store=store)
    tables = read_store(store)
    dates = snapshot_dates("2023-01-01", tables.as_of)
    heard: list[tuple[int, int]] = []
    folder = current_path(store)
    shared = read_version(folder, CONTEXT_TABLES)
    context, frames = deal_frames_of_parts(
        client, folder, shared, dates, lambda frame, _: frame, progress=lambda *d: heard.append(d)
    )
    alone = training_frame(tables, dates, labelled_only=False)
    assert len(alone) > 25_000 and alone["won"].notna().any() and alone["won"].isna().any()
    pd.testing.assert_frame_equal(
        in_key_order(pd.concat(frames, ignore_index=True)), in_key_order(alone), check_exact=True
    )
    assert heard == [(1, 3), (2, 3), (3, 3)]
    assert context.unavailable == {} and context.attributes == DealContext.of(tables).attributes

    # a command reading the context for several stages ships it to the workers once
    with shipped(context, folder) as path:

        def files_seen(frame, part):  # on a worker, while it makes its frames
            return sorted(path.parent.glob("context-*"))

        _, seen = deal_frames_of_parts(
            client, folder, shared, dates[-3:], files_seen, context=context
        )
        assert seen == [[path]] * 3 and path.exists()
    assert not path.exists()


@pytest.mark.scale  # about 60 s and 4 GB: `make test-scale`, not in `make test`
def test_200000_deals_in_parts_have_the_single_process_features(client, tmp_path):
    store = tmp_path / "store"
    generate_in_parts(200_000, 10, seed=5, imported_at=NOW, store=store)
    tables = read_store(store)
    dates = snapshot_dates(tables.deals["created_at"].min(), tables.as_of)
    folder = current_path(store)
    shared = read_version(folder, CONTEXT_TABLES)
    _, hashes = deal_frames_of_parts(client, folder, shared, dates, row_hashes)
    alone = row_hashes(training_frame(tables, dates, labelled_only=False), tables)
    on_parts = np.sort(np.concatenate(hashes))
    assert len(alone) > 900_000
    # every row's every column: the same multiset of row hashes, and the same digest
    assert hashlib.sha256(np.sort(alone).tobytes()).hexdigest() == (
        hashlib.sha256(on_parts.tobytes()).hexdigest()
    )


@pytest.mark.parametrize("kind", ["subscription", "orders"])
def test_churn_frames_made_part_by_part_are_the_single_process_frame(kind):
    """What `train churn` on a store in parts does on each worker, here on account-split
    parts: the export's facts joined from the parts, and the labelled snapshots of each part
    (given the whole export's facts) put together in one process's order."""
    from forecast.features.accounts import churn_snapshot_dates
    from forecast.features.on_dask import account_tables
    from tests.orders_world import make_orders

    tables = make_crm(2_500, seed=4).tables if kind == "subscription" else make_orders(800)[0]
    known = [tables.accounts["account_id"], tables.orders["account_id"].dropna()]
    accounts = pd.unique(pd.concat(known).astype(str))
    part = partition_of(accounts, 3)
    pieces = [account_tables(tables, accounts[part == p]) for p in range(3)]
    facts = ChurnFacts.joined([ChurnFacts.of(piece) for piece in pieces])
    whole = ChurnFacts.of(tables)
    assert (facts.first_recurring, facts.billed_until, facts.first_order) == (
        whole.first_recurring, whole.billed_until, whole.first_order,
    )  # fmt: skip
    assert facts.customer_orders == whole.customer_orders
    assert np.array_equal(np.trim_zeros(facts.gap_counts, "b"), whole.gap_counts)
    params = resolve(ChurnParams(), facts)
    assert params == resolve(ChurnParams(), tables)
    assert params.definition == ("subscription" if kind == "subscription" else "inactivity")

    definition = DEFINITION_OF[params.definition]
    dates = list(churn_snapshot_dates(definition.first_moment(facts), tables.as_of, day=15))
    options = {"horizon_days": params.horizon_days, **definition.label_options(facts)}
    refers = {"reps": tables.reps, "products": tables.products}
    made = [_frame_of_part(piece, definition.name, dates, options, refers) for piece in pieces]
    joined = pd.concat(made, ignore_index=True).sort_values(
        ["as_of", "account_id"], kind="stable", ignore_index=True
    )
    alone = definition.frame(tables, params, whole)
    assert len(alone) > 1_000 and alone["churned"].nunique() == 2
    pd.testing.assert_frame_equal(joined, alone, check_exact=True)


def test_train_and_score_on_a_store_in_parts_read_by_the_workers(forecast_home):
    """`forecast retrain` (both models), `forecast score deals --all` and `score accounts --all`
    on a cluster over a store in parts: the workers read their parts; the training inputs are
    one process's, row for row (the same data fingerprint), and the scored books are one
    process's files."""
    forecast = str(BIN / "forecast")

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([forecast, *args], capture_output=True, text=True)
        assert done.returncode == 0, f"{args}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        return done

    run("data", "generate", "--deals", "1500", "--partitions", "3")
    # the deal snapshots made by each worker for its part's deals, the churn model's rows for
    # its part's accounts: one process's inputs, read whole (the same rows, features and
    # labels, in the same order)
    trained = run("retrain", "--json", "--local-cluster", "2")
    assert "the store is in 3 parts: each worker reads its own" in trained.stderr
    win, churn = json.loads(trained.stdout)
    whole = read_store()
    alone = prepare(whole, WinParams(), TrainHooks())
    alone_churn = prepare_churn(whole, resolve(ChurnParams(), whole), ChurnHooks())
    for outcome, fingerprint in ((win, alone.fingerprint), (churn, alone_churn.fingerprint)):
        tags = registry.client().get_run(outcome["run_id"]).data.tags
        assert tags["data_fingerprint"] == fingerprint, outcome["pipeline"]

    run("models", "promote", "deal-win", str(win["version"]), "--force")
    out = forecast_home / "scores"
    run("score", "deals", "--all", "--no-log", "--out", f"{out}-alone.parquet")
    scored = run("score", "deals", "--all", "--no-log", "--out", f"{out}-cluster.parquet",
                 "--local-cluster", "2")  # fmt: skip
    assert "the store is in 3 parts" in scored.stderr
    book = pd.read_parquet(f"{out}-alone.parquet")
    assert len(book) > 30 and book["reasons"].str.len().gt(0).all()
    assert (book["data_fingerprint"] == store_manifest()["fingerprint"]).all()
    pd.testing.assert_frame_equal(pd.read_parquet(f"{out}-cluster.parquet"), book)

    # every account's churn risk: each worker its part's accounts, one process's file
    run("models", "promote", "account-churn", str(churn["version"]), "--force")
    run("score", "accounts", "--all", "--out", f"{out}-accounts-alone.parquet")
    scored = run("score", "accounts", "--all", "--out", f"{out}-accounts-cluster.parquet",
                 "--local-cluster", "2")  # fmt: skip
    assert "the store is in 3 parts" in scored.stderr
    accounts = pd.read_parquet(f"{out}-accounts-alone.parquet")
    assert len(accounts) > 100 and accounts["churn_probability"].between(0, 1).all()
    pd.testing.assert_frame_equal(pd.read_parquet(f"{out}-accounts-cluster.parquet"), accounts)


def test_a_worker_that_dies_mid_task_is_said_to_have_died_with_what_to_try(capsys):
    """A worker killed mid-task (past its memory limit, or a crash in native code): the
    command ends with exit 1 and a message naming the cluster and what to try, not Dask's
    one-line `KilledWorker` or `FutureCancelledError`."""
    with pytest.raises(typer.Exit) as ended, cluster(None, 1) as client:
        client.submit(os._exit, 1, pure=False).result()  # the worker process dies
    assert ended.value.exit_code == 1
    said = " ".join(capsys.readouterr().err.split())
    assert "a Dask worker of the local cluster of 1 died while working" in said
    assert "FORECAST_DASK_WORKER_MEMORY" in said and "the store is as it was" in said
    with pytest.raises(ZeroDivisionError), cluster(None, 1) as client:  # other errors pass
        client.submit(divmod, 1, 0).result()


def test_a_cluster_that_fails_to_close_leaves_what_the_command_did(monkeypatch, caplog):
    """After a worker died its nanny starts another; a close that comes meanwhile fails inside
    distributed (2026.8: "can only join a started process"). The command's outcome stands."""
    from distributed import LocalCluster

    close = LocalCluster.close

    def close_then_fail(self, *args, **kwargs):
        close(self, *args, **kwargs)
        raise AssertionError("can only join a started process")

    monkeypatch.setattr(LocalCluster, "close", close_then_fail)
    with cluster(None, 1) as client:
        total = client.submit(sum, [1, 2]).result()
    assert total == 3
    assert "the local Dask cluster did not close cleanly" in caplog.text
    with pytest.raises(ZeroDivisionError), cluster(None, 1) as client:  # an error stays its own
        client.submit(divmod, 1, 0).result()
