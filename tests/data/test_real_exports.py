"""Real-shaped exports end to end through the CLI: import, doctor, train win. No traceback.

Each export (tests/data/real_exports.py) is what a CRM writes: one row per deal, the CRM's own
names and formats, blanks, same-day closes, rows out of order, columns with no home. Each must
import through its mapping; `doctor` must describe it; `train win` must either train or refuse
with a sentence that says what to add.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from forecast import train
from forecast.cli import app
from forecast.datasets import make_crm
from forecast.model import TreeParams
from tests.data.real_exports import EXPORTS

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
WHAT_TO_ADD = re.compile(r"at least \d+ of each|more history|shorter windows|--allow-column")


@pytest.fixture(scope="module")
def world():
    return make_crm(1500, seed=11)


@pytest.fixture
def small_trees(monkeypatch):
    fast = functools.partial(train.WinParams, tree=TreeParams(n_estimators=40, n_jobs=1))
    monkeypatch.setattr(train, "WinParams", fast)


def _no_traceback(result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output


@pytest.mark.parametrize("name", list(EXPORTS))
def test_a_real_shaped_export_imports_is_described_and_trains_or_says_why(
    name, world, tmp_path, small_trees
):
    export = EXPORTS[name](world.tables, tmp_path / name)

    imported = runner.invoke(app, export.import_args())
    _no_traceback(imported)
    assert imported.exit_code == 0, imported.output
    if export.bad_rows != "refuse":
        assert "rows set aside or repaired" in imported.output
        assert "Opportunities.csv line" in imported.output

    doctor = runner.invoke(app, ["data", "doctor", "--json"])
    _no_traceback(doctor)
    found = json.loads(doctor.output)
    assert found["history"] == "derived"
    assert "stage" in found["features_off"]
    assert doctor.exit_code == (1 if found["blockers"] else 0)

    trained = runner.invoke(app, ["train", "win"])
    _no_traceback(trained)
    if trained.exit_code == 0:
        assert re.search(r"deal-win v\d+ (promoted to champion|stays challenger)", trained.output)
        assert "base_rate" in trained.output
    else:
        assert trained.exit_code == 1
        assert WHAT_TO_ADD.search(trained.output), trained.output
    if name == "too-few-closed":
        assert trained.exit_code == 1 and "at least 40 of each" in trained.output


def test_close_before_create_is_refused_by_default_with_the_flag_to_use(world, tmp_path):
    export = EXPORTS["close-before-create-quarantined"](world.tables, tmp_path / "x")
    refused = runner.invoke(app, [*export.import_args()[:-2], "--bad-rows", "refuse"])
    assert refused.exit_code == 1
    assert "Opportunities.csv line" in refused.output
    assert "--bad-rows quarantine" in refused.output
    assert runner.invoke(app, ["data", "describe"]).exit_code == 1  # nothing was stored


def test_the_readme_worked_example_imports_as_printed(monkeypatch):
    readme = (ROOT / "docs" / "importing.md").read_text(encoding="utf-8")
    command = (
        "forecast data import docs/examples/crm-export "
        "--mapping docs/examples/crm-export/mapping.yaml"
    )
    assert command in readme
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, command.split()[1:])
    _no_traceback(result)
    assert result.exit_code == 0, result.output
    assert "Revenue by quarter" in result.output
    described = runner.invoke(app, ["data", "describe", "--json"])
    assert described.exit_code == 0
    assert json.loads(described.output)["rows"]["deal_history"] == 23
