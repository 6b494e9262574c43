"""The `/v1` routes: each parses, calls one library function, and maps the result."""

from __future__ import annotations

import math
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool

from forecast.explain import Explanation, explain
from forecast.features import FEATURE_NAMES
from forecast.predlog import Prediction
from forecast.scoring import grade
from service.deps import Admin, DealInReach, RepInReach, ScoringCaller, StateDep, TeamInReach
from service.schemas import (
    DealBatchIn,
    DealBatchOut,
    DealScoreOut,
    ModelOut,
    ModelsOut,
    ProblemOut,
    ReloadOut,
    RepCoachingOut,
    ServingModelOut,
    TeamCoachingOut,
    finite,
)
from service.state import DEAL_MODEL, ServiceState

router = APIRouter(prefix="/v1")

PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"model": ProblemOut, "description": "Missing or invalid API key."},
    403: {"model": ProblemOut, "description": "The caller's role may not call this."},
    503: {"model": ProblemOut, "description": "No champion loaded, or no CRM data."},
}
READ_PROBLEMS = {**PROBLEMS, 404: {"model": ProblemOut, "description": "Unknown or out of reach."}}


def _fields(item: Any) -> dict[str, Any]:
    """A flat dataclass as a dict (`asdict` deep-copies: a tenth of a request's time)."""
    return {f.name: getattr(item, f.name) for f in fields(item)}


def _score_out(
    explanation: Explanation, deal_id: str | None, model: ModelOut, as_of: datetime
) -> DealScoreOut:
    probability = explanation.probability
    return DealScoreOut(
        deal_id=deal_id,
        probability=probability,
        grade=str(grade(probability)[0]),
        reasons=[finite(_fields(r)) for r in explanation.reasons],
        recommendations=[_fields(r) for r in explanation.recommendations],
        model=model,
        as_of=as_of,
    )


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The deals as one block of values: typed columns cost more to build than a deal's score,
    and the scorer reads each value as a number or a category either way. Infinities are
    scored as missing."""
    names = list(FEATURE_NAMES)
    values = [
        [np.nan if isinstance(v, float) and math.isinf(v) else v for v in map(row.get, names)]
        for row in rows
    ]
    block = np.empty((len(rows), len(names)), dtype=object)
    block[:] = values
    return pd.DataFrame(block, columns=names, dtype=object)  # object: no per-column inference


@router.post(
    "/deals:score",
    response_model=DealBatchOut,
    responses={**PROBLEMS, 413: {"model": ProblemOut, "description": "Body too large."}},
    summary="Score 1 to 1,000 deals: probability, grade, reasons, recommendations",
)
def score_deals(body: DealBatchIn, request: Request, caller: ScoringCaller, state: StateDep):
    serving = state.champion(DEAL_MODEL)
    as_of = body.as_of or datetime.now(UTC)
    rows = [deal.model_dump(exclude={"deal_id"}) for deal in body.deals]
    explained = explain(serving.scorer, _frame(rows), typical=serving.typical)
    model = ModelOut(name=serving.name, version=serving.version)
    scores = [
        _score_out(e, deal.deal_id, model, as_of)
        for e, deal in zip(explained, body.deals, strict=True)
    ]
    request_id = request.state.request_id
    state.logs.predictions(
        request_id=request_id,
        caller=caller.key_id,
        model=serving.name,
        model_version=serving.version,
        predictions=[
            Prediction(s.deal_id, row, {"probability": s.probability, "grade": s.grade})
            for s, row in zip(scores, rows, strict=True)
        ],
    )
    state.metrics.count_scored(serving.name, len(scores))
    out = DealBatchOut(request_id=request_id, model=model, as_of=as_of, scores=scores)
    # built and checked above: answered as is, not validated again on another thread
    return Response(out.model_dump_json(), media_type="application/json")


@router.get(
    "/deals/{deal_id}",
    response_model=DealScoreOut,
    responses=READ_PROBLEMS,
    summary="A stored deal's current score (reps: own deals; managers: their org)",
)
def read_deal(deal_id: DealInReach, request: Request, caller: ScoringCaller, state: StateDep):
    from forecast.scoring import score_deals as score_stored

    serving = state.champion(DEAL_MODEL)
    tables = state.store()
    try:
        [score] = score_stored(tables, serving.scorer, deal_ids=[deal_id], typical=serving.typical)
    except KeyError:
        raise HTTPException(404, f"deal {deal_id!r} is closed: it has no current score") from None
    model = ModelOut(name=serving.name, version=serving.version)
    out = _score_out(score.explanation, deal_id, model, score.as_of.to_pydatetime())
    out.trend_points = score.trend_points
    state.logs.predictions(
        request_id=request.state.request_id,
        caller=caller.key_id,
        model=serving.name,
        model_version=serving.version,
        predictions=[
            Prediction(
                deal_id,
                {"deal_id": deal_id, "as_of": str(score.as_of), "store": "current"},
                {"probability": out.probability, "grade": out.grade},
            )
        ],
    )
    state.metrics.count_scored(serving.name, 1)
    return out


def _coaching(view) -> RepCoachingOut:
    return RepCoachingOut(**finite(view.to_dict()))


@router.get(
    "/coaching/reps/{rep_id}",
    response_model=RepCoachingOut,
    responses=READ_PROBLEMS,
    summary="A rep's funnel, bottleneck and focus areas against team and company",
)
def coach_rep(rep_id: RepInReach, state: StateDep):
    from forecast.coaching import coach_rep as coach

    return _coaching(coach(state.store(), rep_id))


@router.get(
    "/coaching/teams/{team}",
    response_model=TeamCoachingOut,
    responses=READ_PROBLEMS,
    summary="Coaching for every rep of a team the caller manages (managers and admins)",
)
def coach_team(team: str, members: TeamInReach, state: StateDep):
    from forecast.coaching import coach_team as coach

    tables = state.store()
    views = [v for v in coach(tables, team) if v.rep_id in set(members)]
    return TeamCoachingOut(
        team=team, as_of=tables.as_of.to_pydatetime(), reps=[_coaching(v) for v in views]
    )


def _serving(state: ServiceState) -> list[ServingModelOut]:
    out = []
    for name in sorted(set(state.models) | set(state.problems)):
        serving = state.models.get(name)
        out.append(
            ServingModelOut(
                name=name,
                version=serving.version if serving else None,
                status="serving" if serving else "missing",
                loaded_at=serving.loaded_at if serving else None,
                detail=state.detail(name),
            )
        )
    return out


@router.get(
    "/models", response_model=ModelsOut, responses=PROBLEMS, summary="What models are serving"
)
def models(caller: ScoringCaller, state: StateDep):
    return ModelsOut(models=_serving(state))


@router.post(
    "/admin/reload",
    response_model=ReloadOut,
    responses=PROBLEMS,
    summary="Reload the store and any champion whose version moved (admin)",
)
async def reload(caller: Admin, state: StateDep):
    def work() -> list[str]:
        state.load_store()
        return state.load_models(retry_refused=True)

    changed = await run_in_threadpool(work)
    return ReloadOut(models=_serving(state), changed=changed)
