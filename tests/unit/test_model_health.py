"""Live accuracy joins logged scores with later outcomes; the run's metrics become a table."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from service.keys import engine_for, ensure_tables
from service.model_health import live_accuracy, metrics_table
from service.predlog import Prediction, log_predictions


def _log(engine, deal_id: str, probability: float, at: str) -> None:
    log_predictions(
        engine,
        request_id=f"r-{deal_id}-{at}",
        caller="k1",
        model="deal-win",
        model_version="3",
        predictions=[Prediction(deal_id, {"deal_id": deal_id}, {"probability": probability})],
        at=datetime.fromisoformat(at).replace(tzinfo=UTC),
    )


@pytest.fixture
def engine(tmp_path: Path):
    engine = engine_for(f"sqlite:///{tmp_path / 'service.db'}")
    ensure_tables(engine)
    return engine


DEALS = pd.DataFrame(
    {
        "deal_id": ["A", "B", "C", "D", "E"],
        "closed_at": pd.to_datetime(["2026-12-10", "2026-12-12", "2026-11-01", None, "2026-12-20"]),
        "outcome": ["won", "lost", "won", "open", "lost"],
    }
)


def test_no_outcomes_yet_is_said_not_guessed(engine) -> None:
    tables = SimpleNamespace(deals=DEALS)
    assert live_accuracy(engine, tables, "deal-win").outcomes == 0
    _log(engine, "D", 0.4, "2026-12-01")  # still open
    _log(engine, "C", 0.9, "2026-12-01")  # scored after it closed: cannot count
    live = live_accuracy(engine, tables, "deal-win")
    assert (live.outcomes, live.logged, live.log_loss) == (0, 2, None)


def test_last_score_before_the_close_is_judged(engine) -> None:
    tables = SimpleNamespace(deals=DEALS)
    _log(engine, "A", 0.2, "2026-11-20")
    _log(engine, "A", 0.8, "2026-12-01")  # the later score, still before the close, counts
    _log(engine, "B", 0.3, "2026-12-01")
    _log(engine, "E", 0.6, "2026-12-01")
    _log(engine, "E", 0.1, "2026-12-25")  # after E closed: ignored
    live = live_accuracy(engine, tables, "deal-win")
    p, y = np.array([0.8, 0.3, 0.6]), np.array([1.0, 0.0, 0.0])
    assert live.outcomes == 3
    assert live.log_loss == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert live.brier == pytest.approx(np.mean((p - y) ** 2))
    assert live.auc == pytest.approx(1.0)
    assert (live.won_rate, live.mean_predicted) == pytest.approx((1 / 3, p.mean()))


def test_metrics_table_puts_the_model_first_and_keeps_baselines() -> None:
    table = metrics_table(
        {
            "baseline_stage_fixed_log_loss": 0.6,
            "test_auc": 0.79,
            "test_pr_auc": 0.5,  # not an "auc" of a contender named "test_pr"
            "test_log_loss": 0.54,
            "truth_auc": 0.83,
            "gate_champion_auc": 0.7,  # the gate's re-score, not a contender
            "candidate_lightgbm_auc": 0.78,
        }
    )
    assert list(table.index) == [
        "model (this version)",
        "baseline stage fixed",
        "truth (the generator's probability)",
    ]
    assert table.loc["model (this version)", "auc"] == 0.79
    assert table.loc["baseline stage fixed", "log_loss"] == 0.6
    assert np.isnan(table.loc["baseline stage fixed", "auc"])
