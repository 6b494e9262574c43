"""The written contract is rendered from the schema, so the two cannot drift apart."""

from __future__ import annotations

from pathlib import Path

from forecast.data.contract_doc import BEGIN_MARK, embed_contract
from forecast.data.schema import TABLES

DOC = Path(__file__).resolve().parents[2] / "docs" / "data-contract.md"


def test_data_contract_doc_is_current():
    text = DOC.read_text(encoding="utf-8")
    assert BEGIN_MARK in text
    assert embed_contract(text) == text, "run `make docs` to re-render docs/data-contract.md"


def test_every_table_has_a_key_made_of_its_columns():
    for table in TABLES.values():
        assert set(table.key) <= set(table.column_names), table.name
        if table.known_at:
            assert table.known_at in table.column_names, table.name
