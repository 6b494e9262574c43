"""Presets: a mapping names its CRM and writes only what differs; each has an example export."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from forecast.cli import app
from forecast.data.sources.mapping import read_mapped
from forecast.data.store import read_store
from forecast.data.validate import check
from forecast.data.violations import ValidationError

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


@pytest.mark.parametrize(
    ("closed", "as_of", "expected"),
    [
        ("2024-06-01", "2024-06-01", "2024-06-01 00:00:00"),  # closed on the export day
        ("2024-05-31", "2024-06-01 12:00", "2024-05-31 23:59:59"),  # the end of its day
        ("2024-05-31T09:30:00+02:00", "2024-06-01", "2024-05-31 07:30:00"),  # an offset: UTC
        ("2024-05-31T09:30:00Z", "2024-06-01", "2024-05-31 09:30:00"),
    ],
    ids=["export-day", "whole-day", "offset", "zulu"],
)
def test_a_close_kept_as_a_day_lands_within_the_export(tmp_path, closed, as_of, expected):
    folder = tmp_path / "hs"
    folder.mkdir()
    (folder / "deals.csv").write_text(
        "Record ID,Deal Stage,Create Date,Close Date\n"
        f"1,Closed Won,2024-05-01 10:00,{closed}\n2,Contract Sent,2024-05-02 10:00,2024-07-01\n"
    )
    (folder / "mapping.yaml").write_text(
        "preset: hubspot\ntables:\n  deals:\n    columns: {expected_close: '-'}\n"
    )
    args = ["data", "import", str(folder), "--mapping", str(folder / "mapping.yaml")]
    result = runner.invoke(app, [*args, "--as-of", as_of])
    assert result.exit_code == 0, result.output
    deals = read_store().deals.set_index("deal_id")
    assert deals.loc["1", "closed_at"] == pd.Timestamp(expected)
    assert pd.isna(deals.loc["2", "closed_at"])  # open: its close date is only expected


def _hubspot_export(tmp_path, mapping: str) -> Path:
    folder = tmp_path / "hs"
    folder.mkdir()
    (folder / "deals.csv").write_text(
        "Record ID,Deal Stage,Create Date,Close Date,Outcome,Lead Source\n"
        "1,Closed Won,2024-05-01 10:00,2024-05-20,Won,Web\n"
    )
    (folder / "mapping.yaml").write_text(f"preset: hubspot\nas_of: 2024-06-01\n{mapping}")
    return folder


def test_a_mapping_s_own_attribute_with_a_typo_is_an_error_under_a_preset(tmp_path):
    folder = _hubspot_export(
        tmp_path,
        "tables:\n  deals:\n    attributes:\n"
        "      lead_source: {column: Lead Sorce, known_at: created}\n",
    )
    with pytest.raises(ValidationError, match="did you mean 'Lead Source'"):
        read_mapped(folder, folder / "mapping.yaml")


def test_a_column_the_mapping_maps_replaces_the_preset_s_derive_rule(tmp_path):
    folder = _hubspot_export(
        tmp_path,
        "tables:\n  deals:\n    columns: {outcome: Outcome, expected_close: '-'}\n"
        "    values: {outcome: {Won: won, Lost: lost, Open: open}}\n",
    )
    raw, as_of = read_mapped(folder, folder / "mapping.yaml")
    assert raw["deals"].frame["outcome"].tolist() == ["won"]
    assert check(raw, as_of=as_of).tables.deals["outcome"].tolist() == ["won"]


def test_a_stage_mapped_in_the_preset_s_place_is_still_closed_from_the_outcome(tmp_path):
    """Dynamics keeps a closed opportunity at its last sales stage; a mapping that reads the
    stage from another column (a display-name export's Pipeline Phase) still gets the preset's
    correction, or every closed deal is refused as open at its last stage."""
    folder = tmp_path / "dynamics"
    folder.mkdir()
    for name in ("account.csv", "systemuser.csv"):
        (folder / name).write_text((EXAMPLES / "dynamics" / name).read_text())
    opportunities = pd.read_csv(EXAMPLES / "dynamics" / "opportunity.csv", dtype=str)
    opportunities.rename(columns={"salesstage": "Pipeline Phase"}).to_csv(
        folder / "opportunity.csv", index=False
    )
    (folder / "mapping.yaml").write_text(
        "preset: dynamics\nas_of: 2024-12-31\n"
        "tables:\n  deals:\n    columns: {stage: Pipeline Phase}\n"
    )
    raw, as_of = read_mapped(folder, folder / "mapping.yaml")
    deals = check(raw, as_of=as_of).tables.deals
    closed = deals[deals["outcome"] != "open"]
    assert len(closed) > 10
    assert (closed["stage"] == "closed_" + closed["outcome"]).all()


def test_hubspot_owners_are_matched_by_the_name_the_deals_show(tmp_path):
    """HubSpot's deals export names each deal's owner ("Deal owner"): the owners file is read
    by that name, so the reps' teams reach their deals (keyed by an owner id, no deal matched)."""
    folder = tmp_path / "hubspot"
    folder.mkdir()
    for name in ("deals.csv", "companies.csv", "mapping.yaml"):
        (folder / name).write_text((EXAMPLES / "hubspot" / name).read_text())
    owners = sorted(pd.read_csv(folder / "deals.csv")["Deal owner"].dropna().unique())
    pd.DataFrame(
        {
            "Name": owners,
            "Team": [f"Team {i % 2}" for i in range(len(owners))],
            "Created at": "2022-01-01",
        }
    ).to_csv(folder / "owners.csv", index=False)
    raw, as_of = read_mapped(folder, folder / "mapping.yaml")
    tables = check(raw, as_of=as_of).tables
    assert set(tables.deals["rep_id"].dropna()) <= set(tables.reps["rep_id"])
    assert set(tables.reps["team"]) == {"Team 0", "Team 1"}
