"""A world made and stored in parts (issue 19): one part in memory at a time, every part
checked against the contract, keys and references across parts checked by Dask before the
version becomes current, the tables read back whole."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from forecast.data.ingest import generate_in_parts, read_world
from forecast.data.parts import PartsError, check_across_parts
from forecast.data.store import (
    StorePart,
    current_version,
    read_store,
    store_manifest,
    write_store_parts,
)
from forecast.data.world import make_crm_parts
from forecast.training import registry

BIN = Path(sys.executable).parent
NOW = pd.Timestamp("2026-12-06")


def test_the_parts_make_one_world_with_ids_unique_across_parts():
    worlds = list(make_crm_parts(6_000, 3, seed=2))
    deals = pd.concat([w.tables.deals for w in worlds], ignore_index=True)
    assert len(deals) == 6_000 and deals["deal_id"].is_unique
    assert deals["deal_id"].iloc[[0, -1]].tolist() == ["D0000001", "D0006000"]
    for table in ("accounts", "activities", "signals"):
        ids = pd.concat([w.tables[table].iloc[:, 0] for w in worlds])
        assert ids.is_unique, table
    # the org is drawn once: every part sells through the same reps
    reps = worlds[0].tables.reps["rep_id"]
    assert all(w.tables.reps["rep_id"].equals(reps) for w in worlds)
    assert all(w.tables.deals["rep_id"].isin(reps).all() for w in worlds)
    # each part an account group of its own: a deal's account is in its part
    for w in worlds:
        assert w.tables.deals["account_id"].isin(w.tables.accounts["account_id"]).all()


def test_stored_in_parts_it_reads_back_whole_and_the_same_parts_write_nothing(tmp_path):
    store = tmp_path / "store"
    written = generate_in_parts(6_000, 3, seed=2, imported_at=NOW, store=store)
    assert written.changed and written.rows["deals"] == 6_000
    assert sorted(p.name for p in (written.path / "deals").iterdir()) == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"
    ]  # fmt: skip
    world = read_world(store)
    assert world is not None and len(world.tables.deals) == 6_000
    assert len(world.truth.deal_advance) == 6_000
    parts = list(make_crm_parts(6_000, 3, seed=2))
    pd.testing.assert_frame_equal(
        world.tables.deals,
        pd.concat([p.tables.deals for p in parts], ignore_index=True),
    )
    # one target per owner and quarter: each part's share of a quota, summed
    targets = world.tables.targets
    assert not targets.duplicated(["level", "owner", "period"]).any()
    shares = pd.concat([p.tables.targets for p in parts])
    quarter = (targets["level"] == "company") & (targets["period"] == "2025Q1")
    assert targets.loc[quarter, "amount"].item() == pytest.approx(
        shares.loc[(shares["level"] == "company") & (shares["period"] == "2025Q1"), "amount"].sum()
    )
    again = generate_in_parts(6_000, 3, seed=2, imported_at=NOW, store=store)
    assert not again.changed and again.version == written.version
    assert store_manifest(store)["rows"]["activities"] == len(world.tables.activities)


def test_keys_and_references_that_break_across_parts_are_named_and_nothing_is_stored(tmp_path):
    store = tmp_path / "store"
    generate_in_parts(600, 2, seed=1, imported_at=NOW, store=store)
    before = current_version(store)
    first, second = list(make_crm_parts(600, 2, seed=1))
    clash = second.tables.deals.assign(deal_id=first.tables.deals["deal_id"].to_numpy()[:300])
    orphan = second.tables.deals.assign(account_id="A9999999")
    for deals, said in (
        (clash, "deals: key deal_id repeated across parts: D0000001"),
        (orphan, "deals: account_id not in accounts.account_id: A9999999"),
    ):
        parts = [StorePart(dict(first.tables.items())), StorePart({"deals": deals})]
        with pytest.raises(PartsError, match=said):
            write_store_parts(
                parts, as_of=first.tables.as_of, source="test", imported_at=NOW, store=store,
                check=check_across_parts,
            )  # fmt: skip
        assert current_version(store) == before
        assert len(read_store(store).deals) == 600


def test_the_command_refuses_what_parts_cannot_do(forecast_home):
    forecast = str(BIN / "forecast")
    for args, said in (
        (["--deals", "1000", "--partitions", "2", "--dirt", "0.1"], "--dirt"),
        (["--deals", "100", "--partitions", "4"], "--partitions 4: give 1 to 2"),
    ):
        done = subprocess.run([forecast, "data", "generate", *args], capture_output=True, text=True)
        assert done.returncode == 2 and said in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    done = subprocess.run(
        [forecast, "data", "generate", "--deals", "1000", "--partitions", "2"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 parts: reps" in done.stdout and "deals 1,000" in done.stdout
    # the rest of the pipeline reads it as any store; monthly snapshots, a stated sample
    done = subprocess.run(
        [forecast, "train", "win", "--snapshots", "month", "--json"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    run = registry.client().get_run(json.loads(done.stdout)["run_id"])
    assert run.data.params["snapshot_freq"] == "MS"
