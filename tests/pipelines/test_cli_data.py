"""The `forecast data` commands end to end, through the CLI a person types."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
from typer.testing import CliRunner

from forecast.cli import app
from forecast.data.ingest import read_world
from forecast.data.store import read_store, store_manifest
from forecast.data.world import make_crm

runner = CliRunner()


def _write_csv_folder(tables, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, frame in tables.items():
        pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), folder / f"{name}.csv")
    return folder


def test_generate_stores_the_world_with_its_truth_and_describes_it():
    result = runner.invoke(app, ["data", "generate", "--deals", "600", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "CRM as of 2026-11-15" in result.output
    assert "Stage conversion" in result.output
    world = read_world()
    assert world is not None
    assert len(world.tables.deals) == 600
    assert len(world.truth.deal_advance) == 600

    again = runner.invoke(app, ["data", "generate", "--deals", "600", "--seed", "3", "--quiet"])
    assert again.exit_code == 0
    assert "unchanged" in again.output


def test_describe_json_reports_counts_and_rates():
    runner.invoke(app, ["data", "generate", "--deals", "500", "--quiet"])
    result = runner.invoke(app, ["data", "describe", "--json"])
    assert result.exit_code == 0, result.output
    described = json.loads(result.output)
    assert described["rows"]["deals"] == 500
    assert 0.1 < described["win_rate"] < 0.6
    assert described["stage_conversion"][0]["from"] == "prospecting"


def test_describe_without_data_says_what_to_do():
    result = runner.invoke(app, ["data", "describe"])
    assert result.exit_code == 1
    assert "forecast data generate" in result.output


def test_import_a_canonical_folder_then_the_same_again(tmp_path):
    world = make_crm(400, seed=5)
    folder = _write_csv_folder(world.tables, tmp_path / "export")
    first = runner.invoke(app, ["data", "import", str(folder), "--as-of", "2026-11-15"])
    assert first.exit_code == 0, first.output
    assert "imported" in first.output
    stored = read_store()
    assert len(stored.deals) == 400
    assert read_world() is None  # an import carries no truth
    second = runner.invoke(app, ["data", "import", str(folder), "--as-of", "2026-11-15"])
    assert second.exit_code == 0
    assert "unchanged" in second.output
    assert store_manifest()["version"] == first.output.split("version ")[1].split()[0]


def test_bad_import_exits_non_zero_names_the_problem_and_writes_nothing(tmp_path):
    runner.invoke(app, ["data", "generate", "--deals", "300", "--quiet"])
    before = store_manifest()
    tables = make_crm(300, seed=1).tables
    deals = tables.deals.copy()
    deals.loc[2, "stage"] = "won_big"  # the third record: line 4 after the header
    folder = _write_csv_folder(tables.replace(deals=deals), tmp_path / "bad")
    result = runner.invoke(app, ["data", "import", str(folder), "--as-of", "2026-11-15"])
    assert result.exit_code == 1
    assert "deals.csv" in result.output
    assert "line 4" in result.output
    assert "won_big" in result.output
    assert store_manifest() == before


def test_validate_checks_without_storing(tmp_path):
    folder = _write_csv_folder(make_crm(300, seed=2).tables, tmp_path / "export")
    result = runner.invoke(app, ["data", "validate", str(folder), "--as-of", "2026-11-15"])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output
    missing = runner.invoke(app, ["data", "describe"])
    assert missing.exit_code == 1


def test_help_lists_the_data_commands():
    result = runner.invoke(app, ["data", "--help"])
    assert result.exit_code == 0
    for command in ("generate", "import", "validate", "describe", "doctor", "rollback"):
        assert command in result.output


def test_an_export_without_amounts_says_no_forecast_and_rolls_back(tmp_path):
    """Amounts may be left out (the win model needs none), but then no bookings forecast can be
    made: the doctor and `forecast revenue` say why; `data rollback` brings the import back."""
    tables = make_crm(400, seed=5).tables
    whole = _write_csv_folder(tables, tmp_path / "whole")
    without = _write_csv_folder(
        tables.replace(deals=tables.deals.drop(columns="amount")), tmp_path / "without"
    )
    first = runner.invoke(app, ["data", "import", str(whole), "--as-of", "2026-11-15"])
    assert first.exit_code == 0, first.output
    version = store_manifest()["version"]
    second = runner.invoke(app, ["data", "import", str(without), "--as-of", "2026-11-15"])
    assert second.exit_code == 0, second.output
    assert read_store().deals["amount"].isna().all()

    revenue = runner.invoke(app, ["revenue", "--quarter", "2026Q4"])
    assert revenue.exit_code == 1
    assert "no stored deal carries an amount" in revenue.output
    assert "deals.amount" in revenue.output
    doctor = runner.invoke(app, ["data", "doctor", "--json"])
    verdict = json.loads(doctor.output)["trainable"]["revenue forecast"]
    assert verdict.startswith("no: no stored deal carries an amount")

    back = runner.invoke(app, ["data", "rollback"])
    assert back.exit_code == 0, back.output
    assert f"version {version} is current again" in " ".join(back.output.split())
    assert store_manifest()["version"] == version
    assert read_store().deals["amount"].notna().any()
    doctor = runner.invoke(app, ["data", "doctor", "--json"])
    assert json.loads(doctor.output)["trainable"]["revenue forecast"] == "yes"
    again = runner.invoke(app, ["data", "rollback"])
    assert again.exit_code == 1
    assert "no version before" in again.output
