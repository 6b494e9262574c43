"""`forecast explain deal` and `forecast coach`, end to end on a trained champion."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from forecast.cli.explain import coach_app, explain_app
from forecast.data.ingest import generate
from forecast.data.store import read_store
from forecast.explain.scoring import open_deal_ids
from forecast.model import TreeParams
from forecast.training.win import train_win
from forecast.training.win_task import WinParams

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(explain_app, name="explain")
    app.add_typer(coach_app, name="coach")
    return app


@pytest.fixture
def champion(tmp_path):
    from forecast.training.registry import register_and_gate
    from forecast.training.win_task import MODEL_NAME

    world, _ = generate(5000, seed=5, imported_at=pd.Timestamp("2026-11-15"))
    params = WinParams(tree=TreeParams(n_estimators=40, n_jobs=1))
    result = train_win(world.tables, truth=world.truth, params=params, card_dir=tmp_path)
    register_and_gate(MODEL_NAME, result.model_uri, result.run_id, result.evaluation())
    return world


def test_explain_a_deal_in_words_and_json(champion):
    tables = read_store()
    deal_id = open_deal_ids(tables, tables.as_of).iloc[0]
    shown = runner.invoke(_app(), ["explain", "deal", deal_id])
    assert shown.exit_code == 0, shown.output
    assert "win probability" in shown.output and "deal-win v1 (champion)" in shown.output
    as_json = runner.invoke(_app(), ["explain", "deal", deal_id, "--json"])
    payload = json.loads(as_json.stdout)
    assert payload["deal_id"] == deal_id
    assert payload["grade"] in {"A", "B", "C", "D"}
    assert payload["explanation"]["reasons"]
    assert payload["model"] == {"name": "deal-win", "version": "1"}


def test_explaining_an_unknown_deal_or_without_a_champion_says_what_to_do(champion):
    unknown = runner.invoke(_app(), ["explain", "deal", "NOPE"])
    assert unknown.exit_code == 1
    assert " ".join(unknown.output.split()) == "no deal NOPE in the stored CRM"


def test_no_champion_yet_is_a_clear_message():
    generate(400, seed=1, imported_at=pd.Timestamp("2026-11-15"))
    tables = read_store()
    deal_id = open_deal_ids(tables, tables.as_of).iloc[0]
    shown = runner.invoke(_app(), ["explain", "deal", deal_id])
    assert shown.exit_code == 1
    assert "forecast train win" in shown.output


def test_coach_a_rep_and_a_team():
    generate(3000, seed=2, imported_at=pd.Timestamp("2026-11-15"))
    tables = read_store()
    rep = tables.reps[tables.reps["role"] == "rep"].iloc[0]
    shown = runner.invoke(_app(), ["coach", "rep", rep["rep_id"]])
    assert shown.exit_code == 0, shown.output
    assert "Conversion out of each stage" in shown.output
    as_json = json.loads(runner.invoke(_app(), ["coach", "rep", rep["rep_id"], "--json"]).stdout)
    assert as_json["rep_id"] == rep["rep_id"] and len(as_json["funnel"]) == 4
    team = runner.invoke(_app(), ["coach", "team", rep["team"], "--json"])
    assert team.exit_code == 0 and {v["team"] for v in json.loads(team.stdout)} == {rep["team"]}
    missing = runner.invoke(_app(), ["coach", "team", "Atlantis"])
    assert missing.exit_code == 1 and "Atlantis" in missing.output
