"""The walkthrough notebooks run top to bottom on a small world (their sizes come from the env)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def _run(name: str, tmp_path: Path) -> str:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return "".join(str(o.get("text", "")) + str(o.get("data", {})) for o in outputs)


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch, forecast_home: Path) -> None:
    monkeypatch.setenv("FORECAST_NB_TREES", "40")
    monkeypatch.setenv("MPLBACKEND", "Agg")


def test_the_win_probability_notebook_runs(small, forecast_home, monkeypatch, tmp_path):
    monkeypatch.setenv("FORECAST_NB_DEALS", "5000")
    text = _run("01-win-probability.ipynb", tmp_path)
    assert "stage_fixed" in text and "truth" in text and "calibration" in text
    # a generated world's model never lands beside the user's CRM's models
    assert not forecast_home.exists() or not any(forecast_home.iterdir())


def test_the_churn_notebook_runs(small, forecast_home, monkeypatch, tmp_path):
    monkeypatch.setenv("FORECAST_NB_DEALS", "8000")
    monkeypatch.setenv("FORECAST_NB_SEED", "3")
    text = _run("03-churn.ipynb", tmp_path)
    assert "rate_table" in text and "revenue_at_risk" in text
    assert not forecast_home.exists() or not any(forecast_home.iterdir())
