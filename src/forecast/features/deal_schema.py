"""The deal features: each named and typed, with its monotone direction and what it reads; which
of them an export cannot support, and its own attribute columns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from forecast.data import derive
from forecast.data.contract import OPEN_STAGES
from forecast.data.tables import CrmTables

ACTIVITY_WINDOWS = (7, 30, 90)

COUNTED_KINDS = ("call", "email", "meeting", "demo", "proposal")

TRAILING_DAYS = 365

# win rates (rep, rep from a stage, product in an industry) look back two years: with about 130
# deals a rep a year, one year of closes leaves a rep's rate too noisy to tell skill from luck
RECORD_DAYS = 730

SHRINK_DEALS = 20  # a rep's win rate counts as this many deals of the team's rate

STAGE_PROGRESS = {
    **{stage: i for i, stage in enumerate(OPEN_STAGES)},
    "closed_won": len(OPEN_STAGES),
    "closed_lost": -1,
}

DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class Feature:
    """One model input: its name, whether it is categorical, and a direction true by design."""

    name: str
    kind: Literal["numeric", "categorical"] = "numeric"
    monotone: int = 0  # +1: more never lowers the model's probability; -1: never raises it


DEAL_FEATURES: tuple[Feature, ...] = (
    Feature("stage", "categorical"),
    Feature("days_in_stage"),
    Feature("deal_age_days"),
    Feature("amount"),
    Feature("amount_change_ratio"),
    Feature("amount_changes"),
    Feature("amount_vs_typical"),
    Feature("close_pushes", monotone=-1),
    Feature("days_to_expected_close"),
    Feature("expected_close_in_quarter"),
    Feature("has_next_step"),
    *(Feature(f"activities_{w}d") for w in ACTIVITY_WINDOWS),
    *(Feature(f"{kind}s_90d") for kind in COUNTED_KINDS),
    Feature("days_since_last_activity"),
    Feature("activities_per_week"),
    Feature("account_prior_wins"),
    Feature("account_prior_losses"),
    Feature("account_tenure_days"),
    Feature("account_revenue_365d"),
    Feature("rep_win_rate", monotone=+1),
    Feature("rep_stage_win_rate", monotone=+1),
    Feature("fit_win_rate", monotone=+1),
    Feature("rep_closed_deals_365d"),
    Feature("rep_tenure_days"),
    Feature("product_id", "categorical"),
    Feature("product_family", "categorical"),
    Feature("industry", "categorical"),
    Feature("region", "categorical"),
    Feature("segment", "categorical"),
    Feature("days_into_quarter"),
    Feature("days_left_in_quarter"),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in DEAL_FEATURES)

ATTRIBUTE_PREFIX = "attr_"

"""Deal attributes known at creation (`deal_attributes`) become categorical features so named."""

CATEGORICAL: tuple[str, ...] = tuple(f.name for f in DEAL_FEATURES if f.kind == "categorical")

KEY_COLUMNS = ("deal_id", "as_of")

_ACTIVITY_FEATURES = (
    *(f"activities_{w}d" for w in ACTIVITY_WINDOWS),
    *(f"{kind}s_90d" for kind in COUNTED_KINDS),
    "days_since_last_activity",
    "activities_per_week",
)

_STAGE_HISTORY_FEATURES = (
    "stage",
    "days_in_stage",
    "amount_change_ratio",
    "amount_changes",
    "close_pushes",
    "has_next_step",
    "rep_stage_win_rate",
)

_REP_FEATURES = ("rep_win_rate", "rep_stage_win_rate", "rep_closed_deals_365d", "rep_tenure_days")

_ACCOUNT_TABLE_FEATURES = ("account_tenure_days", "industry", "region", "segment")

FROM_RECORD_OF: dict[str, tuple[str, ...]] = {
    "rep_id": _REP_FEATURES,
    "account_id": (
        "account_prior_wins", "account_prior_losses", "account_revenue_365d",
        *_ACCOUNT_TABLE_FEATURES, "fit_win_rate",
    ),
    "product_id": ("product_id", "product_family", "fit_win_rate"),
}  # fmt: skip
"""The deal features read from the stored record of the rep, account or product a deal names:
for an id the store has never seen they are priors or blanks, not evidence about the deal."""


def unavailable_features(
    tables: CrmTables, *, history_derived: bool | None = None, activities: int | None = None
) -> dict[str, str]:
    """The deal features the data cannot give, each with the reason, in DEAL_FEATURES order.
    `history_derived` and `activities` (rows) stand for the tables' deal_history and
    activities where these are not read into this process (a store in parts).

    They stay in the model's input, empty on every row, so that a model trained on a thin
    export and one trained on a full CRM take the same input; the trees and the logistic
    model learn nothing from a column that is always empty.
    """
    deals = tables.deals
    reasons: dict[str, str] = {}

    def off(names: Sequence[str], why: str) -> None:
        for name in names:
            reasons.setdefault(name, why)

    def blank(column: str) -> bool:
        return not deals[column].notna().any()

    if history_derived is None:
        history_derived = derive.history_is_derived(tables.deal_history)
    if activities is None:
        activities = len(tables.activities)
    if history_derived:
        off(_STAGE_HISTORY_FEATURES, "no stage history in the export (deal_history derived)")
    if blank("rep_id"):
        off(_REP_FEATURES, "no deal owner (deals.rep_id empty)")
    if not len(tables.reps):
        off(("rep_tenure_days",), "no reps table (hire dates unknown)")
    # one date for every row is an export's stand-in for a date it does not hold (the maven
    # adapter's hire dates): a tenure counted from it measures the calendar, not the rep
    if _one_date(tables.reps["hired_at"]):
        off(("rep_tenure_days",), "every rep has the same hire date (hire dates unknown)")
    if _one_date(tables.accounts["created_at"]):
        off(("account_tenure_days",), "every account was created the same day (dates unknown)")
    if blank("account_id"):
        off(
            ("account_prior_wins", "account_prior_losses", "account_revenue_365d"),
            "no account on any deal (deals.account_id empty)",
        )
        off(_ACCOUNT_TABLE_FEATURES, "no account on any deal (deals.account_id empty)")
    if not len(tables.accounts):
        off(_ACCOUNT_TABLE_FEATURES, "no accounts table")
    if not len(tables.revenue):
        off(("account_revenue_365d",), "no revenue table")
    if blank("product_id"):
        off(("product_id", "product_family", "fit_win_rate"), "no product on any deal")
    if not len(tables.products):
        off(("product_family",), "no products table")
    if not activities:
        off(_ACTIVITY_FEATURES, "no activities table")
    if blank("expected_close"):
        off(("days_to_expected_close", "expected_close_in_quarter"), "no expected close dates")
    if blank("amount"):
        off(("amount", "amount_vs_typical"), "no amounts")
    return {name: reasons[name] for name in FEATURE_NAMES if name in reasons}


def _one_date(dates: pd.Series) -> bool:
    """More than one row, all on the same date."""
    return len(dates) > 1 and dates.nunique(dropna=False) == 1


def attribute_features(tables: CrmTables) -> tuple[Feature, ...]:
    """A feature per deal attribute known at creation, e.g. `attr_lead_source`: numeric when
    every value it holds is a number (`attr_employees`), else categorical.

    Attributes filled at or after the close (`known_at: closed`) never become features.
    """
    names, text = attributes_known_at_creation(tables.deal_attributes)
    return attribute_kinds(names, text)


def attributes_known_at_creation(
    attributes: pd.DataFrame,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The names of the attributes known at creation (sorted), and those of them holding a
    value that is not a number."""
    created = attributes[attributes["known_at"] == "created"]
    value = created["value"].astype("string")
    given = value.notna() & (value.str.strip() != "")
    number = pd.to_numeric(value.where(given), errors="coerce").notna()
    text = created.loc[given & ~number, "name"]
    return tuple(sorted(set(created["name"]))), tuple(sorted(set(text)))


def attribute_kinds(names: Sequence[str], text: Sequence[str]) -> tuple[Feature, ...]:
    """The attributes' features: categorical when they hold text (`text`), else numeric."""
    return tuple(
        Feature(f"{ATTRIBUTE_PREFIX}{name}", "categorical" if name in text else "numeric")
        for name in names
    )


def model_features(model: object, known: Sequence[Feature]) -> tuple[Feature, ...]:
    """The features `model` was fitted on, in its order: the pipeline's own and its attributes.

    Raises:
        ValueError: the model was fitted on features this pipeline does not make (a model of
            another pipeline, say): it cannot be served here.
    """
    names = [str(n) for n in getattr(model, "feature_names_in_", [])]
    if not names:
        return tuple(known)
    by_name = {f.name: f for f in known}
    from forecast.model import fitted_categoricals  # the model module reads this one

    foreign = [n for n in names if n not in by_name and not n.startswith(ATTRIBUTE_PREFIX)]
    if foreign:
        raise ValueError(
            f"the model expects {len(foreign)} features this pipeline does not make "
            f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}): it was trained "
            "for another pipeline"
        )
    # an attribute is what the model was fitted on, numbers or categories
    categorical = fitted_categoricals(model)
    return tuple(
        by_name.get(n)
        or Feature(n, "categorical" if categorical is None or n in categorical else "numeric")
        for n in names
    )
