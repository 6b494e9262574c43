"""notebooks/02-quarterly-forecast.ipynb runs top to bottom on a small world."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "02-quarterly-forecast.ipynb"


def test_the_quarterly_forecast_notebook_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    # a small world, few draws, two backtest quarters: the notebook reads these variables
    for name, value in {
        "FORECAST_NB_DEALS": "3000",
        "FORECAST_NB_START": "2023-07-01",
        "FORECAST_NB_AS_OF": "2025-11-20",
        "FORECAST_NB_DRAWS": "1000",
        "FORECAST_NB_BACKTEST_QUARTERS": "2",
        "MPLBACKEND": "Agg",
    }.items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(str(o.get("text", "")) + str(o.get("data", {})) for o in outputs)
    assert "of the uncertainty" in text and "weighted_pipeline" in text
