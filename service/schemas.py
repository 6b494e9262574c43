"""Request and response bodies, named by direction: `...In` is read, `...Out` is answered.

`DealIn` is built from `forecast.features.DEAL_FEATURES`, so the service accepts exactly what the
model reads: every feature optional (a missing one is scored as missing), numbers as floats
(NaN and infinities scored as missing), categories as text (an unseen category is scored as
missing). An unknown field is refused with 422 naming it, so a typo never silently drops data.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from forecast.features import DEAL_FEATURES

MAX_BATCH = 1000

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


def finite(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _feature_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for f in DEAL_FEATURES:
        kind = str if f.kind == "categorical" else float
        fields[f.name] = (kind | None, Field(default=None))
    return fields


class _DealBase(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_DEAL]})

    deal_id: str | None = Field(
        default=None, max_length=200, description="Your id for the deal, echoed back and logged."
    )


DealIn = create_model(
    "DealIn",
    __base__=_DealBase,
    __doc__="One deal's model features; every one optional, missing ones scored as missing.",
    **_feature_fields(),
)


class DealBatchIn(BaseModel):
    """1 to 1,000 deals scored as of one moment."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"deals": [EXAMPLE_DEAL]}]}
    )

    as_of: datetime | None = Field(
        default=None, description="The moment the features describe (default: now, UTC)."
    )
    deals: list[DealIn] = Field(  # type: ignore[valid-type]
        min_length=1, max_length=MAX_BATCH, description=f"1 to {MAX_BATCH} deals."
    )


class ModelOut(BaseModel):
    name: str
    version: str


class ReasonOut(BaseModel):
    code: str
    feature: str
    direction: str
    effect: float
    value: float | str | None
    typical: float | None
    text: str

    @field_validator("value", "typical", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        return finite(v)


class RecommendationOut(BaseModel):
    action: str
    text: str
    probability_before: float
    probability_after: float
    lift_points: float
    expected_revenue_change: float
    evidence: str


class DealScoreOut(BaseModel):
    """A deal's calibrated win probability, grade, reasons and what would help."""

    deal_id: str | None
    probability: float
    grade: str
    trend_points: float | None = None
    reasons: list[ReasonOut]
    recommendations: list[RecommendationOut]
    model: ModelOut
    as_of: datetime


class DealBatchOut(BaseModel):
    request_id: str
    model: ModelOut
    as_of: datetime
    scores: list[DealScoreOut]


class RepCoachingOut(BaseModel):
    """A rep against their team and the company (rates are shares; NaN becomes null)."""

    rep_id: str
    name: str | None
    team: str
    as_of: datetime
    closed_deals: int
    win_rate: float | None
    team_win_rate: float | None
    bottleneck: str | None
    revenue_at_stake: float
    findings: list[dict[str, Any]]
    funnel: list[dict[str, Any]]


class TeamCoachingOut(BaseModel):
    team: str
    as_of: datetime
    reps: list[RepCoachingOut]


class ServingModelOut(BaseModel):
    name: str
    version: str | None
    status: str  # "serving" or "missing"
    loaded_at: datetime | None = None
    detail: str | None = None


class ModelsOut(BaseModel):
    models: list[ServingModelOut]


class ReloadOut(BaseModel):
    models: list[ServingModelOut]
    changed: list[str]


class ProblemOut(BaseModel):
    detail: str
