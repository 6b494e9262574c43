"""Scoring deals as of a moment: grades from settings, a weekly trend, unknown deals named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecast.explain.scoring import grade, open_deal_ids, score_deals
from forecast.settings import get_settings


def test_grades_follow_the_cutoffs_in_settings(monkeypatch):
    assert list(grade([0.9, 0.5, 0.3, 0.1])) == ["A", "B", "C", "D"]
    monkeypatch.setenv("FORECAST_GRADE_CUTOFFS", "[0.95, 0.6, 0.4]")
    get_settings.cache_clear()
    assert list(grade([0.9, 0.5, 0.3])) == ["B", "C", "D"]


def test_scores_carry_grade_trend_and_reasons(trained):
    tables = trained["world"].tables
    as_of = pd.Timestamp("2025-09-14")
    scores = score_deals(tables, trained["scorer"], as_of=as_of, typical=trained["typical"])
    assert len(scores) == len(open_deal_ids(tables, as_of)) > 0
    for s in scores:
        assert 0 < s.probability < 1
        assert s.grade == grade(s.probability)[0]
        assert s.explanation.reasons
        if s.previous_probability is not None:
            assert s.trend_points == pytest.approx(
                100 * (s.probability - s.previous_probability), abs=0.01
            )
    assert any(s.trend_points is not None for s in scores)
    assert any(s.trend_points is None for s in scores)  # deals created this week


def test_scoring_a_deal_that_is_not_open_is_refused(trained):
    tables = trained["world"].tables
    closed = tables.deals.loc[tables.deals["outcome"] == "won", "deal_id"].iloc[0]
    with pytest.raises(KeyError, match=str(closed)):
        score_deals(tables, trained["scorer"], deal_ids=[closed])


def test_probability_does_not_depend_on_the_deal_id(trained):
    tables = trained["world"].tables
    as_of = pd.Timestamp("2025-09-14")
    deal_id = open_deal_ids(tables, as_of).iloc[0]
    original = score_deals(tables, trained["scorer"], as_of=as_of, deal_ids=[deal_id])[0]
    renamed = "Z" + str(deal_id)
    swap = {deal_id: renamed}
    t = tables.replace(
        deals=tables.deals.assign(deal_id=tables.deals["deal_id"].replace(swap)),
        deal_history=tables.deal_history.assign(
            deal_id=tables.deal_history["deal_id"].replace(swap)
        ),
        activities=tables.activities.assign(deal_id=tables.activities["deal_id"].replace(swap)),
    )
    again = score_deals(t, trained["scorer"], as_of=as_of, deal_ids=[renamed])[0]
    assert np.isclose(original.probability, again.probability)
