"""Presets: a mapping names its CRM and writes only what differs; each has an example export."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from forecast.cli import app
from forecast.sources.mapping import read_mapped
from forecast.validate import ValidationError, check

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
runner = CliRunner()

# preset -> (tables the example imports, whether its history was recorded)
EXPECTED = {
    "salesforce": ({"reps", "accounts", "deals", "deal_history", "activities"}, True),
    "hubspot": ({"accounts", "deals", "deal_history"}, False),
    "zoho": ({"deals", "deal_history"}, False),
    "dynamics": ({"reps", "accounts", "deals", "deal_history"}, False),
}


@pytest.mark.parametrize("preset", list(EXPECTED))
def test_each_preset_example_imports_as_the_docs_print(preset, monkeypatch):
    monkeypatch.chdir(ROOT)
    command = f"data import docs/examples/{preset} --mapping docs/examples/{preset}/mapping.yaml"
    assert f"forecast {command}" in (EXAMPLES / preset / "mapping.yaml").read_text()
    result = runner.invoke(app, command.split())
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output

    raw, as_of = read_mapped(EXAMPLES / preset, EXAMPLES / preset / "mapping.yaml")
    checked = check(raw, as_of=as_of)
    tables, recorded = EXPECTED[preset]
    assert {name for name, frame in checked.tables.items() if len(frame)} == tables
    assert ("deal_history" not in checked.derived) == recorded
    deals = checked.tables.deals
    assert deals["outcome"].value_counts().to_dict() == {"lost": 71, "won": 40, "open": 9}
    closed = deals[deals["outcome"] != "open"]
    assert (
        closed["closed_at"].notna().all()
        and deals.loc[deals["outcome"] == "open", "closed_at"].isna().all()
    )
    assert (closed["closed_at"] >= closed["created_at"]).all()


def test_a_deals_only_export_with_the_close_day_as_expected_close_is_refused(tmp_path):
    """The presets map the close date twice; without history the guard catches the expected."""
    folder = tmp_path / "hs"
    folder.mkdir()
    (folder / "deals.csv").write_bytes((EXAMPLES / "hubspot" / "deals.csv").read_bytes())
    (folder / "mapping.yaml").write_text("preset: hubspot\nas_of: 2024-12-31\n")
    assert (
        runner.invoke(
            app, ["data", "import", str(folder), "--mapping", str(folder / "mapping.yaml")]
        ).exit_code
        == 0
    )
    doctor = runner.invoke(app, ["data", "doctor"])
    assert doctor.exit_code == 1
    assert "deals.expected_close" in doctor.output
    assert 'expected_close: "-"' in doctor.output


def test_a_mapping_overrides_what_differs_and_drops_a_preset_column(tmp_path):
    frame = pd.read_csv(EXAMPLES / "salesforce" / "Opportunity.csv", dtype=str)
    folder = tmp_path / "sf"
    folder.mkdir()
    frame.rename(columns={"Amount": "Amount__c"}).drop(columns="CloseDate").assign(
        Closed=None
    ).to_csv(folder / "Opportunity.csv", index=False)
    (folder / "mapping.yaml").write_text(
        "preset: salesforce\nas_of: 2024-12-31\ntables:\n  deals:\n"
        "    columns: {amount: Amount__c, expected_close: '-', closed_at: Closed}\n"
    )
    raw, _ = read_mapped(folder, folder / "mapping.yaml")
    assert set(raw) == {"deals"}  # the preset's other tables are not in this export
    assert "expected_close" not in raw["deals"].frame
    assert raw["deals"].frame["amount"].notna().sum() == frame["Amount"].notna().sum()
    with pytest.raises(ValidationError, match="needs closed_at"):
        check(raw, as_of=pd.Timestamp("2024-12-31"))


def test_an_unknown_preset_is_a_mapping_error_with_the_choices(tmp_path):
    (tmp_path / "mapping.yaml").write_text("preset: pipedrive\n")
    with pytest.raises(ValidationError) as refused:
        read_mapped(tmp_path, tmp_path / "mapping.yaml")
    message = str(refused.value)
    assert "line 1" in message and "salesforce" in message and "dynamics" in message
