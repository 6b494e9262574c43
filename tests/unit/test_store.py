"""The store: atomic, idempotent versions of the canonical tables, with rollback and pruning."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import forecast.data.store as store_module
from forecast.data.schema import TABLES
from forecast.data.store import (
    StoreEmptyError,
    StoreError,
    read_store,
    rollback_store,
    store_manifest,
    write_store,
)
from forecast.data.tables import PANDAS_DTYPES, STRING, CrmTables
from forecast.settings import get_settings

AS_OF = pd.Timestamp("2024-06-30")
T1 = pd.Timestamp("2024-07-01 08:00")
T2 = pd.Timestamp("2024-07-02 08:00")


def crm(amounts: tuple[float, ...] = (100.0, 250.5)) -> CrmTables:
    """Two small tables with every canonical dtype and some empty cells; the rest empty."""
    deals = pd.DataFrame(
        {
            "deal_id": ["D1", "D2"],
            "account_id": ["A1", None],
            "rep_id": ["R1", "R1"],
            "product_id": ["P1", "P1"],
            "created_at": pd.to_datetime(["2024-01-01 10:00", "2024-02-01 00:00"]),
            "amount": list(amounts),
            "expected_close": pd.to_datetime(["2024-03-31", None]),
            "stage": ["closed_won", "proposal"],
            "closed_at": pd.to_datetime(["2024-03-01", None]),
            "outcome": ["won", "open"],
            "discount": [0.1, np.nan],
        }
    )
    accounts = pd.DataFrame(
        {
            "account_id": ["A1", "A2"],
            "name": ["Acme", ""],  # "" and empty are different values
            "industry": ["x", "y"],
            "region": ["NA", "NA"],
            "segment": ["smb", "smb"],
            "employees": pd.array([12, None], dtype="Int64"),
            "owner_rep_id": [None, "R1"],
            "created_at": pd.to_datetime(["2022-01-01", "2022-01-02"]),
        }
    )
    revenue = pd.DataFrame(
        {
            "account_id": ["A1"],
            "product_id": ["P1"],
            "period": pd.to_datetime(["2024-05-01"]),
            "kind": ["one_time"],
            "amount": [5.0],
            "contract_end": pd.to_datetime([None]),
        }
    )
    return CrmTables.from_frames(
        {"deals": deals, "accounts": accounts, "revenue": revenue}, as_of=AS_OF
    )


def snapshot(root: Path) -> dict[str, object]:
    state: dict[str, object] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                state[key] = ("link", str(path.readlink()))
            elif path.is_file():
                state[key] = path.read_bytes()
            else:
                state[key] = "dir"
    return state


def versions(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "versions").iterdir())


def test_tables_round_trip_with_canonical_dtypes(tmp_path: Path) -> None:
    tables = crm()

    written = write_store(tables, source="test.csv", imported_at=T1, store=tmp_path)
    back = read_store(tmp_path)

    assert written.changed
    assert written.rows["deals"] == 2
    assert back.as_of == AS_OF
    for name, frame in tables.items():
        pd.testing.assert_frame_equal(back[name], frame, check_exact=True)
        for col in TABLES[name].columns:
            assert back[name][col.name].dtype == PANDAS_DTYPES[col.type]
    assert back.accounts.name.tolist() == ["Acme", ""]
    assert back.accounts.owner_rep_id.isna().tolist() == [True, False]


def test_layout_and_manifest(tmp_path: Path) -> None:
    written = write_store(crm(), source="export/", imported_at=T1, store=tmp_path)

    assert (tmp_path / "current").is_symlink()
    assert (tmp_path / "current").resolve() == written.path.resolve()
    assert sorted(p.name for p in written.path.iterdir()) == sorted(
        [f"{name}.parquet" for name in TABLES] + ["manifest.json"]
    )
    manifest = json.loads((written.path / "manifest.json").read_text())
    assert manifest["as_of"] == "2024-06-30T00:00:00"
    assert manifest["imported_at"] == "2024-07-01T08:00:00"
    assert manifest["source"] == "export/"
    assert manifest["rows"]["deals"] == 2
    assert manifest["fingerprint"] == written.fingerprint
    assert manifest["forecast_version"]
    assert store_manifest(tmp_path) == {**manifest, "version": written.version}


def test_the_default_store_is_under_forecast_home(forecast_home: Path) -> None:
    write_store(crm(), source="x", imported_at=T1)

    assert get_settings().store_path == (forecast_home / "store").resolve()
    assert (forecast_home / "store" / "current").is_symlink()
    assert len(read_store().deals) == 2


def test_same_content_twice_writes_nothing(tmp_path: Path) -> None:
    first = write_store(crm(), source="a", imported_at=T1, store=tmp_path)
    before = snapshot(tmp_path)

    second = write_store(crm(), source="b", imported_at=T2, store=tmp_path)

    assert not second.changed
    assert second.version == first.version
    assert second.fingerprint == first.fingerprint
    assert snapshot(tmp_path) == before
    assert len(versions(tmp_path)) == 1


def test_fingerprint_follows_content_only() -> None:
    assert store_module.fingerprint_tables(crm()) == store_module.fingerprint_tables(crm())
    assert store_module.fingerprint_tables(crm()) != store_module.fingerprint_tables(
        crm((100.0, 250.25))
    )
    later = crm().replace(as_of=pd.Timestamp("2024-07-31"))
    assert store_module.fingerprint_tables(later) != store_module.fingerprint_tables(crm())
    tables = crm()
    blank = tables.accounts.assign(name=pd.Series(["Acme", None], dtype=STRING))
    assert store_module.fingerprint_tables(
        tables.replace(accounts=blank)
    ) != store_module.fingerprint_tables(tables)


def test_a_failed_write_leaves_the_store_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_store(crm(), source="a", imported_at=T1, store=tmp_path)
    before = snapshot(tmp_path)
    real_write = store_module._write_table
    calls = []

    def fail_on_third(frame: pd.DataFrame, path: Path) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real_write(frame, path)

    monkeypatch.setattr(store_module, "_write_table", fail_on_third)

    with pytest.raises(OSError, match="disk full"):
        write_store(crm((1.0, 2.0)), source="b", imported_at=T2, store=tmp_path)

    assert snapshot(tmp_path) == before
    assert not [p for p in (tmp_path / "versions").iterdir() if p.name.startswith(".tmp-")]


def test_a_failure_while_switching_leaves_the_store_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_store(crm(), source="a", imported_at=T1, store=tmp_path)
    before = snapshot(tmp_path)

    def fail(root: Path, version: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module, "_switch", fail)

    with pytest.raises(KeyboardInterrupt):
        write_store(crm((1.0, 2.0)), source="b", imported_at=T2, store=tmp_path)

    assert snapshot(tmp_path) == before
    assert read_store(tmp_path).deals.amount.tolist() == [100.0, 250.5]


def test_rollback_goes_to_the_previous_version(tmp_path: Path) -> None:
    first = write_store(crm(), source="a", imported_at=T1, store=tmp_path)
    second = write_store(crm((1.0, 2.0)), source="b", imported_at=T2, store=tmp_path)
    assert second.changed and second.version != first.version

    assert rollback_store(tmp_path) == first.version

    assert read_store(tmp_path).deals.amount.tolist() == [100.0, 250.5]
    assert store_manifest(tmp_path)["version"] == first.version
    with pytest.raises(StoreError, match="no version before"):
        rollback_store(tmp_path)


def test_old_versions_are_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORECAST_STORE_VERSIONS_KEPT", "2")
    get_settings.cache_clear()
    written = [
        write_store(crm((float(i), 2.0)), source=str(i), imported_at=T1, store=tmp_path)
        for i in range(4)
    ]

    assert versions(tmp_path) == [written[2].version, written[3].version]
    assert store_manifest(tmp_path)["version"] == written[3].version


def test_pruning_never_removes_the_current_version(tmp_path: Path) -> None:
    old = write_store(crm(), source="a", imported_at=T1, store=tmp_path)
    new = write_store(crm((1.0, 2.0)), source="b", imported_at=T2, store=tmp_path)
    rollback_store(tmp_path)

    store_module._prune(tmp_path, keep=1)

    assert versions(tmp_path) == [old.version]
    assert not (tmp_path / "versions" / new.version).exists()
    assert len(read_store(tmp_path).deals) == 2


def test_reading_an_empty_store_says_what_to_do(tmp_path: Path) -> None:
    for action in (read_store, store_manifest, rollback_store):
        with pytest.raises(StoreEmptyError) as caught:
            action(tmp_path / "store")
        message = str(caught.value)
        assert str(tmp_path / "store") in message
        assert "forecast data generate" in message
        assert "forecast data import" in message


def test_reading_some_tables(tmp_path: Path) -> None:
    write_store(crm(), source="a", imported_at=T1, store=tmp_path)

    back = read_store(tmp_path, tables=["accounts"])

    assert len(back.accounts) == 2
    assert back.deals.empty
    assert list(back.deals.columns) == TABLES["deals"].column_names
    with pytest.raises(KeyError, match="opportunities"):
        read_store(tmp_path, tables=["opportunities"])
