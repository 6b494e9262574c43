"""Dependencies, declared once: the state, the caller, what the caller may do and may see.

- a missing or bad key or bearer token is 401; a role that may not call a function is 403;
- an object outside the caller's place in the org tree is 404, exactly as if it did not exist;
- if the org tree cannot be read, access-checked endpoints answer 503 (never unfiltered).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import Depends, HTTPException, Path, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.keys import Principal
from service.schemas import ScenarioIn
from service.state import OrgTreeUnavailableError, ServiceState
from service.tokens import TokenError, verify_token

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="A key from `forecast keys create --role crm|rep|manager|admin [--rep-id R]`.",
)


bearer_header = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="An OAuth2 bearer JWT with `role` and `rep_id` claims (when configured).",
)


async def get_state(request: Request) -> ServiceState:  # async: no thread hop per request
    return request.app.state.service


StateDep = Annotated[ServiceState, Depends(get_state)]


ApiKey = Annotated[str | None, Security(api_key_header)]
Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(bearer_header)]


async def current_caller(request: Request, key: ApiKey, bearer: Bearer) -> Principal:
    """The caller, from a bearer JWT if one is sent, else from the API key."""
    state: ServiceState = request.app.state.service
    principal: Principal | None
    if bearer is not None:
        try:
            principal = verify_token(bearer.credentials, state.settings)
        except TokenError as err:
            raise HTTPException(401, str(err), headers={"WWW-Authenticate": "Bearer"}) from None
    else:
        # a key verified in the last `key_cache_seconds` needs no database, so no thread hop
        principal = state.keys.remembered(key) or await run_in_threadpool(state.keys.verify, key)
    if principal is None:
        raise HTTPException(
            401,
            "missing or invalid API key: send it in the X-API-Key header",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    request.state.caller = principal  # read by the audit log
    return principal


def allow(*roles: str) -> Callable[..., Any]:
    """A dependency letting only `roles` call the function (403 for the others).

    It takes the credentials itself rather than depending on `current_caller`: each level of
    dependencies costs FastAPI tens of microseconds per request, on every scoring call.
    """

    async def caller_in_role(request: Request, key: ApiKey, bearer: Bearer) -> Principal:
        caller = await current_caller(request, key, bearer)
        if caller.role not in roles:
            raise HTTPException(403, f"role {caller.role!r} may not call this function")
        return caller

    return caller_in_role


ScoringCaller = Annotated[Principal, Depends(allow("crm", "rep", "manager", "admin"))]
Reader = Annotated[Principal, Depends(allow("rep", "manager", "admin"))]
Manager = Annotated[Principal, Depends(allow("manager", "admin"))]
Admin = Annotated[Principal, Depends(allow("admin"))]


def subtree(reps: pd.DataFrame, root: str) -> frozenset[str]:
    """`root` and everyone reporting to them, directly or not (cycles in the data end)."""
    children: dict[str, list[str]] = {}
    for rep_id, manager_id in zip(reps["rep_id"], reps["manager_id"], strict=True):
        if isinstance(manager_id, str):
            children.setdefault(manager_id, []).append(rep_id)
    seen = {root}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return frozenset(seen)


def reach_of(caller: Principal, state: ServiceState) -> frozenset[str] | None:
    """The rep ids `caller` may see; None means everyone (admin). Shared by API and dashboard.

    Raises:
        OrgTreeUnavailableError: the org tree cannot be read (callers fail closed).
    """
    if caller.role == "admin":
        return None
    reps = state.reps()
    if caller.rep_id is None or caller.rep_id not in set(reps["rep_id"]):
        return frozenset()
    if caller.role == "rep":
        return frozenset({caller.rep_id})
    if caller.role != "manager":
        return frozenset()  # crm and any future role: nothing in the org tree
    return subtree(reps, caller.rep_id)


def reach(caller: Reader, state: StateDep) -> frozenset[str] | None:
    """The rep ids the caller may see; None means everyone (admin)."""
    try:
        return reach_of(caller, state)
    except OrgTreeUnavailableError as err:
        raise HTTPException(503, str(err)) from None


ReachDep = Annotated[frozenset[str] | None, Depends(reach)]


def _visible(rep_id: object, within: frozenset[str] | None) -> bool:
    """Whether what `rep_id` owns is in reach; what no rep owns, only for admins (None)."""
    return within is None or (isinstance(rep_id, str) and rep_id in within)


def _path(example: str, what: str) -> Any:
    return Path(description=what, openapi_examples={"example": {"value": example}})


DealId = Annotated[str, _path("D-1042", "A deal's id.")]
RepId = Annotated[str, _path("R0002", "A rep's id.")]
TeamName = Annotated[str, _path("NA 1", "A team's name.")]
AccountId = Annotated[str, _path("A-2207", "An account's id.")]


def deal_in_reach(deal_id: DealId, within: ReachDep, state: StateDep) -> str:
    state.store()  # 503 without a store
    owner = state.deal_owners.get(deal_id)  # indexed when the store loads
    if owner is None or not _visible(owner, within):
        raise HTTPException(404, f"no deal {deal_id!r}")
    return deal_id


def records_in_reach(
    records: Sequence[Mapping[str, Any]], caller: Principal, state: ServiceState
) -> None:
    """A rep or manager scores only records of their own deals and people: a stored deal
    (its changes and activities) or a rep (their record) outside their reach is 404 naming it,
    as a read would be. The CRM's integration and admins score any record.

    Raises:
        HTTPException: 404 for the first record naming something out of reach.
    """
    if caller.role in ("crm", "admin"):
        return
    try:
        within = reach_of(caller, state)
    except OrgTreeUnavailableError as err:
        raise HTTPException(503, str(err)) from None
    for record in records:
        deal_id, rep_id = record["deal_id"], record.get("rep_id")
        owner = state.deal_owners.get(deal_id)
        if owner is not None and not _visible(owner, within):
            raise HTTPException(404, f"no deal {deal_id!r}")
        if rep_id is not None and not _visible(rep_id, within):
            raise HTTPException(404, f"no rep {rep_id!r} (deal {deal_id!r})")


def rep_in_reach(rep_id: RepId, within: ReachDep, state: StateDep) -> str:
    reps = state.store().reps
    if not (reps["rep_id"] == rep_id).any() or not _visible(rep_id, within):
        raise HTTPException(404, f"no rep {rep_id!r}")
    return rep_id


def team_in_reach(team: TeamName, caller: Manager, within: ReachDep, state: StateDep) -> list[str]:
    """The team's reps the caller may see (404 when none): a team view is scoped like any."""
    reps = state.store().reps
    members = reps.loc[(reps["team"] == team) & (reps["role"] == "rep"), "rep_id"]
    visible = [r for r in members if _visible(r, within)]
    if not visible:
        raise HTTPException(404, f"no team {team!r}")
    return visible


def scoring_reach(caller: ScoringCaller, state: StateDep) -> frozenset[str] | None:
    """`reach`, for a read of a score: the CRM's integration, which scores any record, reads
    any stored score too (its account pages show the churn risk), as an admin does."""
    if caller.role == "crm":
        return None
    return reach(caller, state)


def account_in_reach(
    account_id: AccountId,
    within: Annotated[frozenset[str] | None, Depends(scoring_reach)],
    state: StateDep,
) -> str:
    """An account is in reach when its owner rep is (an unowned one only for admins and the
    CRM's integration)."""
    state.store()  # no store: 503, not an unknown account
    known = account_id in state.account_owners  # indexed when the store loads
    if not known or not _visible(state.account_owners[account_id], within):
        whole = account_id.removesuffix(".0")
        owners = state.account_owners
        if (
            not known
            and whole in owners
            and whole != account_id
            and _visible(owners[whole], within)
        ):
            raise HTTPException(404, f"no account {account_id!r}: ids written as floats were "
                                f"read without the '.0' on import; ask for {whole!r}")  # fmt: skip
        raise HTTPException(404, f"no account {account_id!r}")
    return account_id


DealInReach = Annotated[str, Depends(deal_in_reach)]
AccountInReach = Annotated[str, Depends(account_in_reach)]
RepInReach = Annotated[str, Depends(rep_in_reach)]
TeamInReach = Annotated[list[str], Depends(team_in_reach)]


def forecast_nodes_in_reach(
    reps: pd.DataFrame, within: frozenset[str] | None
) -> dict[str, frozenset[str]] | None:
    """Forecast nodes (level -> names) the caller may see; None means all (admin).

    A node is in reach when every person booking under it is: a rep their own node, a manager
    their team, a director their region, the top of the tree the company. A forecast is scoped
    like the deals it sums, never wider.
    """
    from forecast.revenue import COMPANY

    if within is None:
        return None
    everyone = frozenset(reps["rep_id"])
    visible = {"rep": within & everyone}
    for level in ("team", "region"):
        people = reps.groupby(level)["rep_id"].agg(frozenset)
        visible[level] = frozenset(name for name, ids in people.items() if ids <= within)
    visible["company"] = frozenset({COMPANY}) if everyone <= within else frozenset()
    return visible


Level = Literal["company", "region", "team", "rep"]
QUARTERS_AHEAD = 3  # the data's as-of quarter and the next three can be forecast


def invalid(where: tuple[str | int, ...], message: str, value: object) -> RequestValidationError:
    """A 422 shaped like FastAPI's own (so it matches the documented schema), naming `where`."""
    return RequestValidationError(
        [{"type": "value_error", "loc": where, "msg": message, "input": value}]
    )


def quarter_in_range(
    caller: Reader,
    quarter: Annotated[
        str,
        Path(
            pattern=r"^[0-9]{4}Q[1-4]$",
            description="A calendar quarter: the data's as-of quarter or one of the next three.",
            openapi_examples={"this quarter": {"value": "2026Q4"}},
        ),
    ],
    state: StateDep,
) -> str:
    """The quarter, when it can be forecast (else 404 saying which can)."""
    first = state.store().as_of.to_period("Q")
    allowed = [str(first + n) for n in range(QUARTERS_AHEAD + 1)]
    if quarter not in allowed:  # compared as text: year 0000 matches the pattern, not a Period
        raise HTTPException(
            404,
            f"no forecast for {quarter}: the stored CRM's data ends in {allowed[0]}, so quarters "
            f"{allowed[0]} to {allowed[-1]} can be forecast",
        )
    return quarter


@dataclass(frozen=True)
class ForecastScope:
    """The forecast node a caller asked for, and whose deals it may show (None: everyone's)."""

    level: str
    node: str
    reps: frozenset[str] | None


def forecast_scope(
    caller: Reader,
    within: ReachDep,
    state: StateDep,
    level: Annotated[
        Level,
        Query(description="The level of the node.", openapi_examples={"team": {"value": "team"}}),
    ] = "company",
    node: Annotated[
        str | None,
        Query(
            max_length=200,
            description=(
                "The node's name at that level (a region, team or rep id). Default: the company; "
                "for a caller who cannot see the company, their own widest level (a director's "
                "region, a manager's team, a rep's own node); for a lower level, its one node "
                "in the caller's reach. With several there, 422 asks to name one."
            ),
            openapi_examples={"team": {"value": "NA 1"}},
        ),
    ] = None,
) -> ForecastScope:
    """The node, checked against `forecast_nodes_in_reach` (out of reach: 404, as if unknown)."""
    from forecast.revenue import COMPANY

    state.check_forecastable()  # an orders-only export has no org tree to check the node in
    try:  # an admin sees every node: a store without reps (every deal unassigned) is no bar
        visible = None if within is None else forecast_nodes_in_reach(state.reps(), within)
    except OrgTreeUnavailableError as err:
        raise HTTPException(503, str(err)) from None
    if node is None:
        level, node = _default_node(level, visible or _every_node(state))
    elif level == "company" and node != COMPANY:
        raise HTTPException(404, f"no company {node!r}: the company node is {COMPANY!r}")
    elif visible is not None and node not in visible[level]:
        raise HTTPException(404, f"no {level} {node!r}")
    return ForecastScope(level, node, within)


def _every_node(state: ServiceState) -> dict[str, frozenset[str]] | None:
    """An admin's reach, every node of the org tree (None when the store has no reps table:
    its deals are all unassigned, under the company)."""
    try:
        reps = state.reps()
    except OrgTreeUnavailableError:
        return None
    return forecast_nodes_in_reach(reps, frozenset(reps["rep_id"])) if len(reps) else None


def _default_node(level: Level, visible: dict[str, frozenset[str]] | None) -> tuple[Level, str]:
    """The node meant when none is named (see the `node` parameter's description)."""
    from forecast.revenue import COMPANY

    if level == "company":
        if visible is None or COMPANY in visible["company"]:
            return "company", COMPANY
        # the caller's own widest level: a director's region, a manager's team, a rep's own
        widest: tuple[Level, ...] = ("region", "team", "rep")
        level = next((lv for lv in widest if visible[lv]), "rep")
    names = None if visible is None else sorted(visible[level])
    if names is not None and len(names) == 1:
        return level, names[0]
    if names == []:
        raise HTTPException(404, f"no {level} in your reach")
    shown = "" if names is None else f": {len(names)} in your reach, e.g. {', '.join(names[:5])}"
    raise invalid(("query", "node"), f"name the {level} node{shown}", None)


ForecastQuarter = Annotated[str, Depends(quarter_in_range)]
ForecastNode = Annotated[ForecastScope, Depends(forecast_scope)]


def scenario_in_reach(scenario: ScenarioIn, within: ReachDep, state: StateDep) -> ScenarioIn:
    """Every deal a scenario names, and every added deal's rep, must be in the caller's reach.

    An unknown deal and one out of reach answer the same 404 (naming it), as a read would.
    """
    tables = state.store()
    named = scenario.deal_ids()
    deals = tables.deals.loc[tables.deals["deal_id"].isin(named), ["deal_id", "rep_id"]]
    owner = dict(zip(deals["deal_id"], deals["rep_id"], strict=True))
    for deal_id in named:
        if deal_id not in owner or not _visible(owner[deal_id], within):
            raise HTTPException(404, f"no deal {deal_id!r}")
    known = set(tables.reps["rep_id"])
    for added in scenario.add:
        if added.rep_id not in known or not _visible(added.rep_id, within):
            raise HTTPException(404, f"no rep {added.rep_id!r} (added deal {added.deal_id!r})")
    return scenario


ScenarioInReach = Annotated[ScenarioIn, Depends(scenario_in_reach)]
