"""A table mapped from a file that repeats its key (`one_row_per`): customers from order lines,
and what the inactivity churn features make of their attributes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from forecast.data.sources.mapping import read_mapped
from forecast.data.tables import CrmTables
from forecast.data.validate import validate
from forecast.data.violations import ValidationError
from forecast.features.orders import customer_snapshots, inactivity_features

LINES = """Invoice,Customer,When,Qty,Price,Country
5,C2,2024-03-01 10:00,1,9.5,France
1,C1,2024-01-05 09:00,2,3.0,Norway
2,,2024-01-06 11:00,1,4.0,United Kingdom
3,C1,2024-02-01 12:00,1,5.0,Sweden
4,C2,2024-02-10 08:00,3,2.0,Spain
"""


def _mapping(tmp_path: Path, one_row_per: str = "account_id") -> Path:
    (tmp_path / "lines.csv").write_text(LINES)
    (tmp_path / "mapping.yaml").write_text(
        "as_of: 2024-06-30\n"
        "tables:\n"
        "  orders:\n    file: lines.csv\n"
        "    columns: {order_id: Invoice, account_id: Customer, at: When, quantity: Qty,"
        " unit_price: Price}\n"
        "  accounts:\n    file: lines.csv\n"
        f"    one_row_per: {one_row_per}\n"
        "    columns: {account_id: Customer, region: Country, created_at: When}\n"
    )
    return tmp_path / "mapping.yaml"


def test_each_customer_is_the_earliest_of_its_lines_and_lines_without_one_give_none(tmp_path):
    raw, as_of = read_mapped(tmp_path, _mapping(tmp_path))
    accounts = raw["accounts"]
    rows = accounts.frame.set_index("account_id")
    assert list(rows.index) == ["C1", "C2"]  # in the order of the lines kept
    assert rows.loc["C1", "region"] == "Norway"  # its first invoice, not the file's first line
    assert rows.loc["C2", "region"] == "Spain"
    assert str(rows.loc["C2", "created_at"]).startswith("2024-02-10")
    assert list(accounts.lines) == [3, 6]  # each row still names its line of the file
    tables = validate(raw, as_of=as_of)  # one row per key: the contract's unique key holds
    assert len(tables.accounts) == 2 and len(tables.orders) == 5


@pytest.mark.parametrize("key", ["region", "deal_id"])
def test_one_row_per_anything_but_the_key_is_a_mapping_error_with_its_line(tmp_path, key):
    with pytest.raises(ValidationError) as refused:
        read_mapped(tmp_path, _mapping(tmp_path, key))
    message = str(refused.value)
    assert "one_row_per" in message and "the key of accounts: account_id" in message
    assert "mapping.yaml line" in message


def test_a_customers_attributes_are_features_once_the_account_exists(tmp_path):
    raw, as_of = read_mapped(tmp_path, _mapping(tmp_path))
    tables = validate(raw, as_of=as_of)
    at = [pd.Timestamp("2024-01-20"), pd.Timestamp("2024-03-15")]
    snapshots = customer_snapshots(tables, at)
    features = inactivity_features(tables, snapshots).set_index(["account_id", "as_of"])
    assert features.loc[("C1", at[0]), "region"] == "Norway"
    assert features.loc[("C2", at[1]), "region"] == "Spain"
    assert features["segment"].isna().all()  # not in the export: empty, not a guess
    # an account created after the as-of is not known then, whatever its orders say
    late = tables.accounts.assign(created_at=pd.Timestamp("2024-03-01"))
    moved = inactivity_features(tables.replace(accounts=late), snapshots)
    assert moved.set_index(["account_id", "as_of"]).loc[("C1", at[0]), "region"] is None


def test_without_an_accounts_table_the_attributes_are_empty():
    orders = pd.DataFrame(
        {"order_id": ["1"], "account_id": ["C1"], "at": [pd.Timestamp("2024-01-05")],
         "amount": [6.0]}
    )  # fmt: skip
    tables = CrmTables.from_frames({"orders": orders}, as_of=pd.Timestamp("2024-06-30"))
    features = inactivity_features(tables, customer_snapshots(tables, [pd.Timestamp("2024-02-01")]))
    assert features[["segment", "industry", "region"]].isna().all().all()
