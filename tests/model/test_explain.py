"""Explanations: exact SHAP values, reasons in words, and advice that only touches what people can
change, checked on a model trained on a generated world."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shap

from forecast.explain.catalogue import load_catalogue
from forecast.explain.reasons import explain, global_importance
from forecast.explain.scorers import ScorerMismatchError, check_scorer, check_signature, scorer_for
from forecast.features.deal_schema import DEAL_FEATURES
from forecast.model import model_input


def test_fast_scorer_equals_the_pipeline(trained):
    rows = trained["test"].head(500)
    fast = trained["scorer"].probability(trained["scorer"].coded(rows))
    slow = trained["model"].predict_proba(model_input(rows))[:, 1]
    np.testing.assert_allclose(fast, slow, atol=1e-12)


def test_the_serving_check_passes_the_fast_scorer_and_refuses_one_altered(trained):
    rows = trained["test"].head(64)
    scorer = scorer_for(trained["model"], DEAL_FEATURES)
    assert check_scorer(scorer, trained["model"], rows, what="test rows") <= 1e-9
    calibrate = scorer.calibrate
    scorer.calibrate = lambda raw: calibrate(raw + 1e-6)  # one coefficient off by a millionth
    with pytest.raises(ScorerMismatchError, match=r"differs .* on test rows"):
        check_scorer(scorer, trained["model"], rows, what="test rows")


def test_the_serving_check_reads_the_logged_signature_against_the_served_features():
    names = [f.name for f in DEAL_FEATURES]
    check_signature(names, DEAL_FEATURES)
    with pytest.raises(ValueError, match="no signature"):
        check_signature(None, DEAL_FEATURES)
    with pytest.raises(ValueError, match=r"expects \['mrr'\]"):
        check_signature([*names[:-1], "mrr"], DEAL_FEATURES)
    with pytest.raises(ValueError, match="in another order"):
        check_signature(names[::-1], DEAL_FEATURES)


def test_shap_values_equal_shap_tree_explainer_and_add_up(trained):
    scorer, rows = trained["scorer"], trained["test"].head(300)
    coded = scorer.coded(rows)
    ours = scorer.contributions(coded)
    theirs = shap.TreeExplainer(scorer.booster).shap_values(coded)
    theirs = theirs[1] if isinstance(theirs, list) else theirs
    np.testing.assert_allclose(ours[:, :-1], theirs, atol=1e-6)
    raw = scorer.booster.predict(coded, raw_score=True)
    np.testing.assert_allclose(ours.sum(axis=1), raw, atol=1e-6)


def test_explanations_report_the_calibrated_probability_and_reason_codes(trained):
    rows = trained["test"].head(50)
    explained = explain(trained["scorer"], rows, typical=trained["typical"])
    probabilities = trained["model"].predict_proba(model_input(rows))[:, 1]
    groups = {e.group for e in load_catalogue().deal.values()}
    for e, p in zip(explained, probabilities, strict=True):
        assert e.probability == pytest.approx(p, abs=1e-12)
        assert set(e.reason_codes) <= groups
        assert 0 < len(e.reasons) <= 6
        for r in e.reasons:
            assert r.text and r.code in groups
            assert (r.effect > 0) == (r.direction == "raises")


def test_reason_codes_add_up_to_the_score_above_the_base(trained):
    scorer, rows = trained["scorer"], trained["test"].head(40)
    base = scorer.contributions(scorer.coded(rows))[:, -1]
    for e, b in zip(explain(scorer, rows), base, strict=True):
        assert sum(e.reason_codes.values()) == pytest.approx(e.raw_score - b, abs=1e-4)


def test_no_recommendation_touches_a_feature_nobody_can_change(trained):
    entries = load_catalogue().deal
    for e in explain(trained["scorer"], trained["test"].head(400), typical=trained["typical"]):
        for rec in e.recommendations:
            assert all(entries[f].actionable for f in rec.features), rec.action
            assert rec.lift_points > 0
            assert rec.probability_after > rec.probability_before


def test_recommendations_never_contradict_the_reasons(trained):
    """Advice moves each feature only the way the catalogue says helps, and the model agrees."""
    catalogue = load_catalogue()
    rows = trained["test"].head(400).reset_index(drop=True)
    explained = explain(trained["scorer"], rows, typical=trained["typical"])
    for i, e in enumerate(explained):
        for rec in e.recommendations:
            action = catalogue.actions["deal"][rec.action]
            for feature, change in action.changes.items():
                before = float(rows.at[i, feature])
                after = float(change.apply(np.array([before]))[0])
                if catalogue.deal[feature].helps == "up":
                    assert after >= before, (rec.action, feature)
                else:
                    assert after <= before, (rec.action, feature)
            assert rec.probability_after > rec.probability_before


def test_a_stale_deal_is_told_to_re_engage_with_a_positive_lift(trained):
    rows = trained["test"]
    active = rows[(rows["stage"] == "proposal") & (rows["days_since_last_activity"] < 3)].head(30)
    stale = active.copy()
    stale["days_since_last_activity"] = 35.0
    stale["activities_7d"] = 0.0
    stale["activities_30d"] = 0.0
    explained = explain(trained["scorer"], stale, typical=trained["typical"])
    # any touch re-engages: a call, a meeting, a demo... each resets the days since the last one
    advised = [
        next((r for r in e.recommendations if "days_since_last_activity" in r.features), None)
        for e in explained
    ]
    share = np.mean([a is not None for a in advised])
    assert share >= 0.8, f"re-engaging advised for only {share:.0%} of stale deals"
    lifts = [a.lift_points for a in advised if a is not None]
    assert np.mean(lifts) > 1.0
    fresh = explain(trained["scorer"], active, typical=trained["typical"])
    assert np.mean([e.probability for e in explained]) < np.mean([e.probability for e in fresh])
    texts = [
        r.text for e in explained for r in e.reasons if r.feature == "days_since_last_activity"
    ]
    assert any(t.startswith("No touch in 35 days") for t in texts)


def test_global_importance_ranks_every_feature(trained):
    importance = global_importance(trained["scorer"], trained["test"].head(500))
    assert set(importance.index) == {f.name for f in DEAL_FEATURES}
    assert importance.iloc[0] > 0
    assert (importance.diff().dropna() <= 0).all()


def test_unseen_categories_and_missing_values_are_explained(trained):
    rows = trained["test"].head(3).copy()
    rows.loc[0, "industry"] = "Space Mining"
    rows.loc[1, "days_to_expected_close"] = np.nan
    rows.loc[2, "segment"] = None
    explained = explain(trained["scorer"], rows, typical=trained["typical"])
    assert all(0 < e.probability < 1 for e in explained)
    assert pd.notna([e.raw_score for e in explained]).all()


@pytest.fixture(scope="module")
def linear(trained):
    from forecast.model import make_logistic

    test = trained["test"]
    world_frame = test  # a few weeks of labelled snapshots is enough to fit a linear model
    model = make_logistic().fit(model_input(world_frame), world_frame["won"].to_numpy())
    return model, scorer_for(model, DEAL_FEATURES)


def test_linear_attributions_add_up_and_match_the_model(linear, trained):
    model, scorer = linear
    rows = trained["test"].head(200)
    coded = scorer.coded(rows)
    contributions = scorer.contributions(coded)
    np.testing.assert_allclose(
        contributions.sum(axis=1), model.decision_function(model_input(rows)), atol=1e-9
    )
    np.testing.assert_allclose(
        scorer.probability(coded), model.predict_proba(model_input(rows))[:, 1], atol=1e-12
    )
    explained = explain(scorer, rows.head(20), typical=trained["typical"])
    entries = load_catalogue().deal
    for e in explained:
        assert e.reasons
        for rec in e.recommendations:
            assert all(entries[f].actionable for f in rec.features)
            assert rec.probability_after > rec.probability_before


def test_small_batches_are_coded_as_large_ones(trained):
    """The value-by-value path for a few rows against the vectorised one (the oracle)."""
    scorer = trained["scorer"]
    rows = _odd_rows(trained["test"], scorer)
    large = pd.concat([rows] * 2, ignore_index=True)  # over SMALL_BATCH: the vectorised path
    assert len(large) > 16 >= len(rows)
    np.testing.assert_array_equal(scorer.coded(rows), scorer.coded(large)[: len(rows)])


def test_the_linear_scorers_numpy_transform_is_the_pipelines(linear, trained):
    """Odd values, a few rows (value by value) and many (vectorised), against sklearn."""
    model, scorer = linear
    rows = _odd_rows(trained["test"], scorer)
    for batch in (rows, pd.concat([rows, trained["test"].head(100)], ignore_index=True)):
        expected = model.decision_function(model_input(batch))
        np.testing.assert_allclose(
            scorer.contributions(scorer.coded(batch)).sum(axis=1), expected, atol=1e-9
        )


def _odd_rows(test: pd.DataFrame, scorer) -> pd.DataFrame:
    """12 rows with unseen and missing categories, numbers as text, missing and odd values."""
    rows = test.head(12).reset_index(drop=True).astype(object)
    categories = scorer.coder_values.categories
    categorical = [n for n in scorer.names if n in categories]
    numeric = [n for n in scorer.names if n not in categories]
    rows.loc[0, categorical[0]] = "a category never seen"
    rows.loc[1, categorical[0]] = None
    rows.loc[2, numeric[0]] = None
    rows.loc[3, numeric[0]] = "12.5"
    rows.loc[4, numeric[0]] = "not a number"
    rows.loc[5, numeric[0]] = np.nan
    rows.loc[6, numeric[0]] = True
    rows.loc[7, categorical[-1]] = 3
    return rows


@pytest.fixture(scope="module")
def whole_book(trained):
    """Every snapshot of the test window (about 3,000 open deals at their weekly as-ofs)."""
    rows = trained["test"]
    return rows, explain(trained["scorer"], rows, typical=trained["typical"])


def test_no_reason_is_drawn_from_a_missing_value(trained):
    """Deals without an account, a product or a recorded touch (as imports often are)."""
    rows = trained["test"].copy()
    blank = np.random.default_rng(0).random(len(rows)) < 0.3
    unknown = ["account_prior_wins", "account_prior_losses", "account_tenure_days", "industry",
               "segment", "days_since_last_activity", "amount_vs_typical"]  # fmt: skip
    rows.loc[blank, unknown] = None
    explained = explain(trained["scorer"], rows, typical=trained["typical"])
    stated = [(r, b) for e, b in zip(explained, blank, strict=True) for r in e.reasons]
    assert len(rows) > 2000 and len(stated) > 5 * len(rows)
    assert [(r.feature, r.text) for r, _ in stated if r.value is None] == []
    assert not any(r.feature in unknown for r, b in stated if b)
    assert not any(r.text.endswith(": unknown") for r, _ in stated)


def test_no_action_is_advised_that_the_deal_already_does(trained, whole_book):
    rows, explained = whole_book
    catalogue = load_catalogue()
    entries, actions = catalogue.deal, catalogue.actions["deal"]
    typical = trained["typical"]
    advised = violations = 0
    for (_, row), e in zip(rows.iterrows(), explained, strict=True):
        for rec in e.recommendations:
            advised += 1
            feature = actions[rec.action].evidence
            stage = row["stage"] if row["stage"] in typical.index else "*"
            yardstick, value = typical.loc[stage, feature], row[feature]
            helps = entries[feature].helps
            if pd.notna(yardstick) and pd.notna(value):
                done = value >= yardstick if helps == "up" else value <= yardstick
                violations += bool(done)
    assert advised > 1000
    assert violations == 0


def test_the_same_advice_lifts_different_deals_differently(whole_book):
    _, explained = whole_book
    lifts: dict[str, set[float]] = {}
    for e in explained:
        for rec in e.recommendations:
            lifts.setdefault(rec.action, set()).add(rec.lift_points)
    assert lifts and all(len(values) > 10 for values in lifts.values()), {
        k: len(v) for k, v in lifts.items()
    }


def test_categorical_reasons_name_products_as_people_know_them(trained):
    """Reasons say the product's name; the machine-readable `value` keeps the id."""
    from forecast.explain.catalogue import display_names

    tables = trained["world"].tables
    names = display_names(tables)["product_id"]
    rows = trained["test"]
    explained = explain(trained["scorer"], rows, typical=trained["typical"], display={
        "product_id": names})  # fmt: skip
    product_reasons = [r for e in explained for r in e.reasons if r.feature == "product_id"]
    assert len(product_reasons) > 50
    for reason in product_reasons:
        assert reason.value in names and names[reason.value] in reason.text
        assert reason.value not in reason.text
