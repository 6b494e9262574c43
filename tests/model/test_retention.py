"""Retention actions from the churn drivers: only what an account owner can do, and it helps."""

from __future__ import annotations

import pandas as pd
import pytest

from forecast.data.world import make_crm
from forecast.explain.catalogue import load_catalogue
from forecast.explain.reasons import explain, typical_of_retained
from forecast.explain.scorers import scorer_for
from forecast.features.accounts import ACCOUNT_FEATURES, churn_snapshot_dates, churn_training_frame
from forecast.model import TreeParams, calibrate, make_lightgbm, model_input


@pytest.fixture(scope="module")
def churn_model():
    world = make_crm(8000, seed=3)
    frame = churn_training_frame(world.tables, churn_snapshot_dates("2023-06-01", "2026-11-15"))
    train = frame[frame["as_of"] < "2025-11-01"]
    later = frame[(frame["as_of"] >= "2025-11-01") & (frame["as_of"] < "2026-03-01")]
    test = frame[frame["as_of"] >= "2026-03-01"].reset_index(drop=True)
    x = model_input(train, ACCOUNT_FEATURES)
    trees = make_lightgbm(ACCOUNT_FEATURES, params=TreeParams(n_estimators=80, n_jobs=1))
    trees.fit(x, train["churned"].to_numpy())
    model = calibrate(
        trees,
        model_input(later, ACCOUNT_FEATURES),
        later["churned"].to_numpy(),
        later["account_id"].to_numpy(),
    ).model
    return scorer_for(model, ACCOUNT_FEATURES), test, typical_of_retained(train, ACCOUNT_FEATURES)


def test_retention_actions_lower_the_risk_and_touch_only_actionable_features(churn_model):
    scorer, test, _ = churn_model
    entries = load_catalogue().account
    risky = test.sort_values("days_since_rep_touch", ascending=False).head(200)
    explained = explain(scorer, risky, model="account", amount=12 * risky["mrr"].to_numpy())
    advised = [r for e in explained for r in e.recommendations]
    assert advised, "no retention action for the accounts that are most out of touch"
    for rec in advised:
        assert all(entries[f].actionable for f in rec.features)
        assert rec.probability_after < rec.probability_before  # risk goes down
        assert rec.lift_points > 0 and rec.expected_revenue_change > 0
    for e in explained:
        assert {r.code for r in e.reasons} <= {entry.group for entry in entries.values()}


def test_no_retention_action_is_advised_that_the_account_already_does(churn_model):
    """Over every account snapshot of the test window: an account whose rep was in touch as
    recently as renewed accounts' is not told to check in, and so on for every action."""
    scorer, test, typical = churn_model
    catalogue = load_catalogue()
    entries, actions = catalogue.account, catalogue.actions["account"]
    amount = 12 * test["mrr"].to_numpy()
    explained = explain(scorer, test, model="account", amount=amount, typical=typical)
    advised = violations = 0
    lifts: dict[str, set[float]] = {}
    for (_, row), e in zip(test.iterrows(), explained, strict=True):
        for rec in e.recommendations:
            advised += 1
            lifts.setdefault(rec.action, set()).add(rec.lift_points)
            feature = actions[rec.action].evidence
            yardstick, value = typical.loc["*", feature], row[feature]
            helps = entries[feature].helps
            done = value >= yardstick if helps == "up" else value <= yardstick
            violations += bool(pd.notna(value) and done)
            assert "accounts that stayed" in rec.evidence
    assert len(test) > 2000 and advised > 500
    assert violations == 0
    assert all(len(values) > 10 for values in lifts.values()), {k: len(v) for k, v in lifts.items()}
