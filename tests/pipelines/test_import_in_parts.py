"""An export larger than memory imported a part at a time (issue 19): the files split by account,
each part checked against the contract, what spans parts by Dask; the same store as an import
of the whole export, and every problem located in its file and line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from forecast.cluster import dask_client
from forecast.data.ingest import import_in_parts, import_raw
from forecast.data.parts import PartsError, partition_of
from forecast.data.schema import TABLES
from forecast.data.sources.files import read_folder
from forecast.data.store import read_store, store_manifest, store_parts
from forecast.data.world import make_crm

BIN = Path(sys.executable).parent
AS_OF = pd.Timestamp("2026-11-15")
NOW = pd.Timestamp("2026-12-06")


def export_in_chunks(folder: Path, tables, chunks: int = 3) -> Path:
    """The tables as a CRM's bulk export writes them: per table a folder of CSV files, the
    rows dealt out over the files in no order of account or deal; the small tables as one."""
    folder.mkdir(parents=True)
    for name, frame in tables.items():
        if not len(frame):
            continue
        if name in ("reps", "products", "targets"):
            frame.to_csv(folder / f"{name}.csv", index=False)
            continue
        (folder / name).mkdir()
        shuffled = frame.sample(frac=1.0, random_state=len(frame))
        for n in range(chunks):
            shuffled.iloc[n::chunks].to_csv(folder / name / f"{name}-{n:03d}.csv", index=False)
    return folder


def in_key_order(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    key = list(TABLES[name].key) or list(frame.columns)
    return frame.sort_values(key, kind="stable").reset_index(drop=True)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    tables = make_crm(2_000, seed=4, dirt=0.2).tables
    return export_in_chunks(tmp_path_factory.mktemp("crm") / "export", tables)


def test_an_export_imported_in_parts_stores_what_the_whole_import_stores(export, tmp_path):
    whole = import_raw(
        read_folder(export), as_of=AS_OF, source="whole", imported_at=NOW, store=tmp_path / "a"
    )
    with dask_client(local_cluster=2) as client:
        parted = import_in_parts(
            export, 4, as_of=AS_OF, imported_at=NOW, store=tmp_path / "b", client=client
        )
    assert parted.tables is None and parted.derived == () and parted.set_aside == ()
    assert store_parts(parted.write.path) == 4
    stored = read_store(tmp_path / "b")
    assert whole.tables is not None
    for name in TABLES:
        pd.testing.assert_frame_equal(
            in_key_order(stored[name], name), in_key_order(whole.tables[name], name)
        )
    assert whole.write.rows == parted.write.rows and sum(parted.write.rows.values()) > 40_000
    # each part holds its accounts with their deals and the deals' own rows
    for number in range(4):
        part = {n: pd.read_parquet(parted.write.path / n / f"part-{number:05d}.parquet")
                for n in ("accounts", "deals", "deal_history")}  # fmt: skip
        assert set(part["deals"]["account_id"].dropna()) <= set(part["accounts"]["account_id"])
        assert set(part["deal_history"]["deal_id"]) <= set(part["deals"]["deal_id"])


def forecast(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"FORECAST_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([str(BIN / "forecast"), *args], env=env, capture_output=True, text=True)


def test_a_bad_row_is_named_by_file_and_line_and_nothing_is_stored(export, tmp_path):
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(export), str(broken)], check=True)
    chunk = broken / "deals" / "deals-001.csv"
    lines = chunk.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[7].split(",")
    cells[header.index("amount")] = "-5"
    lines[7] = ",".join(cells)
    chunk.write_text("\n".join(lines) + "\n")
    home = tmp_path / "home"
    assert forecast(home, "data", "import", str(export), "--partitions", "3",
                    "--as-of", "2026-11-15").returncode == 0  # fmt: skip
    before = store_manifest(home / "store")
    done = forecast(home, "data", "import", str(broken), "--partitions", "3",
                    "--as-of", "2026-11-15", "--local-cluster", "2")  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "deals-001.csv line 8, column amount: '-5'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert store_manifest(home / "store") == before  # the store as it was
    checked = forecast(home, "data", "validate", str(broken), "--partitions", "2")
    assert checked.returncode == 1 and "deals-001.csv line 8, column amount" in checked.stderr
    valid = forecast(home, "data", "validate", str(export), "--partitions", "2")
    assert valid.returncode == 0 and "valid (2 parts): reps" in valid.stdout, valid.stderr
    assert store_manifest(home / "store") == before  # validating stores nothing
    whole_on_a_cluster = forecast(home, "data", "import", str(export), "--local-cluster", "2")
    assert whole_on_a_cluster.returncode == 2 and "give --partitions N" in whole_on_a_cluster.stderr


def test_a_deal_id_used_in_two_parts_is_refused_with_its_value(tmp_path):
    tables = make_crm(600, seed=5).tables
    deals = tables.deals.copy()
    part = partition_of(deals["account_id"].to_numpy(), 3)
    twin = deals[part != part[0]].iloc[[0]].assign(deal_id=deals["deal_id"].iloc[0])
    export = export_in_chunks(tmp_path / "export", tables.replace(deals=pd.concat([deals, twin])))
    with pytest.raises(PartsError) as refused:
        import_in_parts(export, 3, as_of=AS_OF, imported_at=NOW, store=tmp_path / "store")
    assert f"deals: key deal_id repeated across parts: {deals['deal_id'].iloc[0]}" in str(
        refused.value
    )
    assert not (tmp_path / "store" / "current").exists()


def test_an_export_with_no_deals_orders_or_revenue_rows_is_refused_in_parts_too(tmp_path):
    """A header-only deals file imported in parts would have replaced the store, as a whole
    import of it no longer does."""
    from forecast.data.validate import LEARNED_FROM
    from forecast.data.violations import ValidationError

    tables = make_crm(300, seed=6).tables
    export = export_in_chunks(tmp_path / "export", tables)
    import_in_parts(export, 2, as_of=AS_OF, imported_at=NOW, store=tmp_path / "store")
    before = store_manifest(tmp_path / "store")["version"]
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("reps", "products", "accounts", *LEARNED_FROM):
        frame = tables[name] if name in ("reps", "products", "accounts") else tables[name].iloc[:0]
        frame.to_csv(empty / f"{name}.csv", index=False)
    with pytest.raises(ValidationError) as refused:
        import_in_parts(empty, 2, as_of=AS_OF, imported_at=NOW, store=tmp_path / "store")
    assert {v.check for v in refused.value.violations} == {"empty_export"}
    assert "deals.csv" in str(refused.value)
    assert store_manifest(tmp_path / "store")["version"] == before
