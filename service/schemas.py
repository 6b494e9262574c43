"""Request and response bodies, named by direction: `...In` is read, `...Out` is answered.

`DealIn` is built from `forecast.features.deals.DEAL_FEATURES`, so the service accepts exactly what
the model reads: every feature optional (a missing one is scored as missing), numbers as floats
(NaN and infinities scored as missing), categories as text (an unseen category is scored as
missing). An unknown field is refused with 422 naming it, so a typo never silently drops data.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pandas as pd
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from forecast.data.contract import ACTIVITY_KINDS, OPEN_STAGES, STAGES
from forecast.features.accounts import ACCOUNT_FEATURES
from forecast.features.deal_schema import DEAL_FEATURES, Feature
from forecast.settings import get_settings

if TYPE_CHECKING:
    from forecast.revenue import Scenario

MAX_BATCH = 1000
OPEN_STAGE_NAMES = tuple(OPEN_STAGES)
STAGE_NAMES = tuple(STAGES)

EXAMPLE_DEAL: dict[str, Any] = {
    "deal_id": "D-1042",
    "stage": "proposal",
    "amount": 48000.0,
    "days_in_stage": 12,
    "deal_age_days": 64,
    "days_since_last_activity": 3,
    "activities_30d": 9,
    "has_next_step": 1,
    "industry": "software",
    "region": "EMEA",
}


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# A moment in time; one without a zone (the CRM's as-of, a client's naive time) is taken as UTC,
# so every answer carries an RFC 3339 date-time.
Moment = Annotated[datetime, AfterValidator(_utc)]


EARLIEST, LATEST = date(1900, 1, 1), date(2200, 1, 1)


def _plausible(moment: datetime | date) -> datetime | date:
    day = moment.date() if isinstance(moment, datetime) else moment
    if not EARLIEST <= day < LATEST:
        raise ValueError(f"must fall between {EARLIEST} and {LATEST}")
    return moment


# What a caller sends: within two centuries (the store's time range; pandas' is 1677-2262)
RecordMoment = Annotated[datetime, AfterValidator(_utc), AfterValidator(_plausible)]
RecordDate = Annotated[date, AfterValidator(_plausible)]


def _text(key: str) -> str:
    """A deal id used as a JSON object key is text UTF-8 can carry (keys escape the checks that
    values get: a lone surrogate would reach the store's string columns)."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (a lone surrogate)") from None
    return key


DealKey = Annotated[str, AfterValidator(_text)]


def finite(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _feature_fields(features: tuple[Feature, ...] = DEAL_FEATURES) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for f in features:
        kind = str if f.kind == "categorical" else float
        fields[f.name] = (kind | None, Field(default=None))
    return fields


class _DealBase(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_DEAL]})

    deal_id: str | None = Field(
        default=None, max_length=200, description="Your id for the deal, echoed back and logged."
    )


if TYPE_CHECKING:  # made from the feature list at import: type checkers see its base
    DealIn = _DealBase
else:
    DealIn = create_model(
        "DealIn",
        __base__=_DealBase,
        __doc__="One deal's model features; every one optional, missing ones scored as missing.",
        **_feature_fields(),
    )


class DealFeaturesBatchIn(BaseModel):
    """1 to 1,000 deals given as the model's own features, scored as of one moment."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"deals": [EXAMPLE_DEAL]}]}
    )

    as_of: RecordMoment | None = Field(
        default=None, description="The moment the features describe (default: now, UTC)."
    )
    deals: list[DealIn] = Field(
        min_length=1, max_length=MAX_BATCH, description=f"1 to {MAX_BATCH} deals."
    )


EXAMPLE_RECORD: dict[str, Any] = {
    "deal_id": "D0027210",
    "rep_id": "R0031",
    "account_id": "A01234",
    "product_id": "P03",
    "stage": "proposal",
    "amount": 48000.0,
    "currency": "USD",
    "created_at": "2026-09-02T10:15:00Z",
    "expected_close": "2026-12-18",
    "next_step": "Pricing call with the CFO on Tuesday",
}
EXAMPLE_RECORD_FULL: dict[str, Any] = {
    **EXAMPLE_RECORD,
    "deal_id": "CRM-NEW-7",
    "history": [
        {"changed_at": "2026-09-02T10:15:00Z", "stage": "prospecting", "amount": 40000.0},
        {
            "changed_at": "2026-10-20T16:00:00Z",
            "stage": "proposal",
            "amount": 48000.0,
            "expected_close": "2026-12-18",
        },
    ],
    "activities": [
        {"kind": "meeting", "at": "2026-10-14T15:00:00Z"},
        {"kind": "demo", "at": "2026-10-28T09:30:00Z"},
    ],
}
StageName = Literal[OPEN_STAGES]  # type: ignore[valid-type]
CrmName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        title="As the CRM names it",
        description="The CRM's own name, as the store's import mapping translates it "
        "(its `values`): a name it does not translate is a 422 listing the allowed ones.",
    ),
]
Amount = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Id = Annotated[str, Field(min_length=1, max_length=200)]


class ChangeIn(BaseModel):
    """One recorded change of the deal, with its state after the change."""

    model_config = ConfigDict(extra="forbid")

    changed_at: RecordMoment = Field(description="When the change was recorded.")
    stage: StageName | CrmName = Field(
        description="Stage after the change: one of " + ", ".join(OPEN_STAGES) + ", or the "
        "CRM's own name for one as the import mapping translates it."
    )
    amount: Amount | None = Field(default=None, description="Amount after the change.")
    expected_close: RecordDate | None = Field(default=None, description="Expected close after it.")
    next_step: str | None = Field(default=None, max_length=2000, description="Next step then.")


class TouchIn(BaseModel):
    """One activity on the deal."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal[ACTIVITY_KINDS] | CrmName = Field(  # type: ignore[valid-type]
        description="Kind of touch: one of " + ", ".join(ACTIVITY_KINDS) + ", or the CRM's "
        "own name for one as the import mapping translates it."
    )
    at: RecordMoment = Field(description="When it happened.")


CRM_ID = "As the CRM names it: translated as the store's import mapping translates it."


# the record's optional fields: "" is sent for a blank one
BLANK_IS_MISSING = frozenset(
    {"rep_id", "account_id", "product_id", "amount", "currency", "expected_close", "next_step"}
)


class DealRecordIn(BaseModel):
    """One open deal as the CRM holds it. Ids the stored CRM knows bring their record (the
    rep's, account's and product's wins as of `as_of`); unknown ids are scored as new and
    named in the answer's `new_to_store`. A deal the store holds keeps its stored changes and
    activities unless `history` or `activities` are sent (they then replace the stored ones);
    the record's own stage, amount, expected close and next step are its state at `as_of`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_RECORD]})

    deal_id: Id = Field(description="The CRM's id of the deal: echoed, logged, and looked up.")
    stage: StageName | CrmName = Field(
        description="Current stage: one of the open stages, " + ", ".join(OPEN_STAGES) + ", or "
        "the CRM's own name for one as the store's import mapping translates it (a store "
        "imported with `values: {stage: {Engaging: qualification}}` takes `Engaging`)."
    )
    created_at: RecordMoment = Field(description="When the deal was opened (at or before `as_of`).")
    rep_id: Id | None = Field(
        default=None,
        description="The owner (rep) of the deal. " + CRM_ID,
    )
    account_id: Id | None = Field(
        default=None,
        description="The customer account. " + CRM_ID,
    )
    product_id: Id | None = Field(
        default=None,
        description="The main product. " + CRM_ID,
    )
    amount: Amount | None = Field(default=None, description="Current amount, 0 or more.")
    currency: str | None = Field(
        default=None,
        pattern=r"^[A-Z]{3}$",
        description="ISO 4217 code of `amount`; it must be the reporting currency "
        "(`FORECAST_CURRENCY`, USD by default): convert before scoring.",
    )
    expected_close: RecordDate | None = Field(
        default=None, description="Current expected close date (not before `created_at`)."
    )
    next_step: str | None = Field(
        default=None, max_length=2000, description="The next step the rep recorded, if any."
    )
    attributes: dict[Id, Annotated[str, Field(max_length=500)]] | None = Field(
        default=None,
        max_length=50,
        description="Attributes known at creation that the model reads (e.g. lead_source).",
    )
    history: list[ChangeIn] | None = Field(
        default=None, max_length=500, description="The deal's changes, oldest first."
    )
    activities: list[TouchIn] | None = Field(
        default=None, max_length=5000, description="The deal's activities."
    )

    @model_validator(mode="before")
    @classmethod
    def _blank_is_missing(cls, record: Any) -> Any:
        """A CRM sends an empty optional field as "": missing, as the import reads a blank."""
        if not isinstance(record, dict):
            return record
        return {
            name: None if name in BLANK_IS_MISSING and isinstance(v, str) and not v.strip() else v
            for name, v in record.items()
        }

    @field_validator("currency")
    @classmethod
    def _reporting_currency(cls, currency: str | None) -> str | None:
        expected = get_settings().currency
        if currency is not None and currency != expected:
            raise ValueError(
                f"amounts are scored in {expected} (FORECAST_CURRENCY); convert from {currency}"
            )
        return currency

    @field_validator("expected_close")
    @classmethod
    def _not_before_creation(cls, expected: date | None, info: Any) -> date | None:
        created = info.data.get("created_at")
        if expected is not None and created is not None and expected < created.date():
            raise ValueError(f"before created_at ({created.date()})")
        return expected


class DealBatchIn(BaseModel):
    """1 to 1,000 deal records, as the CRM holds them, scored as of one moment."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"deals": [EXAMPLE_RECORD]}]},
    )

    as_of: RecordMoment | None = Field(
        default=None, description="The moment to score at (default: now, UTC)."
    )
    deals: list[DealRecordIn] = Field(
        min_length=1, max_length=MAX_BATCH, description=f"1 to {MAX_BATCH} deal records."
    )


EXAMPLE_MODEL: JsonDict = {"name": "deal-win", "version": "3"}
EXAMPLE_REASON: JsonDict = {
    "code": "engagement",
    "feature": "days_since_last_activity",
    "direction": "lowers",
    "effect": -0.42,
    "value": 30.0,
    "typical": 4.0,
    "text": "No activity for 30 days (won deals at this stage: 4)",
}
EXAMPLE_RECOMMENDATION: JsonDict = {
    "action": "record_next_step",
    "text": "Record a dated next step agreed with the buyer",
    "probability_before": 0.31,
    "probability_after": 0.38,
    "lift_points": 7.0,
    "expected_revenue_change": 3360.0,
    "evidence": "No next step recorded",
}
EXAMPLE_DEAL_SCORE: JsonDict = {
    "deal_id": "D-1042",
    "probability": 0.31,
    "grade": "C",
    "trend_points": -4.5,
    "reasons": [EXAMPLE_REASON],
    "recommendations": [EXAMPLE_RECOMMENDATION],
    "model": EXAMPLE_MODEL,
    "as_of": "2026-11-15T00:00:00Z",
}
EXAMPLE_DEAL_BATCH: JsonDict = {
    "request_id": "4f1c0c8e9b2d4a51a7c3d2e1f0a9b8c7",
    "model": EXAMPLE_MODEL,
    "as_of": "2026-11-15T00:00:00Z",
    "scores": [EXAMPLE_DEAL_SCORE],
}
EXAMPLE_REP_COACHING: JsonDict = {
    "rep_id": "R0002",
    "name": "Ada Park",
    "team": "NA 1",
    "as_of": "2026-11-15T00:00:00",
    "closed_deals": 48,
    "win_rate": 0.21,
    "team_win_rate": 0.27,
    "bottleneck": "proposal",
    "revenue_at_stake": 120000.0,
    "findings": [{"stage": "proposal", "text": "Proposals advance at 41 % (team: 58 %)"}],
    "funnel": [{"stage": "proposal", "reached": 61, "advanced": 25, "rate": 0.41}],
}
EXAMPLE_SERVING: JsonDict = {
    "name": "deal-win",
    "version": "3",
    "status": "serving",
    "loaded_at": "2026-11-15T08:00:00Z",
    "detail": None,
}


class ModelOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_MODEL]})
    name: str
    version: str


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


# JSON has no NaN: a non-finite number is answered as null
FiniteOrNone = Annotated[float | None, BeforeValidator(_finite_or_none)]


class ReasonOut(BaseModel):
    # read straight from `forecast.explain.reasons.Reason`: no dict made per reason
    model_config = ConfigDict(from_attributes=True)

    code: str
    feature: str
    direction: str
    effect: float
    value: Annotated[float | str | None, BeforeValidator(_finite_or_none)]
    typical: FiniteOrNone
    text: str


class RecommendationOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True
    )  # from `forecast.explain.reasons.Recommendation`

    action: str
    text: str
    probability_before: float
    probability_after: float
    lift_points: float
    expected_revenue_change: FiniteOrNone = Field(
        description="lift x the amount at stake; null when the amount is not known."
    )
    evidence: str


class DealScoreOut(BaseModel):
    """A deal's calibrated win probability, grade, reasons and what would help."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_DEAL_SCORE]})

    deal_id: str | None
    probability: float = Field(description="Calibrated probability that the deal is won (0-1).")
    grade: str = Field(
        description="A to D by probability, from the cut-offs in FORECAST_GRADE_CUTOFFS."
    )
    trend_points: float | None = Field(
        default=None,
        description="Change of the probability over the last week, in points, for a stored "
        "deal (GET /v1/deals/{deal_id}); null for a deal not open a week before, and in a batch "
        "score, whose week before is unknown.",
    )
    new_to_store: list[str] = Field(
        default=[],
        description="Fields of the record naming what the stored CRM has never seen "
        "(deal_id, rep_id, account_id, product_id): scored as new, with no record yet.",
    )
    reasons: list[ReasonOut]
    recommendations: list[RecommendationOut]
    model: ModelOut
    as_of: Moment


class DealBatchOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_DEAL_BATCH]})
    request_id: str
    model: ModelOut
    as_of: Moment
    scores: list[DealScoreOut]
    warnings: list[str] = Field(
        default_factory=list,
        description="What the caller should know about the whole answer: e.g. an as-of (the "
        "default, now) long after the stored CRM's data ends, so what the store knows of the "
        "reps, accounts and products is that old; send `as_of` to score as of the export. Or "
        "records naming a rep, account or product the store has never seen: their win rates in "
        "the reasons are priors, not history. Or a model that recommends no action to any deal: "
        "the export holds none of what the catalogue's actions act on (activities, next steps, "
        "stage history, expected close dates).",
    )


class RepCoachingOut(BaseModel):
    """A rep against their team and the company (rates are shares; NaN becomes null)."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_REP_COACHING]})

    rep_id: str
    name: str | None
    team: str
    as_of: Moment
    closed_deals: int
    win_rate: float | None
    team_win_rate: float | None
    bottleneck: str | None
    revenue_at_stake: float
    findings: list[dict[str, Any]] = Field(
        description="Gaps to the team, largest revenue at stake first; each with `text`, the "
        "comparison in plain words with units."
    )
    note: str | None = Field(
        default=None, description="Why the rep's rates are not judged (too few closed deals)."
    )
    funnel_note: str | None = Field(
        default=None,
        description="Why there is no funnel (no stage history in the export: conversion by "
        "stage would be made up).",
    )
    withheld: str | None = Field(
        default=None,
        description="Which group figures (team, company) are left out for this caller, and why: "
        "too few other people in the group to keep theirs from being derived.",
    )
    funnel: list[dict[str, Any]]


class TeamCoachingOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"team": "NA 1", "as_of": "2026-11-15T00:00:00", "reps": [EXAMPLE_REP_COACHING]}
            ]
        }
    )
    team: str
    as_of: Moment
    reps: list[RepCoachingOut]


class ServingModelOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_SERVING]})
    name: str
    version: str | None
    status: str  # "serving" or "missing"
    loaded_at: Moment | None = None
    detail: str | None = None


class ModelsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"models": [EXAMPLE_SERVING]}]})
    models: list[ServingModelOut]


class ReloadOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"models": [EXAMPLE_SERVING], "changed": ["deal-win"]}]}
    )
    models: list[ServingModelOut]
    changed: list[str]


class ChurnOut(BaseModel):
    """What the churn champion predicts: which churn, within how long, for whom."""

    definition: Literal["subscription", "inactivity"] = Field(
        description="subscription: an account's recurring revenue stops; inactivity: a "
        "customer makes no purchase (a business that sells by the order)."
    )
    horizon_days: int | None = Field(
        description="Churn within this many days (as the model was trained; null: not logged)."
    )
    scores: str = Field(description="Who the model scores.")
    arr: str = Field(description="What a scored account's `arr` (a year's revenue) is.")


EXAMPLE_CHURN: JsonDict = {
    "definition": "subscription",
    "horizon_days": 90,
    "scores": "every account billed recurring revenue in the last ended month",
    "arr": "ARR (12 x the last monthly bill)",
}


EXAMPLE_AT_RISK: JsonDict = {
    "level": "team",
    "as_of": "2026-11-15T00:00:00Z",
    "model": EXAMPLE_MODEL,
    "churn": EXAMPLE_CHURN,
    "totals": [
        {
            "name": "EMEA 1",
            "accounts": 112,
            "arr": 2069518.0,
            "revenue_at_risk": 179624.0,
            "share_at_risk": 0.087,
            "expected_churned_accounts": 9.4,
        }
    ],
}


class AtRiskTotalOut(BaseModel):
    name: str = Field(description="The rep id, team or region (the accounts' owner's).")
    accounts: int
    arr: float = Field(description="A year's revenue of these accounts (see `churn.arr`).")
    revenue_at_risk: float = Field(description="Sum of churn probability x arr.")
    share_at_risk: float | None = Field(description="revenue_at_risk / arr.")
    expected_churned_accounts: float


class AtRiskOut(BaseModel):
    """Revenue at risk from churn, summed by the accounts' owner's rep, team or region (an
    account no rep owns: its own region, as a retailer's customer's country), over
    the accounts in the caller's reach; largest first."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_AT_RISK]})

    level: str
    as_of: Moment
    model: ModelOut
    churn: ChurnOut
    totals: list[AtRiskTotalOut]


EXAMPLE_LOGGED: JsonDict = {
    "id": 1042,
    "request_id": "4f1c0c8e9b2d4a51a7c3d2e1f0a9b8c7",
    "at": "2026-12-05T10:05:06Z",
    "caller": "k3x9",
    "model": "deal-win",
    "model_version": "3",
    "subject": "D-1042",
    "input_hash": "db1ac800b27e8a51b00ff2cb3ec4a42671dac2493cbe563371ce705f97b488cf",
    "output": {"probability": 0.31, "grade": "C", "reasons": ["- No touch in 30 days"]},
}


class LoggedPredictionOut(BaseModel):
    """One logged score: when, who asked (key id), which model, the deal, and the answer."""

    id: int
    request_id: str
    at: Moment
    caller: str
    model: str
    model_version: str
    subject: str | None
    input_hash: str = Field(description="SHA-256 of the request's input (never the input).")
    output: dict[str, Any] = Field(description="The answer: probability, grade, reasons.")


class PredictionLogOut(BaseModel):
    """A page of the prediction log, oldest first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"predictions": [EXAMPLE_LOGGED], "next_after_id": 1042}]}
    )

    predictions: list[LoggedPredictionOut]
    next_after_id: int | None = Field(
        description="Pass as `after_id` for the next page; null on the last page."
    )


class ProblemOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"detail": "no deal 'D-1042'"}]})
    detail: str


# --- accounts -----------------------------------------------------------------------------------

EXAMPLE_ACCOUNT: dict[str, Any] = {
    "account_id": "A-2207",
    "segment": "mid_market",
    "industry": "software",
    "region": "EMEA",
    "mrr": 4200.0,
    "mrr_change_3m": -0.15,
    "tenure_days": 820,
    "days_to_contract_end": 45,
    "tickets_90d": 7,
    "satisfaction_last": 2.0,
    "usage_change_3m": -0.3,
    "days_since_rep_touch": 75,
}


class _AccountBase(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_ACCOUNT]})

    account_id: str | None = Field(
        default=None, max_length=200, description="Your id for the account, echoed and logged."
    )


if TYPE_CHECKING:  # as DealIn
    AccountIn = _AccountBase
else:
    AccountIn = create_model(
        "AccountIn",
        __base__=_AccountBase,
        __doc__=(
            "One account's churn-model features; every one optional, missing ones scored as "
            "missing. `mrr` (monthly recurring revenue) also gives the revenue at risk."
        ),
        **_feature_fields(ACCOUNT_FEATURES),
    )


class AccountBatchIn(BaseModel):
    """1 to 1,000 accounts scored as of one moment."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"accounts": [EXAMPLE_ACCOUNT]}]}
    )

    as_of: RecordMoment | None = Field(
        default=None, description="The moment the features describe (default: now, UTC)."
    )
    accounts: list[AccountIn] = Field(
        min_length=1, max_length=MAX_BATCH, description=f"1 to {MAX_BATCH} accounts."
    )


EXAMPLE_ACCOUNT_SCORE: JsonDict = {
    "account_id": "A-2207",
    "churn_probability": 0.34,
    "arr": 50400.0,
    "revenue_at_risk": 17136.0,
    "drivers": [
        {
            "code": "satisfaction",
            "feature": "satisfaction_last",
            "direction": "raises",
            "effect": 0.61,
            "value": 2.0,
            "typical": None,
            "text": "Last satisfaction score 2",
        }
    ],
    "retention_actions": [
        {
            "action": "executive_check_in",
            "text": "An executive check-in before the renewal",
            "probability_before": 0.34,
            "probability_after": 0.27,
            "lift_points": 7.0,
            "expected_revenue_change": 3528.0,
            "evidence": "Last satisfaction score 2",
        }
    ],
    "model": {"name": "account-churn", "version": "2"},
    "churn": EXAMPLE_CHURN,
    "as_of": "2026-11-15T00:00:00Z",
}


class AccountScoreOut(BaseModel):
    """An account's churn probability, revenue at risk, what drives it and what would help."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_ACCOUNT_SCORE]})

    account_id: str | None
    churn_probability: float
    arr: float | None = Field(
        description="A year's revenue (see `churn.arr`): 12 x mrr under subscription churn "
        "(null when mrr is not known), the last year's spend net of returns under inactivity."
    )
    revenue_at_risk: float | None = Field(description="churn_probability x arr (null: no arr).")
    owner_rep_id: str | None = None
    segment: str | None = None
    drivers: list[ReasonOut]
    retention_actions: list[RecommendationOut]
    model: ModelOut
    churn: ChurnOut
    as_of: Moment


class AccountBatchOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "4f1c0c8e9b2d4a51a7c3d2e1f0a9b8c7",
                    "model": EXAMPLE_ACCOUNT_SCORE["model"],
                    "as_of": "2026-11-15T00:00:00Z",
                    "scores": [EXAMPLE_ACCOUNT_SCORE],
                }
            ]
        }
    )

    request_id: str
    model: ModelOut
    as_of: Moment
    scores: list[AccountScoreOut]


# --- the revenue forecast -----------------------------------------------------------------------

EXAMPLE_NODE: JsonDict = {
    "level": "team",
    "node": "NA 1",
    "parent": "NA",
    "mean": 1_240_000.0,
    "std": 180_000.0,
    "p10": 1_010_000.0,
    "p50": 1_235_000.0,
    "p90": 1_470_000.0,
    "target": 1_300_000.0,
    "gap_to_target": 60_000.0,
    "p_reach_target": 0.37,
    "closed": 610_000.0,
    "open": 380_000.0,
    "new": 90_000.0,
    "recurring": 160_000.0,
    "open_deals": 41,
    "source": "simulation",
    "simulation_mean": 1_240_000.0,
}
EXAMPLE_DRIVER: JsonDict = {
    "rank": 1,
    "deal_id": "D-1042",
    "rep_id": "R0002",
    "stage": "negotiation",
    "amount": 210_000.0,
    "expected_close": "2026-12-12T00:00:00",
    "p_win": 0.55,
    "p_inside": 0.41,
    "expected_amount": 86_100.0,
    "variance_share": 0.22,
    "cumulative_share": 0.22,
}


class ForecastNodeOut(BaseModel):
    """A node's quarter: the distribution, the target, and the mean split into its parts."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [EXAMPLE_NODE]})

    level: str
    node: str
    parent: str | None = None
    mean: float
    std: float | None = None
    p10: float
    p50: float
    p90: float
    target: float | None = Field(default=None, description="null when no target is set.")
    gap_to_target: float | None = Field(default=None, description="target - mean.")
    p_reach_target: float | None = Field(default=None, description="P(bookings >= target).")
    closed: float = Field(description="Deals won inside the quarter so far.")
    open: float = Field(description="Expected from deals open now.")
    new: float = Field(description="Expected from deals not yet created.")
    recurring: float = Field(description="Renewals passed and still to come.")
    open_deals: int | None = Field(default=None, description="Deals open now under the node.")
    booked: float | None = Field(
        default=None,
        description="What is already booked in the quarter: deals won and renewals passed.",
    )
    open_pipeline: float | None = Field(
        default=None,
        description="Amounts of the open deals expected to close inside the quarter: by their "
        "expected close, or, where the CRM has none, once the typical cycle of the deals won "
        "so far ends inside it.",
    )
    remaining_gap: float | None = Field(
        default=None,
        description="What new business still has to bring: target - closed - recurring (null "
        "without a target).",
    )
    coverage: float | None = Field(
        default=None,
        description="open_pipeline / remaining_gap, the pipeline coverage managers watch "
        "(null without a target; infinite when the target is already met).",
    )
    source: str = Field(
        default="simulation",
        description="Where the mean comes from: `simulation`, or the time series the node "
        "leans on (`naive_last_quarter`, `naive_last_year`, `mean_last_four`, "
        "`statsforecast`) because the latest revenue backtest erred clearly less with it "
        "there; the spread keeps the simulation's shape above what is booked. Every node "
        "stays the sum of its children, so a node that does not lean moves with those "
        "that lean under or above it (`simulation_mean` is its own).",
    )
    simulation_mean: float | None = Field(
        default=None,
        description="The simulation's mean, which closed + open + new + recurring add up "
        "to; equal to `mean` unless the node, a node under it or a node above it leans on a "
        "series.",
    )
    revenue_at_risk: float | None = Field(
        default=None,
        description="Revenue at risk from churn (churn probability x a year's revenue) of "
        "the accounts owned under the node; null without a churn champion.",
    )


class DriverDealOut(BaseModel):
    """A deal carrying a share of the node's uncertainty (variance of its total)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [EXAMPLE_DRIVER]})

    rank: int
    deal_id: str
    rep_id: str | None = None
    stage: str | None = None
    amount: float | None = None
    expected_close: Moment | None = Field(
        default=None, description="The deal's expected close (null when the CRM has none)."
    )
    p_win: float | None = Field(default=None, description="P(won), the deal-win champion's.")
    p_inside: float | None = Field(
        default=None, description="P(won inside the quarter): p_win x P(closes inside | won)."
    )
    expected_amount: float | None = Field(
        default=None,
        description="The amount it is expected to book if won: its amount x how much deals at "
        "its stage booked of their amount then (discounts, scope changes).",
    )
    variance_share: float | None = Field(
        default=None, description="Its share of the variance of the node's total."
    )
    cumulative_share: float | None = Field(
        default=None, description="The share of the deals ranked up to it, together."
    )


EXAMPLE_FORECAST: JsonDict = {
    "quarter": "2026Q4",
    "as_of": "2026-11-15T00:00:00",
    "draws": 10000,
    "model": EXAMPLE_MODEL,
    "definition": "bookings: won deals closing in the quarter + renewals passed in it",
    "renewals_from": "account-churn v3",
    "node": EXAMPLE_NODE,
    "children": [{**EXAMPLE_NODE, "level": "rep", "node": "R0002", "parent": "NA 1"}],
    "drivers": [EXAMPLE_DRIVER],
}


class ForecastOut(BaseModel):
    """A quarter's bookings forecast at one node of the org tree."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_FORECAST]})

    quarter: str
    as_of: Moment
    draws: int
    model: ModelOut
    definition: str
    renewals_from: str = Field(
        description="What gave the renewals still to come their probabilities: the churn "
        "champion (`account-churn vN`, this quarter and next) or the segment renewal rates."
    )
    leaning: str | None = Field(
        default=None,
        description="The revenue backtest run whose errors chose, node by node, between the "
        "simulation and a time series (`source` on each node); null when there is none.",
    )
    node: ForecastNodeOut
    children: list[ForecastNodeOut]
    drivers: list[DriverDealOut] = Field(
        description="The deals carrying most of the node's uncertainty (only deals in reach)."
    )


class AddedDealIn(BaseModel):
    """A deal the CRM does not hold yet; scored like the rep's open deals of its stage.

    It appears among the scenario's deals as `new:<deal_id>`.
    """

    model_config = ConfigDict(extra="forbid")

    deal_id: str = Field(min_length=1, max_length=200)
    rep_id: str = Field(min_length=1, max_length=200)
    amount: float = Field(ge=0, le=1e12)
    stage: Literal[OPEN_STAGE_NAMES]  # type: ignore[valid-type]
    expected_close: RecordDate
    win_probability: float | None = Field(default=None, ge=0, le=1)


EXAMPLE_SCENARIO: JsonDict = {
    "name": "big deal slips, one lost",
    "remove": ["D-0977"],
    "slip": {"D-1042": 45},
    "stage": {"D-1107": "negotiation"},
    "add": [
        {
            "deal_id": "NEW-1",
            "rep_id": "R0002",
            "amount": 60000.0,
            "stage": "proposal",
            "expected_close": "2026-12-15",
        }
    ],
}
MAX_SCENARIO_DEALS = 1000
# whole days, at most a year either way; strict: `true` is not a number of days (the schema
# says integer, and a fuzzer sending booleans must get the 422 the schema promises)
SlipDays = Annotated[int, Field(ge=-366, le=366, strict=True)]
# Added deals are named apart from the CRM's: an id taken by a deal out of reach must not be
# answered differently from a free one (that would reveal the deal).
ADDED_PREFIX = "new:"


class ScenarioIn(BaseModel):
    """Changes to the open pipeline; every deal named must be in the caller's reach."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_SCENARIO]})

    name: str = Field(default="scenario", max_length=200)
    remove: list[str] = Field(
        default_factory=list, max_length=MAX_SCENARIO_DEALS, description="Deal ids taken out."
    )
    slip: dict[DealKey, SlipDays] = Field(
        default_factory=dict,
        max_length=MAX_SCENARIO_DEALS,
        description="Deal id -> days its expected close moves (positive: later, up to a year).",
    )
    stage: dict[DealKey, Literal[STAGE_NAMES]] = Field(  # type: ignore[valid-type]
        default_factory=dict,
        max_length=MAX_SCENARIO_DEALS,
        description="Deal id -> new stage (closed_won books it now, closed_lost removes it).",
    )
    add: list[AddedDealIn] = Field(default_factory=list, max_length=MAX_SCENARIO_DEALS)

    def deal_ids(self) -> list[str]:
        """The existing deals this scenario names."""
        return list(dict.fromkeys([*self.remove, *self.slip, *self.stage]))

    def to_scenario(self) -> Scenario:
        from forecast.revenue import AddedDeal, Scenario

        added = tuple(
            AddedDeal(
                deal_id=ADDED_PREFIX + d.deal_id,
                rep_id=d.rep_id,
                amount=d.amount,
                stage=d.stage,
                expected_close=pd.Timestamp(d.expected_close),
                win_probability=d.win_probability,
            )
            for d in self.add
        )
        return Scenario(
            name=self.name,
            remove=tuple(self.remove),
            add=added,
            slip_days=dict(self.slip),
            stage=dict(self.stage),
        )


class ScenarioOut(BaseModel):
    """The node's figures before and after the scenario, drawn with the same random numbers."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "quarter": "2026Q4",
                    "as_of": "2026-11-15T00:00:00",
                    "draws": 10000,
                    "model": EXAMPLE_MODEL,
                    "name": EXAMPLE_SCENARIO["name"],
                    "base": EXAMPLE_NODE,
                    "scenario": {**EXAMPLE_NODE, "mean": 1_150_000.0, "p_reach_target": 0.24},
                    "change_in_mean": -90_000.0,
                    "drivers": [EXAMPLE_DRIVER],
                }
            ]
        }
    )

    quarter: str
    as_of: Moment
    draws: int
    model: ModelOut
    name: str
    base: ForecastNodeOut
    scenario: ForecastNodeOut
    change_in_mean: float
    drivers: list[DriverDealOut] = Field(description="The scenario's uncertain deals in reach.")


class HealthOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: str


class ReadyOut(BaseModel):
    """Ready when every champion is loaded (503 with the problems otherwise)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "ready": True,
                    "models": {"deal-win": "3", "account-churn": "2"},
                    "problems": [],
                    "refused": [],
                    "store": "20261115T000000-3f2a",
                }
            ]
        }
    )

    ready: bool
    models: dict[str, str | None]
    problems: list[str]
    store: str | None = Field(
        default=None, description="The version of the CRM store this process serves from."
    )
    refused: list[str] = Field(
        default_factory=list,
        description="Newer champion versions refused at load (the older ones keep serving).",
    )
    unsupported: dict[str, str] = Field(
        default_factory=dict,
        description="Models the stored data cannot train (an orders-only export has no deals "
        "to win), with why: readiness does not wait for them.",
    )


METRICS_EXAMPLE = """\
# TYPE forecast_http_requests_total counter
forecast_http_requests_total{method="POST",route="/v1/deals:score",status="200"} 42.0
# TYPE forecast_model_version gauge
forecast_model_version{model="deal-win"} 3.0
"""
