"""A store in parts read by the Dask workers themselves (issue 19): each worker reads its part's
deals and their own rows, the calling process only the tables the records that span deals read;
the snapshots, features and labels are the single-process ones, every column and row."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from forecast.cluster import dask_client
from forecast.data import derive
from forecast.data.ingest import generate_in_parts
from forecast.data.store import current_path, read_store
from forecast.data.world import make_crm
from forecast.features.deal_context import DealContext, OwnRows
from forecast.features.deals import deal_features, deal_snapshots, snapshot_dates, training_frame
from forecast.features.on_dask import (
    CONTEXT_TABLES,
    deal_frames_of_parts,
    own_tables,
    partition_of,
)

NOW = pd.Timestamp("2026-12-06")
KEY = ["deal_id", "as_of"]


@pytest.fixture(scope="module")
def client():
    with dask_client(local_cluster=2) as client:
        yield client


def in_key_order(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEY, kind="stable").reset_index(drop=True)


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
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
    shared, frames = deal_frames_of_parts(
        client, current_path(store), dates, lambda frame: frame, progress=lambda *d: heard.append(d)
    )
    alone = training_frame(tables, dates, labelled_only=False)
    assert len(alone) > 25_000 and alone["won"].notna().any() and alone["won"].isna().any()
    pd.testing.assert_frame_equal(
        in_key_order(pd.concat(frames, ignore_index=True)), in_key_order(alone), check_exact=True
    )
    assert heard == [(1, 3), (2, 3), (3, 3)]
    # what the calling process read: the context's tables, none of the deals' own rows
    assert len(shared.deals) == 6_000 and len(shared.accounts) == len(tables.accounts)
    assert shared.deal_history.empty and shared.activities.empty


@pytest.mark.slow
def test_200000_deals_in_parts_have_the_single_process_features(client, tmp_path):
    store = tmp_path / "store"
    generate_in_parts(200_000, 10, seed=5, imported_at=NOW, store=store)
    tables = read_store(store)
    dates = snapshot_dates(tables.deals["created_at"].min(), tables.as_of)
    _, hashes = deal_frames_of_parts(client, current_path(store), dates, row_hashes)
    alone = row_hashes(training_frame(tables, dates, labelled_only=False))
    on_parts = np.sort(np.concatenate(hashes))
    assert len(alone) > 900_000
    # every row's every column: the same multiset of row hashes, and the same digest
    assert hashlib.sha256(np.sort(alone).tobytes()).hexdigest() == (
        hashlib.sha256(on_parts.tobytes()).hexdigest()
    )
