"""The maven-crm win features of benchmarks/real_data_win.py are point in time.

A deal's agent and account record may read only deals closed strictly before its engage date, and
none of its own outcome columns (stage, outcome, close date, close value) may reach its features.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecast.data.tables import CrmTables

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "real_data_win.py"
HISTORY = [
    "agent_prior_won",
    "agent_prior_lost",
    "agent_prior_win_rate",
    "agent_product_prior_closed",
    "agent_product_prior_win_rate",
    "account_prior_won",
    "account_prior_lost",
    "account_prior_win_rate",
]


@functools.cache
def _benchmark():
    spec = importlib.util.spec_from_file_location("real_data_win", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@functools.cache
def _loaded(folder: Path) -> tuple[CrmTables, pd.DataFrame]:
    return _benchmark().load_maven(folder)


@pytest.fixture
def maven(shared_data: Path) -> tuple[CrmTables, pd.DataFrame]:
    return _loaded(shared_data / "maven-crm")


def _features(tables: CrmTables, extra: pd.DataFrame) -> pd.DataFrame:
    return _benchmark().maven_features(tables, extra).set_index("deal_id")


def _with_deals(tables: CrmTables, deals: pd.DataFrame) -> CrmTables:
    return replace(tables, deals=deals)


def _feature_columns() -> list[str]:
    return [f.name for f in _benchmark().MAVEN_FEATURES]


def test_no_outcome_column_is_a_feature() -> None:
    names = set(_feature_columns())
    assert not names & set(_benchmark().OUTCOME_COLUMNS)
    assert not names & {"won", "closed_at", "engaged_at", "deal_id"}


def test_history_ignores_deals_closed_on_or_after_the_engage_date(maven) -> None:
    tables, extra = maven
    before = _features(tables, extra)
    deals = tables.deals
    # a deal engaged mid-period whose agent and account both have earlier closes
    closed = before[before["won"].notna()]
    target = closed[
        (closed["engaged_at"] > pd.Timestamp("2017-06-01"))
        & (closed["agent_prior_won"] > 0)
        & (closed["account_prior_won"] > 0)
    ].index[0]
    engaged = before.loc[target, "engaged_at"]

    # rewrite every deal closed on or after that day: flip its outcome, move its close later
    later = (deals["closed_at"] >= engaged) & deals["outcome"].isin(["won", "lost"])
    assert later.sum() > 1000
    changed = deals.copy()
    flipped = changed.loc[later, "outcome"].map({"won": "lost", "lost": "won"})
    changed.loc[later, "outcome"] = flipped
    changed.loc[later, "stage"] = flipped.map({"won": "closed_won", "lost": "closed_lost"})
    changed.loc[later, "closed_at"] = changed.loc[later, "closed_at"] + pd.Timedelta(days=3)
    after = _features(_with_deals(tables, changed), extra)

    pd.testing.assert_series_equal(before.loc[target, HISTORY], after.loc[target, HISTORY])
    # every deal engaged up to that day keeps its record; the change is visible later on
    earlier = before.index[before["engaged_at"] <= engaged]
    pd.testing.assert_frame_equal(before.loc[earlier, HISTORY], after.loc[earlier, HISTORY])
    assert not before[HISTORY].equals(after[HISTORY])

    # and an earlier close does count: one of the agent's moved to the day before adds one
    agent = deals.set_index("deal_id").loc[target, "rep_id"]
    pending = changed.index[(changed["rep_id"] == agent) & later]
    moved = changed.copy()
    moved.loc[pending[:1], "closed_at"] = engaged - pd.Timedelta(days=1)
    record = _features(_with_deals(tables, moved), extra).loc[target]
    count = ["agent_prior_won", "agent_prior_lost"]
    assert record[count].sum() == before.loc[target, count].sum() + 1


def test_a_deals_own_outcome_does_not_reach_its_features(maven) -> None:
    tables, extra = maven
    before = _features(tables, extra)
    deals = tables.deals
    rows = deals.index[deals["outcome"].isin(["won", "lost"])]
    changed = deals.copy()
    flipped = changed.loc[rows, "outcome"].map({"won": "lost", "lost": "won"})
    changed.loc[rows, "outcome"] = flipped
    changed.loc[rows, "stage"] = flipped.map({"won": "closed_won", "lost": "closed_lost"})
    changed.loc[rows, "amount"] = 1.0
    after = _features(_with_deals(tables, changed), extra)
    # flipping every outcome mirrors every win/loss count; non-history features are untouched
    fixed = [c for c in _feature_columns() if c not in HISTORY]
    pd.testing.assert_frame_equal(before[fixed], after[fixed])
    np.testing.assert_array_equal(before["agent_prior_won"], after["agent_prior_lost"])
    np.testing.assert_array_equal(before["account_prior_won"], after["account_prior_lost"])
    # the deal's own close row: move it far later, its features do not move
    target = before.index[before["won"].notna()][100]
    own = deals.index[deals["deal_id"] == target]
    moved = deals.copy()
    moved.loc[own, "closed_at"] = tables.as_of
    moved.loc[own, "amount"] = 0.0
    moved_features = _features(_with_deals(tables, moved), extra)
    pd.testing.assert_series_equal(
        before.loc[target, _feature_columns()], moved_features.loc[target, _feature_columns()]
    )
