"""Every model input has a catalogue entry; actions only touch what a person can change."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecast.explain.actions import ActionPlan
from forecast.explain.catalogue import Change, load_catalogue
from forecast.features.accounts import ACCOUNT_FEATURE_NAMES
from forecast.features.deal_schema import FEATURE_NAMES
from forecast.features.orders import INACTIVITY_FEATURE_NAMES

# the account section speaks for both churn definitions: subscription and inactivity
MODELS = {"deal": FEATURE_NAMES, "account": ACCOUNT_FEATURE_NAMES + INACTIVITY_FEATURE_NAMES}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_feature_has_an_entry_and_no_entry_is_stale(model):
    entries = load_catalogue().features(model)
    assert set(MODELS[model]) - set(entries) == set(), "features without a catalogue entry"
    assert set(entries) - set(MODELS[model]) == set(), "catalogue entries for no feature"


@pytest.mark.parametrize("model", sorted(MODELS))
def test_actions_change_only_actionable_features(model):
    catalogue = load_catalogue()
    entries = catalogue.features(model)
    for name, action in catalogue.actions[model].items():
        for feature in action.changes:
            assert entries[feature].actionable, f"{name} changes {feature}, which is not actionable"
        assert action.evidence in action.changes, name


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_actionable_feature_is_moved_by_some_action(model):
    catalogue = load_catalogue()
    moved = {f for action in catalogue.actions[model].values() for f in action.changes}
    actionable = {name for name, entry in catalogue.features(model).items() if entry.actionable}
    assert actionable == moved


def test_change_sets_adds_and_clips():
    assert list(Change(set=0).apply([3, 9])) == [0, 0]
    assert list(Change(add=-7, floor=0).apply([3, 9])) == [0, 2]
    assert list(Change(add=0.1, ceiling=1).apply([0.95, 0.5])) == [1.0, 0.6]
    assert list(Change(floor=14).apply([3, 30])) == [14, 30]


def test_action_apply_returns_a_changed_copy():
    action = load_catalogue().actions["deal"]["re_engage"]
    frame = pd.DataFrame(
        {
            "days_since_last_activity": [12.0],
            "activities_7d": [0.0],
            "activities_30d": [1.0],
            "activities_90d": [2.0],
            "calls_90d": [0.0],
        }
    )
    after = action.apply(frame)
    assert after.loc[0, "days_since_last_activity"] == 0
    assert after.loc[0, "calls_90d"] == 1
    assert frame.loc[0, "days_since_last_activity"] == 12.0


@pytest.mark.parametrize("model", sorted(MODELS))
def test_the_explainer_applies_every_action_as_change_apply_does(model):
    # the explainer applies all actions at once from arrays (`ActionPlan`); it must give what
    # each action's own `Change.apply` gives, on values around every bound and missing ones
    catalogue = load_catalogue()
    names = list(MODELS[model])
    position = {name: j for j, name in enumerate(names)}
    actions = list(catalogue.actions[model].values())
    rng = np.random.default_rng(0)
    coded = rng.choice([np.nan, -5.0, 0.0, 0.5, 1.0, 3.0, 14.0, 200.0], size=(6, len(names)))
    plan = ActionPlan.of(actions, position)
    applied, moved = plan.applied(coded)
    applied = applied.reshape(len(actions), len(coded), len(names))
    for a, action in enumerate(actions):
        expected = coded.copy()
        for feature, change in action.changes.items():
            expected[:, position[feature]] = change.apply(expected[:, position[feature]])
        np.testing.assert_array_equal(applied[a], expected)
        # `moved` says which rows the action changed at all (those are re-scored)
        same = (expected == coded) | (np.isnan(expected) & np.isnan(coded))
        np.testing.assert_array_equal(moved[a], ~same.all(axis=1))
    assert np.isnan(applied).sum() <= len(actions) * np.isnan(coded).sum()


def test_a_model_that_reads_none_of_what_the_actions_act_on_says_why_once():
    """A deals-only export (no activities, next steps, stage history or expected close dates)
    trains a model no action applies to: said once, in words, instead of an empty list per deal."""
    from forecast.data.derive import deals_only
    from forecast.data.world import make_crm
    from forecast.explain.wording import why_no_actions
    from forecast.features.deal_schema import unavailable_features

    catalogue = load_catalogue()
    world = make_crm(600, seed=3).tables
    read = [n for n in FEATURE_NAMES if n not in unavailable_features(world)]
    assert why_no_actions(read, catalogue, "deal") is None
    export = deals_only(world)
    read = [n for n in FEATURE_NAMES if n not in unavailable_features(export)]
    why = why_no_actions(read, catalogue, "deal")
    assert why is not None and why.startswith("No action is recommended to any deal: ")
    for label in ("days since the last touch", "a next step is recorded",
                  "days in the current stage", "days to the expected close date"):  # fmt: skip
        assert label in why
    assert "forecast data doctor" in why


def test_one_of_a_unit_is_said_in_the_singular():
    from forecast.explain.wording import vocabulary_for

    catalogue = load_catalogue()
    names = ["purchases", "products_365d", "days_since_last_purchase"]
    words = {w.name: w for w in vocabulary_for(names, catalogue, "account").words}
    assert words["purchases"].show(1) == "1 purchase"
    assert words["purchases"].show(2) == "2 purchases"
    assert words["products_365d"].show(1.0) == "1 product"
    assert words["days_since_last_purchase"].show(1) == "1 day"
