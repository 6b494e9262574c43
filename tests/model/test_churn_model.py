"""Behaviour of the churn model: directions, invariances, odd inputs; revenue at risk.

The model is fitted once per module on a small generated world, without MLflow.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecast.data.world import make_crm
from forecast.explain.account_scoring import score_accounts
from forecast.explain.scorers import scorer_for
from forecast.features.accounts import ACCOUNT_FEATURE_NAMES, ACCOUNT_FEATURES
from forecast.model import TreeParams, monotone_violations
from forecast.revenue.churn import renewal_probability_from, revenue_at_risk, revenue_at_risk_by
from forecast.training.choice import fit_and_choose
from forecast.training.churn import churn_probability
from forecast.training.churn_task import TASK, ChurnHooks, ChurnParams, prepare, resolve

PARAMS = ChurnParams(
    tree=TreeParams(n_estimators=150, learning_rate=0.05, min_child_samples=50, n_jobs=1)
)


@pytest.fixture(scope="module")
def fitted():
    world = make_crm(8000, seed=3)
    params = resolve(PARAMS, world.tables)
    data = prepare(world.tables, params, ChurnHooks())
    return world, data, fit_and_choose(TASK, data.slices, data.features, params)


@pytest.fixture(scope="module")
def rows(fitted) -> pd.DataFrame:
    return fitted[1].slices.test


@pytest.fixture(scope="module", params=["calibrated", "lightgbm", "logistic"])
def model(request, fitted):
    chosen = fitted[2]
    if request.param == "calibrated":
        return chosen.calibration.model
    return chosen.candidates[request.param]


@pytest.fixture(scope="module")
def promotable(fitted) -> dict:
    """The models that can be served: the calibrated choice and every eligible candidate."""
    chosen = fitted[2]
    eligible = chosen.selection.index[chosen.selection["not eligible"] == ""]
    return {"calibrated": chosen.calibration.model} | {n: chosen.candidates[n] for n in eligible}


def test_a_candidate_against_a_declared_direction_is_never_chosen(fitted, promotable):
    chosen = fitted[2]
    assert "lightgbm" in promotable  # LightGBM holds the declared directions by construction
    against = chosen.selection.index[chosen.selection["not eligible"] != ""]
    assert chosen.chosen not in against
    for name in against:
        assert monotone_violations(chosen.candidates[name], ACCOUNT_FEATURES)


def test_less_usage_never_lowers_the_risk_of_a_servable_model(promotable, rows):
    lower = rows.assign(usage_last=(rows["usage_last"] - 0.2).clip(lower=0.0))
    for name, model in promotable.items():
        before, after = churn_probability(model, rows), churn_probability(model, lower)
        assert after.mean() > before.mean(), name
        assert (after < before - 1e-9).mean() <= 0.10, name


def test_more_tickets_never_lower_the_risk_of_a_servable_model(promotable, rows):
    busier = rows.assign(tickets_30d=rows["tickets_30d"] + 2, tickets_90d=rows["tickets_90d"] + 3)
    for name, model in promotable.items():
        before, after = churn_probability(model, rows), churn_probability(model, busier)
        assert after.mean() >= before.mean(), name
        assert (after < before - 1e-9).mean() <= 0.10, name


def test_account_id_and_extra_columns_do_not_change_the_score(model, rows):
    renamed = rows.assign(account_id=[f"other-{i}" for i in range(len(rows))], churned=-1)
    shuffled_columns = renamed[list(reversed(renamed.columns))]
    np.testing.assert_array_equal(
        churn_probability(model, rows), churn_probability(model, shuffled_columns)
    )


def test_unseen_categories_and_missing_values_still_score(model, rows):
    odd = rows.head(20).copy()
    odd["industry"] = "never-seen-industry"
    odd["region"] = None
    odd.loc[odd.index[:10], [n for n in ACCOUNT_FEATURE_NAMES if n not in ("segment",)]] = np.nan
    p = churn_probability(model, odd)
    assert np.isfinite(p).all() and ((p > 0) & (p < 1)).all()


def test_revenue_at_risk_is_probability_times_arr_and_rolls_up(fitted):
    world, _, chosen = fitted
    as_of = pd.Timestamp("2026-10-15")
    at_risk = revenue_at_risk(world.tables, chosen.calibration.model, as_of=as_of)
    assert len(at_risk) > 100 and at_risk["account_id"].is_unique
    np.testing.assert_allclose(at_risk["arr"], 12 * at_risk["mrr"])
    np.testing.assert_allclose(
        at_risk["revenue_at_risk"], at_risk["churn_probability"] * at_risk["arr"]
    )
    owners = world.tables.accounts.set_index("account_id")["owner_rep_id"]
    assert (at_risk["owner_rep_id"].to_numpy() == owners[at_risk["account_id"]].to_numpy()).all()
    total = at_risk["revenue_at_risk"].sum()
    for level in ("rep", "team", "region"):
        rolled = revenue_at_risk_by(at_risk, level)
        assert rolled["revenue_at_risk"].sum() == pytest.approx(total)
        assert rolled["accounts"].sum() == len(at_risk)
    with pytest.raises(ValueError, match="level must be one of"):
        revenue_at_risk_by(at_risk, "planet")


def test_renewal_probability_seam_gives_one_probability_per_decision(fitted):
    world, _, chosen = fitted
    model = chosen.calibration.model
    as_of = pd.Timestamp("2026-10-15")
    at_risk = revenue_at_risk(world.tables, model, as_of=as_of).head(200)
    steps = pd.DataFrame(
        {
            "account_id": at_risk["account_id"],
            "segment": at_risk["segment"],
            "month": pd.Timestamp("2026-11-01"),
            "as_of": as_of,
        }
    )
    p = renewal_probability_from(model, world.tables)(steps)
    assert p.shape == (len(steps),) and ((p >= 0) & (p <= 1)).all()
    risky = at_risk["churn_probability"].to_numpy() > 0.3
    if risky.any():
        assert p[risky].mean() < p[~risky].mean()
    assert renewal_probability_from(model, world.tables)(steps.head(0)).shape == (0,)


def test_account_scores_match_the_model_and_their_actions_lower_the_risk(fitted):
    world, _, chosen = fitted
    model = chosen.calibration.model
    tables = world.tables
    scores = score_accounts(tables, scorer_for(model, ACCOUNT_FEATURES))
    at_risk = revenue_at_risk(tables, model, as_of=tables.as_of)
    assert [s.account_id for s in scores] == list(at_risk["account_id"])
    np.testing.assert_allclose(
        [s.churn_probability for s in scores], at_risk["churn_probability"], atol=1e-6
    )
    np.testing.assert_allclose(
        [s.revenue_at_risk for s in scores], at_risk["revenue_at_risk"], rtol=1e-6, atol=1e-3
    )
    advised = [r for s in scores for r in s.explanation.recommendations]
    assert advised, "no retention action was recommended for any account"
    assert all(r.probability_after < r.probability_before for r in advised)
    assert all(s.explanation.reasons for s in scores)


def test_scoring_an_account_that_is_not_billed_is_refused(fitted):
    tables = fitted[0].tables
    with pytest.raises(KeyError, match="A-nope"):
        score_accounts(
            tables,
            scorer_for(fitted[2].calibration.model, ACCOUNT_FEATURES),
            account_ids=["A-nope"],
        )
