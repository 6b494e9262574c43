"""The `/v1` routes: each parses, calls one library function, and maps the result."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from forecast.explain.account_scoring import revenue_at_risk_totals
from forecast.explain.reasons import explain
from forecast.explain.scorers import feature_rows
from forecast.explain.scoring import RecordScore, grade, score_records
from forecast.explain.wording import Explanation
from forecast.features.records import RecordError, canonical_records
from service.deps import (
    AccountInReach,
    Admin,
    DealInReach,
    ForecastNode,
    ForecastQuarter,
    ForecastScope,
    ReachDep,
    Reader,
    RepInReach,
    ScenarioInReach,
    ScoringCaller,
    StateDep,
    TeamInReach,
    TeamName,
    _visible,
    invalid,
    records_in_reach,
)
from service.keys import Principal
from service.predlog import Prediction, read_predictions
from service.schemas import (
    AccountBatchIn,
    AccountBatchOut,
    AccountScoreOut,
    AtRiskOut,
    ChurnOut,
    DealBatchIn,
    DealBatchOut,
    DealFeaturesBatchIn,
    DealScoreOut,
    ForecastOut,
    ModelOut,
    ModelsOut,
    PredictionLogOut,
    ProblemOut,
    ReloadOut,
    RepCoachingOut,
    ScenarioOut,
    ServingModelOut,
    TeamCoachingOut,
    finite,
)
from service.state import CHURN_MODEL, DEAL_MODEL, ServiceState, Serving

if TYPE_CHECKING:
    from forecast.revenue import QuarterForecast

router = APIRouter(prefix="/v1")
ON_LOOP_ROWS = 16  # batches up to this many rows are scored on the event loop (see `_scored`)
DEFINITION = "bookings: won deals closing in the quarter + renewals passed in it"

PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"model": ProblemOut, "description": "Missing or invalid API key or bearer token."},
    403: {"model": ProblemOut, "description": "The caller's role may not call this."},
    503: {
        "model": ProblemOut,
        "description": "No champion loaded, no CRM data, the org tree or the service "
        "database cannot be read (then with Retry-After), or a scenario ran past its budget.",
    },
    409: {
        "model": ProblemOut,
        "description": "The stored data cannot give this at all, and says what it lacks: a "
        "model it cannot train (an orders-only export has no deals to win), a bookings "
        "forecast without deal amounts.",
    },
}
READ_PROBLEMS = {**PROBLEMS, 404: {"model": ProblemOut, "description": "Unknown or out of reach."}}
BODY_PROBLEMS = {
    **PROBLEMS,
    400: {"model": ProblemOut, "description": "The body cannot be parsed (not UTF-8 text)."},
    413: {"model": ProblemOut, "description": "Body too large."},
}


def _score_out(
    explanation: Explanation, deal_id: str | None, model: ModelOut, as_of: datetime
) -> DealScoreOut:
    probability = explanation.probability
    return DealScoreOut(
        deal_id=deal_id,
        probability=probability,
        grade=str(grade(probability)[0]),
        reasons=explanation.reasons,  # read by attribute (see ReasonOut)
        recommendations=explanation.recommendations,
        model=model,
        as_of=as_of,
    )


async def _scored(rows: int, work: Callable[[], Any]) -> Any:
    """Run `work` on the event loop for a few rows (a deal is about a millisecond: a thread
    hop would cost a fifth of that and add a wait for the GIL), in a thread for a batch, so
    the loop keeps answering other callers while a thousand rows are scored."""
    if rows <= ON_LOOP_ROWS:
        return work()
    return await run_in_threadpool(work)


def _log_scores(
    state: ServiceState,
    request: Request,
    caller: Principal,
    serving: Serving,
    predictions: list[Prediction],
) -> None:
    """Every score to the prediction log (written off the request path) and the metrics."""
    state.logs.predictions(
        request_id=request.state.request_id,
        caller=caller.key_id,
        model=serving.name,
        model_version=serving.version,
        predictions=predictions,
    )
    state.metrics.count_scored(serving.name, len(predictions))


@router.post(
    "/deals:score",
    response_model=DealBatchOut,
    responses={
        **BODY_PROBLEMS,
        404: {"model": ProblemOut, "description": "A stored deal or a rep out of reach."},
    },
    summary="Score 1 to 1,000 deal records as the CRM holds them: probability, grade, "
    "reasons, recommendations",
)
async def score_deals(body: DealBatchIn, request: Request, caller: ScoringCaller, state: StateDep):
    serving, stored = state.champion(DEAL_MODEL), state.records_store()
    try:  # the CRM's own names as the store holds them, before anything is looked up
        records = canonical_records([deal.model_dump() for deal in body.deals], stored)
    except RecordError as err:
        raise invalid(("body", *err.where), err.message, err.value) from None
    records_in_reach(records, caller, state)

    def work() -> Response:
        as_of = body.as_of or datetime.now(UTC)
        try:
            scored = score_records(
                records, stored, serving.scorer, as_of=as_of, typical=serving.typical
            )
        except RecordError as err:
            raise invalid(("body", *err.where), err.message, err.value) from None
        model = ModelOut(name=serving.name, version=serving.version)
        scores = []
        for score in scored:
            out = _score_out(score.explanation, score.deal_id, model, as_of)
            out.new_to_store = list(score.new_to_store)
            scores.append(out)
        _log_scores(
            state,
            request,
            caller,
            serving,
            [
                Prediction(s.deal_id, _logged_record(record), _logged_score(s))
                for s, record in zip(scores, records, strict=True)
            ],
        )
        batch = DealBatchOut(
            request_id=request.state.request_id,
            model=model,
            as_of=as_of,
            scores=scores,
            warnings=_new_history(scored)
            + ([] if body.as_of else _stale_store(stored.tables.as_of, as_of, state))
            + ([why] if (why := state.no_deal_actions(serving)) else [])
            + ([serving.forced] if serving.forced else []),
        )
        # built and checked above: answered as is, not validated again
        return Response(batch.model_dump_json(), media_type="application/json")

    return await _scored(len(body.deals), work)


def _new_history(scored: list[RecordScore]) -> list[str]:
    """A warning when records name a rep, account or product the store has never seen: their
    records are empty, so the rates the model reads for them are priors, not history."""
    named: dict[str, int] = {}
    for score in scored:
        for field in score.new_to_store:
            if field != "deal_id":  # a deal not stored yet is what a CRM sends most
                named[field] = named.get(field, 0) + 1
    if not named:
        return []
    fields = ", ".join(f"{field} ({count:,})" for field, count in named.items())
    return [
        f"records name ids the stored CRM has never seen: {fields} (each score's new_to_store). "
        "They are scored as new: no deals behind them, so their win rates in the reasons are "
        "priors (the team's, or a neutral one), not their history"
    ]


def _stale_store(stored_as_of: datetime, as_of: datetime, state: ServiceState) -> list[str]:
    """A warning when the default as-of (now) is long after the stored data ends."""
    days = (as_of.replace(tzinfo=None) - stored_as_of).days
    if days <= state.config.stale_store_days:
        return []
    return [
        f"scored as of now ({as_of:%Y-%m-%d}), {days:,} days after the stored CRM's data ends "
        f"({stored_as_of:%Y-%m-%d}): what it knows of the reps, accounts and products stops "
        "there (tenure counts on, recent deals count none); send `as_of` to score as of the "
        "export, or import a newer one"
    ]


def _logged_record(record: dict[str, Any]) -> dict[str, Any]:
    """The record as logged: its fields, with the counts of changes and activities sent."""
    history, activities = record.pop("history"), record.pop("activities")
    record["history_sent"] = None if history is None else len(history)
    record["activities_sent"] = None if activities is None else len(activities)
    return record


def _logged_score(score: DealScoreOut) -> dict[str, Any]:
    """The answer as logged: the score and its reasons, so a CRM's question can be replayed."""
    return {
        "probability": score.probability,
        "grade": score.grade,
        "reasons": [reason.text for reason in score.reasons],
        "new_to_store": score.new_to_store,
    }


@router.post(
    "/deals:scoreFeatures",
    response_model=DealBatchOut,
    responses=BODY_PROBLEMS,
    summary="Score 1 to 1,000 deals given as the model's own features (for what-if analysis)",
)
async def score_deal_features(
    body: DealFeaturesBatchIn, request: Request, caller: ScoringCaller, state: StateDep
):
    serving = state.champion(DEAL_MODEL)

    def work() -> Response:
        as_of = body.as_of or datetime.now(UTC)
        rows = [deal.model_dump(exclude={"deal_id"}) for deal in body.deals]
        values = feature_rows(rows, serving.scorer.names)
        stored = state.stored_crm  # names for reasons, when the store is loaded
        display = stored.display if stored is not None else None
        explained = explain(serving.scorer, values, typical=serving.typical, display=display)
        model = ModelOut(name=serving.name, version=serving.version)
        scores = [
            _score_out(e, deal.deal_id, model, as_of)
            for e, deal in zip(explained, body.deals, strict=True)
        ]
        _log_scores(
            state,
            request,
            caller,
            serving,
            [
                Prediction(s.deal_id, row, {"probability": s.probability, "grade": s.grade})
                for s, row in zip(scores, rows, strict=True)
            ],
        )
        out = DealBatchOut(
            request_id=request.state.request_id, model=model, as_of=as_of, scores=scores
        )
        # built and checked above: answered as is, not validated again
        return Response(out.model_dump_json(), media_type="application/json")

    return await _scored(len(body.deals), work)


@router.get(
    "/deals/{deal_id}",
    response_model=DealScoreOut,
    responses=READ_PROBLEMS,
    summary="A stored deal's current score (reps: own deals; managers: their org)",
)
def read_deal(deal_id: DealInReach, request: Request, caller: ScoringCaller, state: StateDep):
    serving = state.champion(DEAL_MODEL)
    score = state.deal_scores(serving).get(deal_id)
    if score is None:
        raise HTTPException(404, f"deal {deal_id!r} is closed: it has no current score")
    model = ModelOut(name=serving.name, version=serving.version)
    out = _score_out(score.explanation, deal_id, model, score.as_of.to_pydatetime())
    out.trend_points = score.trend_points
    _log_scores(
        state,
        request,
        caller,
        serving,
        [
            Prediction(
                deal_id,
                {"deal_id": deal_id, "as_of": str(score.as_of), "store": "current"},
                {"probability": out.probability, "grade": out.grade},
            )
        ],
    )
    return out


def _peer_safe(view, within: frozenset[str] | None, state: ServiceState):
    """The view without group figures that would reveal someone out of the caller's reach."""
    from forecast.coaching import withhold_small_groups

    return withhold_small_groups(view, within, min_others=state.settings.coaching_min_others)


def _coaching(view) -> RepCoachingOut:
    return RepCoachingOut(**finite(view.to_dict()))


@router.get(
    "/coaching/reps/{rep_id}",
    response_model=RepCoachingOut,
    responses=READ_PROBLEMS,
    summary="A rep's funnel, bottleneck and focus areas against team and company",
)
def coach_rep(rep_id: RepInReach, within: ReachDep, state: StateDep):
    from forecast.coaching import coach_rep as coach

    return _coaching(_peer_safe(coach(state.store(), rep_id), within, state))


@router.get(
    "/coaching/teams/{team}",
    response_model=TeamCoachingOut,
    responses=READ_PROBLEMS,
    summary="Coaching for every rep of a team the caller manages (managers and admins)",
)
def coach_team(team: TeamName, members: TeamInReach, within: ReachDep, state: StateDep):
    from forecast.coaching import coach_team as coach

    tables = state.store()
    views = [_peer_safe(v, within, state) for v in coach(tables, team) if v.rep_id in set(members)]
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
    summary="Reload the store and any champion whose version moved, in every worker and "
    "instance (admin)",
    description="Done at once by the process that answers, and by every other process of the "
    "service (every worker, every instance sharing the service database) within "
    "`FORECAST_SYNC_SECONDS` (2 s by default).",
)
async def reload(caller: Admin, state: StateDep):
    changed = await run_in_threadpool(state.reload, caller.key_id)
    return ReloadOut(models=_serving(state), changed=changed)


# --- accounts -----------------------------------------------------------------------------------


@router.get(
    "/admin/predictions",
    response_model=PredictionLogOut,
    responses=PROBLEMS,
    summary="The prediction log from one day to another (admins), a page at a time",
)
def prediction_log(
    caller: Admin,
    state: StateDep,
    start: Annotated[
        date,
        Query(
            alias="from",
            description="First day (UTC).",
            openapi_examples={"December": {"value": "2026-12-01"}},
        ),
    ],
    end: Annotated[
        date,
        Query(
            alias="to",
            description="Last day (UTC), included.",
            openapi_examples={"December": {"value": "2026-12-31"}},
        ),
    ],
    after_id: Annotated[
        int,
        Query(
            ge=0,
            le=2**63 - 1,  # a row id is a 64-bit integer (a larger one overflowed SQLite: 500)
            description="The `next_after_id` of the page before (0: the first page).",
            openapi_examples={"first page": {"value": 0}},
        ),
    ] = 0,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=10_000,
            description="Rows in this page.",
            openapi_examples={"a thousand": {"value": 1000}},
        ),
    ] = 1000,
):
    for name, day in (("from", start), ("to", end)):
        if not date(1900, 1, 1) <= day < date(2200, 1, 1):
            raise invalid(("query", name), "must fall between 1900-01-01 and 2200-01-01", day)
    first = datetime.combine(start, time(), UTC)
    last = datetime.combine(end, time(), UTC) + timedelta(days=1)
    rows = read_predictions(state.engine, first, last, after_id=after_id, limit=limit)
    return PredictionLogOut(
        predictions=rows, next_after_id=rows[-1]["id"] if len(rows) == limit else None
    )


def _churn_out(serving: Serving) -> ChurnOut:
    churn = serving.churn
    assert churn is not None, "a churn champion is served with its definition"
    return ChurnOut(
        definition=churn.definition.name,
        horizon_days=churn.horizon_days,
        scores=churn.definition.population,
        arr=churn.definition.revenue_words,
    )


def _account_out(
    explanation: Explanation,
    account_id: str | None,
    arr: float,
    serving: Serving,
    as_of: datetime,
    **stored: Any,
) -> AccountScoreOut:
    known = math.isfinite(arr)
    return AccountScoreOut(
        account_id=account_id,
        churn_probability=explanation.probability,
        arr=arr if known else None,
        revenue_at_risk=finite(explanation.probability * arr) if known else None,
        drivers=explanation.reasons,
        retention_actions=explanation.recommendations,
        model=ModelOut(name=serving.name, version=serving.version),
        churn=_churn_out(serving),
        as_of=as_of,
        **stored,
    )


@router.post(
    "/accounts:score",
    response_model=AccountBatchOut,
    responses={
        **BODY_PROBLEMS,
        409: {
            "model": ProblemOut,
            "description": "The churn champion is an inactivity model: it scores stored "
            "customers from their orders, not posted account features.",
        },
    },
    summary="Score 1 to 1,000 accounts: churn probability, revenue at risk, drivers, actions",
)
async def score_accounts(
    body: AccountBatchIn, request: Request, caller: ScoringCaller, state: StateDep
):
    serving = state.champion(CHURN_MODEL)
    if serving.churn is not None and serving.churn.definition.name != "subscription":
        raise HTTPException(
            409,
            f"{serving.name} v{serving.version} is an {serving.churn.definition.name}-churn "
            "model: it scores the stored customers from their orders (GET "
            "/v1/accounts/{account_id}, GET /v1/churn/at-risk); scoring posted account "
            "features needs a subscription-churn champion",
        )

    def work() -> AccountBatchOut:
        as_of = body.as_of or datetime.now(UTC)
        rows = [account.model_dump(exclude={"account_id"}) for account in body.accounts]
        values = feature_rows(rows, serving.scorer.names)
        mrr = np.array(values[:, serving.scorer.names.index("mrr")].tolist(), dtype=float)
        with np.errstate(over="ignore"):  # a huge mrr makes an infinite arr: no revenue at risk
            arr = 12 * mrr
        explained = explain(
            serving.scorer,
            values,
            amount=np.nan_to_num(arr, nan=0, posinf=0),
            model="account",
            typical=serving.typical,
        )
        model = ModelOut(name=serving.name, version=serving.version)
        scores = [
            _account_out(e, account.account_id, float(a), serving, as_of)
            for e, account, a in zip(explained, body.accounts, arr, strict=True)
        ]
        _log_scores(
            state,
            request,
            caller,
            serving,
            [
                Prediction(
                    s.account_id,
                    row,
                    {
                        "churn_probability": s.churn_probability,
                        "revenue_at_risk": s.revenue_at_risk,
                    },
                )
                for s, row in zip(scores, rows, strict=True)
            ],
        )
        return AccountBatchOut(
            request_id=request.state.request_id, model=model, as_of=as_of, scores=scores
        )

    return await _scored(len(body.accounts), work)


@router.get(
    "/accounts/{account_id}",
    response_model=AccountScoreOut,
    responses=READ_PROBLEMS,
    summary="A stored account's current churn risk (reps: own accounts; managers: their org; "
    "crm and admin: any)",
)
def read_account(
    account_id: AccountInReach, request: Request, caller: ScoringCaller, state: StateDep
):
    serving = state.champion(CHURN_MODEL)
    score = state.account_scores(serving).get(account_id)
    if score is None:
        scored = serving.churn.definition.population if serving.churn else "billed accounts"
        raise HTTPException(
            404, f"account {account_id!r} has no churn risk: the model scores {scored}"
        )
    out = _account_out(
        score.explanation,
        account_id,
        score.arr,
        serving,
        score.as_of.to_pydatetime(),
        owner_rep_id=score.owner_rep_id,
        segment=score.segment,
    )
    _log_scores(
        state,
        request,
        caller,
        serving,
        [
            Prediction(
                account_id,
                {"account_id": account_id, "as_of": str(score.as_of), "store": "current"},
                {
                    "churn_probability": out.churn_probability,
                    "revenue_at_risk": out.revenue_at_risk,
                },
            )
        ],
    )
    return out


# --- the revenue forecast -----------------------------------------------------------------------


@router.get(
    "/churn/at-risk",
    response_model=AtRiskOut,
    responses=PROBLEMS,
    summary="Revenue at risk from churn by rep, team or region, over the accounts in reach",
)
def churn_at_risk(
    caller: Reader,
    within: ReachDep,
    state: StateDep,
    level: Annotated[
        Literal["rep", "team", "region"],
        Query(
            description="Sum by the accounts' owner: rep, team or region.",
            openapi_examples={"by team": {"value": "team"}},
        ),
    ] = "team",
):
    serving, tables = state.champion(CHURN_MODEL), state.store()
    scores = [s for s in state.account_scores(serving).values() if _visible(s.owner_rep_id, within)]
    return AtRiskOut(
        level=level,
        as_of=tables.as_of.to_pydatetime(),
        model=ModelOut(name=serving.name, version=serving.version),
        churn=_churn_out(serving),
        totals=finite(revenue_at_risk_totals(scores, tables, level)),
    )


def _view(forecast: QuarterForecast, scope: ForecastScope) -> dict[str, Any]:
    view = forecast.node_view(scope.level, scope.node, reps=scope.reps)
    if view is None:  # in reach, but nothing booked or expected there this quarter
        raise HTTPException(
            404, f"no {scope.level} {scope.node!r} in the {forecast.quarter} forecast"
        )
    return finite(view)


@router.post(
    "/forecast/{quarter}:scenario",
    response_model=ScenarioOut,
    responses=BODY_PROBLEMS
    | {
        404: READ_PROBLEMS[404],
        429: {"model": ProblemOut, "description": "A scenario of yours is running: wait for it."},
    },
    summary="What if deals were lost, slipped, moved stage or were added: base and scenario",
    description="Scenarios are drawn by a process of their own at the lowest CPU priority, one "
    "at a time (scoring keeps its latency); a caller has one running at a time (429 with "
    "Retry-After for another), and one past `FORECAST_SCENARIO_BUDGET_SECONDS` is stopped (503).",
)
def forecast_scenario(
    quarter: ForecastQuarter,
    scope: ForecastNode,
    body: ScenarioInReach,
    caller: Reader,
    state: StateDep,
):
    serving = state.champion(DEAL_MODEL)
    with state.heavy.turn(caller.key_id):  # one at a time, in a process of their own
        try:
            base, changed = state.scenario_forecasts(
                quarter, body.to_scenario(), scope.level, scope.node
            )
        except KeyError as err:  # in reach, but not open at as-of (closed, or not in the quarter)
            raise invalid(("body",), str(err.args[0]), None) from None
        except ValueError as err:
            raise invalid(("body",), str(err), None) from None
    before, after = _view(base, scope), _view(changed, scope)
    return ScenarioOut(
        quarter=base.quarter,
        as_of=base.as_of.to_pydatetime(),
        draws=base.draws,
        model=ModelOut(name=serving.name, version=serving.version),
        name=body.name,
        base=before["node"],
        scenario=after["node"],
        change_in_mean=after["node"]["mean"] - before["node"]["mean"],
        drivers=after["drivers"],
    )


@router.get(
    "/forecast/{quarter}",
    response_model=ForecastOut,
    responses=READ_PROBLEMS,
    summary="A quarter's bookings forecast at a node: P10/P50/P90, target, parts, children",
)
def forecast(quarter: ForecastQuarter, scope: ForecastNode, state: StateDep):
    serving = state.champion(DEAL_MODEL)
    result = state.quarter_forecast(quarter)
    view = _view(result, scope)
    return ForecastOut(
        quarter=result.quarter,
        as_of=result.as_of.to_pydatetime(),
        draws=result.draws,
        model=ModelOut(name=serving.name, version=serving.version),
        definition=DEFINITION,
        renewals_from=result.inputs.renewals_source,
        leaning=result.inputs.lean.basis if result.inputs.lean else None,
        **view,
    )
