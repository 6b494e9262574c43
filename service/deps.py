"""Dependencies, declared once: the state, the caller, what the caller may do and may see.

- a missing or bad key is 401; a role that may not call a function is 403;
- an object outside the caller's place in the org tree is 404, exactly as if it did not exist;
- if the org tree cannot be read, access-checked endpoints answer 503 (never unfiltered).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import pandas as pd
from fastapi import Depends, HTTPException, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader

from forecast.keys import Principal
from service.state import OrgTreeUnavailableError, ServiceState

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="A key from `forecast keys create --role crm|rep|manager|admin [--rep-id R]`.",
)


async def get_state(request: Request) -> ServiceState:  # async: no thread hop per request
    return request.app.state.service


StateDep = Annotated[ServiceState, Depends(get_state)]


async def current_caller(
    request: Request, state: StateDep, key: Annotated[str | None, Security(api_key_header)]
) -> Principal:
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


CallerDep = Annotated[Principal, Depends(current_caller)]


def allow(*roles: str) -> Callable[[Principal], Principal]:
    """A dependency letting only `roles` call the function (403 for the others)."""

    async def check(caller: CallerDep) -> Principal:  # async: no thread hop per request
        if caller.role not in roles:
            raise HTTPException(403, f"role {caller.role!r} may not call this function")
        return caller

    return check


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
    if caller.rep_id not in set(reps["rep_id"]):
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
    return isinstance(rep_id, str) and (within is None or rep_id in within)


def deal_in_reach(deal_id: str, within: ReachDep, state: StateDep) -> str:
    state.store()  # 503 without a store
    owner = state.deal_owners.get(deal_id)  # indexed when the store loads
    if owner is None or not _visible(owner, within):
        raise HTTPException(404, f"no deal {deal_id!r}")
    return deal_id


def rep_in_reach(rep_id: str, within: ReachDep, state: StateDep) -> str:
    reps = state.store().reps
    if not (reps["rep_id"] == rep_id).any() or not _visible(rep_id, within):
        raise HTTPException(404, f"no rep {rep_id!r}")
    return rep_id


def team_in_reach(team: str, caller: Manager, within: ReachDep, state: StateDep) -> list[str]:
    """The team's reps the caller may see (404 when none): a team view is scoped like any."""
    reps = state.store().reps
    members = reps.loc[(reps["team"] == team) & (reps["role"] == "rep"), "rep_id"]
    visible = [r for r in members if _visible(r, within)]
    if not visible:
        raise HTTPException(404, f"no team {team!r}")
    return visible


DealInReach = Annotated[str, Depends(deal_in_reach)]
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
    from forecast.simulate import COMPANY

    if within is None:
        return None
    everyone = frozenset(reps["rep_id"])
    visible = {"rep": within & everyone}
    for level in ("team", "region"):
        people = reps.groupby(level)["rep_id"].agg(frozenset)
        visible[level] = frozenset(name for name, ids in people.items() if ids <= within)
    visible["company"] = frozenset({COMPANY}) if everyone <= within else frozenset()
    return visible
