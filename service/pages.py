"""The managers' dashboard: server-rendered pages over the same state and access rules as `/v1`.

Sign-in takes an API key once and opens a server-side session (an HttpOnly, SameSite=Strict,
Secure cookie holding a random token; the database keeps only its hash). Every page then asks
`reach_of(principal, state)`, the same function the API's `reach` dependency calls, so a page
shows exactly what the API would answer: a rep their own deals, a manager their subtree, and
anything else is 404 as if it did not exist.

Routes stay thin: the numbers come from `forecast.*` and `ServiceState`; the figures from
`service.charts`; what is slow (scoring every open deal or billed account) is cached per
champion version and store load.
"""

from __future__ import annotations

import secrets
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from forecast.data.contract import OPEN_STAGES
from forecast.explain.account_scoring import revenue_at_risk_totals
from service import charts
from service.deps import StateDep, _visible, forecast_nodes_in_reach, reach_of
from service.keys import Principal, verify_key
from service.listing import csv_text, page_of
from service.page_guard import FORM_COOKIE, TOKEN_FIELD, PageHeaders, form_token, post_refusal
from service.sessions import COOKIE, close_session, open_session, session_principal
from service.state import (
    CHURN_MODEL,
    DEAL_MODEL,
    UNAVAILABLE,
    OrgTreeUnavailableError,
    ServiceState,
    status_of,
)

HERE = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
READERS = frozenset({"rep", "manager", "admin"})  # as the API's `Reader`
LEVELS = ("company", "region", "team", "rep")
# the menu: page, label, and the model whose data it needs (None: any store)
PAGES = (
    ("forecast", "Forecast", DEAL_MODEL),
    ("pipeline", "Pipeline", DEAL_MODEL),
    ("churn", "Churn", CHURN_MODEL),
    ("coaching", "Coaching", DEAL_MODEL),  # closed deals: funnels and win rates
    ("models", "Models", None),
)


def _menu(state: ServiceState) -> list[tuple[str, str]]:
    """The pages the stored data can fill: a page of a model it cannot train leads nowhere
    (an order export has no Forecast, Pipeline or Coaching), nor does a forecast of deals
    without amounts."""
    from forecast.data.doctor import no_forecast

    unsupported = state.unsupported()
    no_bookings = no_forecast(state.not_in_data) is not None
    return [
        (key, label)
        for key, label, model in PAGES
        if model not in unsupported and not (key == "forecast" and no_bookings)
    ]


def _landing(state: ServiceState) -> str:
    """Where a signed-in manager starts: the first page the stored data can fill."""
    return f"/dashboard/{_menu(state)[0][0]}"


router = APIRouter(prefix="/dashboard", include_in_schema=False)


class SignInRequired(Exception):  # noqa: N818 - a redirect, not an error
    """No valid session: the handler sends the browser to the sign-in form."""

    def __init__(self, path: str):
        self.path = path


class PageError(Exception):
    """A page-level answer other than 200 (404 out of reach, 503 nothing to show...)."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message


# --- who is looking ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """The signed-in caller and the rep ids they may see (None: everyone)."""

    principal: Principal
    within: frozenset[str] | None
    state: ServiceState
    cache: ScoreCache

    def sees(self, rep_id: object) -> bool:
        return _visible(rep_id, self.within)


def viewer(request: Request, state: StateDep) -> Viewer:
    principal = session_principal(state.engine, request.cookies.get(COOKIE))
    if principal is None or principal.role not in READERS:
        raise SignInRequired(request.url.path)
    request.state.caller = principal  # read by the audit log, as for the API
    try:
        within = reach_of(principal, state)
    except OrgTreeUnavailableError as err:
        raise PageError(503, str(err)) from None
    return Viewer(principal, within, state, request.app.state.dashboard_cache)


ViewerDep = Annotated[Viewer, Depends(viewer)]


def _render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    who: Viewer | None = context.get("viewer")
    # an error page is rendered without a viewer: the session still shows the way back
    principal = who.principal if who else _signed_in(request)
    secret = request.cookies.get(COOKIE) if principal is not None else _form_secret(request)
    state: ServiceState = request.app.state.service
    menu = _menu(state)
    base = {
        "signed_in": principal is not None,
        "principal": principal,
        "csrf": form_token(secret) if secret else "",
        # a page of a model the stored data cannot train leads nowhere: not in the menu
        "pages": menu,
        "landing": f"/dashboard/{menu[0][0]}",
        # a champion promoted over the gate's bar is said on every page its scores reach
        "model_warnings": [
            f"{serving.forced} See Models."
            for serving in state.models.values()
            if serving.forced and principal is not None
        ],
    }
    return TEMPLATES.TemplateResponse(request, name, {**base, **context}, status_code=status)


def _signed_in(request: Request) -> Principal | None:
    """The session's caller, when a page is rendered outside a signed-in route."""
    principal = session_principal(request.app.state.service.engine, request.cookies.get(COOKIE))
    return principal if principal is not None and principal.role in READERS else None


def _form_secret(request: Request) -> str:
    """The sign-in form's cookie secret: the browser's, or a new one (set by `_keep_secret`)."""
    secret = request.cookies.get(FORM_COOKIE)
    if not secret:
        secret = request.state.form_secret = secrets.token_urlsafe(24)
    return secret


def _keep_secret(request: Request, response: Response) -> Response:
    new = getattr(request.state, "form_secret", None)
    if new:  # HttpOnly: no script, on any port of this host, can read it
        response.set_cookie(FORM_COOKIE, new, path="/dashboard", httponly=True,
                            samesite="strict", secure=True)  # fmt: skip
    return response


async def _form(request: Request, secret: str | None) -> dict[str, str]:
    """An urlencoded form body (the only kind these pages post), first value of each field,
    once `page_guard` says it came from this dashboard's own page holding `secret`.

    Raises:
        PageError: 403, from another origin or without the page's form token.
    """
    body = (await request.body()).decode("utf-8", errors="replace")
    form = {k: v[0].strip() for k, v in parse_qs(body, keep_blank_values=True).items()}
    own = f"{request.url.scheme}://{request.url.netloc}"
    refusal = post_refusal(request.headers, own, secret, form.get(TOKEN_FIELD))
    if refusal is not None:
        raise PageError(403, f"Not done: {refusal}. Reload the page and try again.")
    return form


def _safe_next(path: str | None, state: ServiceState) -> str:
    # only our own pages: a crafted link cannot bounce a fresh sign-in elsewhere
    if path and path.startswith("/dashboard/") and "//" not in path and "\\" not in path:
        return path
    return _landing(state)


# --- sign-in --------------------------------------------------------------------------------------


@router.get("")
@router.get("/")
def home(state: StateDep) -> RedirectResponse:
    return RedirectResponse(_landing(state), status_code=303)


@router.get("/sign-in")
def sign_in_form(request: Request, state: StateDep, next: str | None = None) -> Response:
    page = _render(request, "sign_in.html", {"next": _safe_next(next, state), "error": None})
    return _keep_secret(request, page)


@router.post("/sign-in")
async def sign_in(request: Request, state: StateDep) -> Response:
    form = await _form(request, request.cookies.get(FORM_COOKIE))
    target = _safe_next(form.get("next"), state)
    principal = await run_in_threadpool(verify_key, state.engine, form.get("api_key"))
    if principal is None:
        error = "That key is not valid (unknown, mistyped or revoked)."
        return _render(request, "sign_in.html", {"next": target, "error": error}, 401)
    if principal.role not in READERS:
        error = f"A {principal.role} key cannot sign in: use a rep, manager or admin key."
        return _render(request, "sign_in.html", {"next": target, "error": error}, 403)
    hours = state.settings.dashboard_session_hours
    token = await run_in_threadpool(open_session, state.engine, principal, hours=hours)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(hours * 3600),
        path="/dashboard",
        httponly=True,  # no script reads it
        samesite="strict",  # no other site's page sends it (the forms need no CSRF token)
        secure=True,  # Chromium keeps a Secure cookie from http://127.0.0.1 (browser tests)
    )
    return response


@router.post("/sign-out")
async def sign_out(request: Request, state: StateDep) -> RedirectResponse:
    await _form(request, request.cookies.get(COOKIE))
    await run_in_threadpool(close_session, state.engine, request.cookies.get(COOKIE))
    response = RedirectResponse("/dashboard/sign-in", status_code=303)
    response.delete_cookie(COOKIE, path="/dashboard", secure=True, httponly=True, samesite="strict")
    return response


# --- cached scores --------------------------------------------------------------------------------


class ScoreCache:
    """The pipeline table built from the stored scores, per champion version and store load."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple, Any] = {}

    def get(self, key: tuple, make: Callable[[], Any]) -> Any:
        with self._lock:  # one computation per key, even under concurrent page loads
            if key not in self._values:
                self._values = {k: v for k, v in self._values.items() if k[0] != key[0]}
                self._values[key] = make()
            return self._values[key]


def _rep_names(state: ServiceState) -> dict[str, str]:
    reps = state.store().reps
    names = reps["name"] if "name" in reps else reps["rep_id"]
    return dict(zip(reps["rep_id"], names.fillna(reps["rep_id"]), strict=True))


def _known(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row for a page: a missing value is None (shown as a dash), never NaN."""
    return {k: None if _missing(v) else v for k, v in row.items()}


def _missing(value: object) -> bool:
    return value is None or value is pd.NaT or (isinstance(value, float) and value != value)


def _total(values: Iterable[float | None]) -> float | None:
    """The sum of the known values; None when none is known (deals without amounts)."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _deal_rows(who: Viewer) -> list[dict[str, Any]]:
    """Every open deal with its score, reasons and actions, revenue at stake first."""
    state = who.state
    serving, tables = state.champion(DEAL_MODEL), state.store()

    def make() -> list[dict[str, Any]]:
        deals = tables.deals.set_index("deal_id")
        team = tables.reps.set_index("rep_id")["team"]
        reps = _rep_names(state)
        accounts = _names(tables.accounts, "account_id")
        products = _names(tables.products, "product_id")
        rows = []
        for s in state.deal_scores(serving).values():
            deal: dict[str, Any] = {
                k: None if pd.isna(v) else v for k, v in deals.loc[s.deal_id].items()
            }
            amount = float(deal["amount"]) if deal["amount"] is not None else None
            rep, account, product = deal["rep_id"], deal["account_id"], deal["product_id"]
            rows.append(
                {
                    "deal_id": s.deal_id,
                    "rep_id": rep,
                    "rep_name": reps.get(rep, rep),
                    "team": team.get(rep),
                    "account_id": account,
                    "account_name": accounts.get(account, account),
                    "product_name": products.get(product, product),
                    "stage": str(deal["stage"]),
                    "amount": amount,
                    "expected_close": deal["expected_close"],
                    "probability": s.probability,
                    "grade": s.grade,
                    "trend_points": s.trend_points,
                    # revenue at stake: what the forecast counts on from this deal
                    "at_stake": None if amount is None else amount * s.probability,
                    "reasons": s.explanation.reasons,
                    "recommendations": s.explanation.recommendations,
                }
            )
        # deals without an amount (an export without the column) last, likeliest first
        return sorted(rows, key=lambda d: (-(d["at_stake"] or 0.0), -d["probability"]))

    return who.cache.get(("deals", serving.version, state.store_generation), make)


def _names(table: pd.DataFrame, key: str) -> dict[str, str]:
    """Id -> display name of accounts or products (none where the export has no names)."""
    if "name" not in table:
        return {}
    named = table[table["name"].notna()]
    return dict(zip(named[key], named["name"], strict=True))


def _account_rows(who: Viewer) -> list[dict[str, Any]]:
    """Every scored account's churn risk with its owner, team and region, revenue at risk
    first (the library's order)."""
    state = who.state
    serving, tables = state.champion(CHURN_MODEL), state.store()

    def make() -> list[dict[str, Any]]:
        reps = tables.reps.set_index("rep_id")
        names, accounts = _rep_names(state), _names(tables.accounts, "account_id")
        rows = []
        for s in state.account_scores(serving).values():
            owner = s.owner_rep_id
            rows.append(
                {
                    "account_id": s.account_id,
                    "account_name": accounts.get(s.account_id, s.account_id),
                    "rep_id": owner,
                    "rep_name": names.get(owner, owner) if owner else None,
                    "team": reps["team"].get(owner) if owner in reps.index else None,
                    "region": reps["region"].get(owner) if owner in reps.index else None,
                    "segment": s.segment,
                    "arr": s.arr,
                    "churn_probability": s.churn_probability,
                    "revenue_at_risk": s.revenue_at_risk,
                    "reasons": s.explanation.reasons,
                    "recommendations": s.explanation.recommendations,
                    "score": s,
                }
            )
        return rows

    return who.cache.get(("accounts", serving.version, state.store_generation), make)


# --- forecast -------------------------------------------------------------------------------------


def _start_node(visible: dict[str, frozenset[str]] | None) -> tuple[str, str] | None:
    """The widest node the viewer may see: company, else a region, a team, their own rep node."""
    from forecast.revenue import COMPANY

    if visible is None:
        return ("company", COMPANY)
    for level in LEVELS:
        names = sorted(visible.get(level, ()))
        if names:
            return (level, names[0])
    return None


def _may_see(visible: dict[str, frozenset[str]] | None, level: str, node: str) -> bool:
    return visible is None or node in visible.get(level, frozenset())


def _quarter_view(forecast, level: str, node: str) -> dict[str, Any]:
    rows = forecast.nodes[(forecast.nodes["level"] == level) & (forecast.nodes["node"] == node)]
    if rows.empty:
        return {"quarter": forecast.quarter, "missing": True}
    row = rows.iloc[0]
    draws = forecast.samples(level, node)
    p25, p75 = np.percentile(draws, [25, 75])
    target = row["target"]
    return {
        "quarter": forecast.quarter,
        "missing": False,
        "p10": float(row["p10"]),
        "p25": float(p25),
        "p50": float(row["p50"]),
        "p75": float(p75),
        "p90": float(row["p90"]),
        "mean": float(row["mean"]),
        "target": float(target) if pd.notna(target) else None,
        "p_reach": float(row["p_reach_target"]) if pd.notna(row["p_reach_target"]) else None,
        "closed": float(row["closed"]),
        "open": float(row["open"]),
        "new": float(row["new"]),
        "recurring": float(row["recurring"]),
        "at_risk": float(row["revenue_at_risk"]) if "revenue_at_risk" in row else None,
        "renewals_from": forecast.inputs.renewals_source,
        "source": str(row["source"]),
        "simulation_mean": float(row["simulation_mean"]),
    }


@dataclass(frozen=True)
class ScenarioAsk:
    """What the scenario form asked for; `problem` says what in it cannot be read."""

    remove: str = ""
    slip: str = ""
    slip_days: int = 0
    problem: str | None = None

    @property
    def empty(self) -> bool:
        return not self.remove and not (self.slip and self.slip_days)


def _scenario(ask: ScenarioAsk, who: Viewer):
    """The library's Scenario, after the same reach check as a deal page (404 words)."""
    from forecast.revenue import Scenario

    deals = who.state.store().deals.set_index("deal_id")["rep_id"]
    for deal_id in filter(None, (ask.remove, ask.slip)):
        if deal_id not in deals.index or not who.sees(deals[deal_id]):
            raise PageError(404, f"no deal {deal_id!r}")
    slip = {ask.slip: ask.slip_days} if ask.slip and ask.slip_days else {}
    remove = (ask.remove,) if ask.remove else ()
    return Scenario(name="what if", remove=remove, slip_days=slip)


def _forecast_page(
    request: Request, who: Viewer, level: str | None, node: str | None, ask: ScenarioAsk
) -> Response:
    state = who.state
    tables = state.store()
    state.check_forecastable()  # what the data can never give says so first (409)
    visible = forecast_nodes_in_reach(state.reps(), who.within)
    if level is None or node is None:
        start = _start_node(visible)
        if start is None:
            raise PageError(404, "no part of the org tree is in your reach")
        level, node = start
    if level not in LEVELS or not _may_see(visible, level, node):
        raise PageError(404, f"no {level} {node!r}")
    quarter = tables.as_of.to_period("Q")
    quarters = [str(quarter), str(quarter + 1)]
    scenario, error = None, ask.problem
    if not ask.empty and error is None:
        try:
            scenario = _scenario(ask, who)
        except PageError as err:
            error = err.message
    base = [state.quarter_forecast(q) for q in quarters]
    nodes = base[0].nodes
    if not ((nodes["level"] == level) & (nodes["node"] == node)).any():
        raise PageError(404, f"no {level} {node!r}")  # as the API: unknown is not empty
    shown = base
    if scenario is not None:
        try:
            shown = [state.scenario_forecasts(q, scenario, level, node)[1] for q in quarters]
        except (KeyError, ValueError) as err:
            error, scenario = str(err).strip("'\""), None
    views = [_quarter_view(f, level, node) for f in shown]
    before = [_quarter_view(f, level, node) for f in base] if scenario is not None else None
    current = shown[0]
    nodes = current.nodes
    child_level = LEVELS[LEVELS.index(level) + 1] if level != "rep" else None
    children = []
    if child_level:
        kids = nodes[(nodes["level"] == child_level) & (nodes["parent"] == node)]
        for _, kid in kids.sort_values("p50", ascending=False).iterrows():
            if _may_see(visible, child_level, kid["node"]):
                children.append(kid.to_dict())
    trail = []
    here = nodes[(nodes["level"] == level) & (nodes["node"] == node)]
    step_level, step_node = level, node
    while not here.empty:
        trail.append((step_level, step_node, _may_see(visible, step_level, step_node)))
        parent = here.iloc[0]["parent"]
        if step_level == "company" or not isinstance(parent, str):
            break
        step_level = LEVELS[LEVELS.index(step_level) - 1]
        step_node = parent
        here = nodes[(nodes["level"] == step_level) & (nodes["node"] == step_node)]
    trail = trail or [(level, node, True)]  # a node with nothing this quarter: still named
    drivers = current.drivers[
        (current.drivers["level"] == level) & (current.drivers["node"] == node)
    ]
    charted = [v for v in views if not v["missing"]]
    context = {
        "viewer": who,
        "page": "forecast",
        "level": level,
        "node": node,
        "names": _rep_names(state),
        "views": views,
        "before": before,
        "fan": charts.fan_chart(charted),
        "parts": charts.decomposition_chart(charted),
        "child_level": child_level,
        "children": children,
        "trail": list(reversed(trail)),
        "drivers": drivers.to_dict(orient="records"),
        "ask": ask,
        "scenario": scenario,
        "error": error,
        "as_of": tables.as_of,
    }
    return _render(request, "forecast.html", context, 200 if error is None else 422)


@router.get("/forecast")
def forecast_page(
    request: Request, who: ViewerDep, level: str | None = None, node: str | None = None
) -> Response:
    return _forecast_page(request, who, level, node, ScenarioAsk())


@router.post("/forecast")
async def forecast_scenario(request: Request, who: ViewerDep) -> Response:
    form = await _form(request, request.cookies.get(COOKIE))
    remove, slip, days_text = form.get("remove", ""), form.get("slip", ""), form.get("slip_days")
    problem, days = None, 0
    try:
        days = int(days_text or 0)
    except ValueError:
        problem = f"by days: {days_text!r} is not a whole number of days (e.g. 60 or -14)"
    if slip and not days and problem is None:
        problem = f"by days: how many days should {slip} slip? (e.g. 60)"
    ask = ScenarioAsk(remove, slip, days, problem)
    level, node = form.get("level") or None, form.get("node") or None
    # the simulation is CPU work: off the event loop, like the sync pages, and in the
    # process's turn of heavy work (as the API's scenarios)

    def page() -> Response:
        try:
            with who.state.heavy.turn(who.principal.key_id):
                return _forecast_page(request, who, level, node, ask)
        except HTTPException as busy:  # 429 or 503 from the turn: said on a page
            raise PageError(busy.status_code, str(busy.detail)) from None

    return await run_in_threadpool(page)


# --- pipeline and deals ---------------------------------------------------------------------------


DEAL_SORTS = {
    "at_stake": "revenue at stake", "probability": "win probability", "amount": "amount",
    "expected_close": "expected close", "trend_points": "trend", "account_name": "account",
    "rep_name": "rep", "stage": "stage", "grade": "grade", "deal_id": "deal",
}  # fmt: skip
DEAL_CSV = {
    "deal_id": lambda d: d["deal_id"],
    "account": lambda d: d["account_name"],
    "product": lambda d: d["product_name"],
    "rep": lambda d: d["rep_name"],
    "team": lambda d: d["team"],
    "stage": lambda d: d["stage"],
    "amount": lambda d: d["amount"],
    "expected_close": lambda d: d["expected_close"],
    "win_probability": lambda d: d["probability"],
    "grade": lambda d: d["grade"],
    "trend_points_per_week": lambda d: d["trend_points"],
    "revenue_at_stake": lambda d: d["at_stake"],
    "reasons": lambda d: _reasons_text(d["reasons"]),
    "top_action": lambda d: d["recommendations"][0].text if d["recommendations"] else None,
}


def _reasons_text(reasons) -> str:
    return "; ".join(f"{r.direction}: {r.text}" for r in reasons)


@dataclass(frozen=True)
class Filter:
    """A select on a list page: its query name, the row field it matches, its label."""

    query: str
    field: str
    label: str
    fixed: tuple[str, ...] | None = None  # the values in this order (else those in the rows)


@dataclass(frozen=True)
class ListPage:
    """A long list a manager works through: its rows, filters, sorts and CSV columns."""

    name: str
    rows: Callable[[Viewer], list[dict[str, Any]]]
    filters: tuple[Filter, ...]
    sorts: dict[str, str]
    csv: Mapping[str, Callable[[Mapping[str, Any]], Any]]

    def shown(self, who: Viewer, params: Mapping[str, str]) -> dict[str, Any]:
        """The page's rows for `params` (filters, sort, order, page) and what the form shows."""
        mine = [r for r in self.rows(who) if who.sees(r["rep_id"])]
        options = {}
        for f in self.filters:
            present = {r[f.field] for r in mine if r[f.field]}
            options[f.field] = [v for v in f.fixed if v in present] if f.fixed else sorted(present)
        chosen = {
            f.field: v if (v := params.get(f.query, "")) in options[f.field] else ""
            for f in self.filters
        }
        try:
            page = int(params.get("page", "1"))
        except ValueError:
            page = 1
        listing = page_of(
            mine,
            filters=chosen,
            sort=params.get("sort", ""),
            sortable=list(self.sorts),
            descending=params.get("order") != "asc",
            page=page,
        )
        hidden = {f.query: chosen[f.field] for f in self.filters}
        order = "desc" if listing.descending else "asc"
        return {
            "listing": listing,
            "options": options,
            "chosen": chosen,
            "filters": self.filters,
            "hidden": hidden,
            "sorts": self.sorts,
            "query": _query_maker({**hidden, "sort": listing.sort, "order": order}),
            "path": f"/dashboard/{self.name}",
        }

    def csv_response(self, who: Viewer, params: Mapping[str, str]) -> Response:
        """Every row the page's filters keep, in its order, as a CSV download."""
        kept = self.shown(who, params)["listing"].kept
        as_of = who.state.store().as_of
        return Response(
            csv_text(kept, self.csv),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{self.name}-{as_of:%Y-%m-%d}.csv"'
            },
        )


def _query_maker(base: dict[str, str]) -> Callable[..., str]:
    """`query(page=2)`: the page's query string with some values changed (empty ones left out)."""
    from urllib.parse import urlencode

    def query(**changes: object) -> str:
        values = {**base, **{k: str(v) for k, v in changes.items()}}
        return urlencode({k: v for k, v in values.items() if v})

    return query


PIPELINE = ListPage(
    "pipeline",
    _deal_rows,
    (
        Filter("team", "team", "team"),
        Filter("rep", "rep_id", "rep"),
        Filter("stage", "stage", "stage", fixed=OPEN_STAGES),
        Filter("grade", "grade", "grade", fixed=("A", "B", "C", "D")),
    ),
    DEAL_SORTS,
    DEAL_CSV,
)


@router.get("/pipeline")
def pipeline_page(request: Request, who: ViewerDep) -> Response:
    shown = PIPELINE.shown(who, request.query_params)
    context = {
        "viewer": who,
        "page": "pipeline",
        **shown,
        "at_stake": _total(d["at_stake"] for d in shown["listing"].kept),
        "names": _rep_names(who.state),
        "as_of": who.state.store().as_of,
        "no_actions": who.state.no_deal_actions(who.state.champion(DEAL_MODEL)),
    }
    return _render(request, "pipeline.html", context)


@router.get("/pipeline.csv")
def pipeline_csv(request: Request, who: ViewerDep) -> Response:
    return PIPELINE.csv_response(who, request.query_params)


@router.get("/deals/{deal_id}")
def deal_page(request: Request, deal_id: str, who: ViewerDep) -> Response:
    tables = who.state.store()
    owners = tables.deals.loc[tables.deals["deal_id"] == deal_id, "rep_id"]
    if owners.empty or not who.sees(owners.iloc[0]):
        raise PageError(404, f"no deal {deal_id!r}")  # another rep's deal: as if it did not exist
    score = next((d for d in _deal_rows(who) if d["deal_id"] == deal_id), None)
    deal = _known(tables.deals[tables.deals["deal_id"] == deal_id].iloc[0].to_dict())
    history = tables.deal_history[tables.deal_history["deal_id"] == deal_id]
    context = {
        "viewer": who,
        "page": "pipeline",
        "deal": deal,
        "account_name": _names(tables.accounts, "account_id").get(
            deal["account_id"], deal["account_id"]
        ),
        "score": score,
        "history": [_known(r) for r in history.sort_values("changed_at").to_dict("records")],
        "names": _rep_names(who.state),
        "no_actions": who.state.no_deal_actions(who.state.champion(DEAL_MODEL)),
    }
    return _render(request, "deal.html", context)


# --- churn ----------------------------------------------------------------------------------------


ACCOUNT_SORTS = {
    "revenue_at_risk": "revenue at risk", "churn_probability": "churn probability",
    "arr": "yearly revenue (ARR or spend)", "account_name": "account", "rep_name": "owner",
    "segment": "segment",
}  # fmt: skip
ACCOUNT_CSV = {
    "account_id": lambda a: a["account_id"],
    "account": lambda a: a["account_name"],
    "owner": lambda a: a["rep_name"],
    "team": lambda a: a["team"],
    "region": lambda a: a["region"],
    "segment": lambda a: a["segment"],
    "arr": lambda a: a["arr"],
    "churn_probability": lambda a: a["churn_probability"],
    "revenue_at_risk": lambda a: a["revenue_at_risk"],
    "drivers": lambda a: _reasons_text(a["reasons"]),
    "top_action": lambda a: a["recommendations"][0].text if a["recommendations"] else None,
}
CHURN = ListPage(
    "churn",
    _account_rows,
    (
        Filter("team", "team", "team"),
        Filter("rep", "rep_id", "owner"),
        Filter("segment", "segment", "segment"),
    ),
    ACCOUNT_SORTS,
    ACCOUNT_CSV,
)


@router.get("/churn")
def churn_page(request: Request, who: ViewerDep) -> Response:
    shown = CHURN.shown(who, request.query_params)
    kept = shown["listing"].kept
    tables = who.state.store()
    totals = {
        level: revenue_at_risk_totals([a["score"] for a in kept], tables, level)
        for level in ("region", "team", "rep")
    }
    context = {
        "viewer": who,
        "page": "churn",
        **shown,
        "at_risk": sum(a["revenue_at_risk"] for a in kept),
        # a level no account has an owner at (a retailer without a sales team) says nothing
        "totals": {
            level: rows
            for level, rows in totals.items()
            if any(row["name"] != "(none)" for row in rows)
        },
        "names": _rep_names(who.state),
        "as_of": who.state.store().as_of,
        "churn": who.state.champion(CHURN_MODEL).churn,
    }
    return _render(request, "churn.html", context)


@router.get("/churn.csv")
def churn_csv(request: Request, who: ViewerDep) -> Response:
    return CHURN.csv_response(who, request.query_params)


# --- coaching -------------------------------------------------------------------------------------


def _teams_in_reach(who: Viewer) -> list[str]:
    reps = who.state.store().reps
    sellers = reps[reps["role"] == "rep"]
    return sorted(
        {t for r, t in zip(sellers["rep_id"], sellers["team"], strict=True) if who.sees(r)}
    )


@router.get("/coaching")
def coaching_page(request: Request, who: ViewerDep, team: str = "") -> Response:
    from forecast.coaching import coach_team

    if who.principal.role == "rep":
        target = f"/dashboard/coaching/reps/{quote(str(who.principal.rep_id))}"
        return RedirectResponse(target, status_code=303)
    teams = _teams_in_reach(who)
    if not teams:
        raise PageError(404, "no team in your reach")
    team = team or teams[0]
    if team not in teams:
        raise PageError(404, f"no team {team!r}")
    views = [_peer_safe(v, who) for v in coach_team(who.state.store(), team) if who.sees(v.rep_id)]
    context = {"viewer": who, "page": "coaching", "teams": teams, "team": team, "views": views}
    return _render(request, "coaching_team.html", context)


def _peer_safe(view, who: Viewer):
    """As the API's coaching: group figures that would reveal someone out of reach withheld."""
    from forecast.coaching import withhold_small_groups

    settings = who.state.settings
    return withhold_small_groups(view, who.within, min_others=settings.coaching_min_others)


def _funnel_shares(funnel: pd.DataFrame, who: str) -> list[float]:
    """Share of the deals that entered the first stage which reached each stage."""
    deals = funnel[f"{who}_deals"].to_numpy(dtype=float)
    first = deals[0] if len(deals) and deals[0] > 0 else np.nan
    return [float(v) if np.isfinite(v) else 0.0 for v in deals / first]


@router.get("/coaching/reps/{rep_id}")
def coaching_rep_page(request: Request, rep_id: str, who: ViewerDep) -> Response:
    from forecast.coaching import coach_rep

    reps = who.state.store().reps
    if not (reps["rep_id"] == rep_id).any() or not who.sees(rep_id):
        raise PageError(404, f"no rep {rep_id!r}")
    view = _peer_safe(coach_rep(who.state.store(), rep_id), who)
    stages = list(view.funnel.index)
    team = _funnel_shares(view.funnel, "team") if "team_deals" in view.funnel else None
    context = {
        "viewer": who,
        "page": "coaching",
        "view": view,
        "funnel_rows": view.funnel.reset_index().to_dict(orient="records"),
        "team_shown": team is not None,
        "funnel": charts.funnel_chart(stages, _funnel_shares(view.funnel, "rep"), team),
    }
    return _render(request, "coaching_rep.html", context)


# --- models ---------------------------------------------------------------------------------------


@router.get("/models")
def models_page(request: Request, who: ViewerDep) -> Response:
    from service.model_health import live_accuracy, model_report

    state = who.state
    models = []
    for name in sorted(set(state.models) | set(state.problems)):
        serving = state.models.get(name)
        uri = state.settings.mlflow_tracking_uri
        report = model_report(name, serving.version, tracking_uri=uri) if serving else None
        live = None
        if serving is not None and name == DEAL_MODEL and state.tables is not None:
            live = live_accuracy(state.engine, state.tables, name)
        models.append(
            {
                "name": name,
                "serving": serving,
                "problem": None if serving else state.detail(name),
                "report": report,
                "live": live,
            }
        )
    return _render(request, "models.html", {"viewer": who, "page": "models", "models": models})


@router.get("/models/{name}/reliability.png")
def reliability_png(name: str, who: ViewerDep) -> Response:
    from service.model_health import model_report, reliability_image

    serving = who.state.models.get(name)
    if serving is None:
        raise PageError(404, f"no serving model {name!r}")
    uri = who.state.settings.mlflow_tracking_uri
    run_id = model_report(name, serving.version, tracking_uri=uri).run_id
    with tempfile.TemporaryDirectory(prefix="forecast-reliability-") as folder:
        image = reliability_image(run_id, Path(folder), tracking_uri=uri) if run_id else None
        content = image.read_bytes() if image is not None else None
    if content is None:
        raise PageError(404, f"{name} v{serving.version}: its run logged no reliability diagram")
    return Response(content, media_type="image/png")


# --- assets and wiring ----------------------------------------------------------------------------


def plotly_js() -> Path:
    """plotly.min.js as the installed `plotly` package ships it (served here, never a CDN)."""
    import plotly

    return Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


MEDIA_TYPES = {".css": "text/css", ".js": "text/javascript", ".png": "image/png"}


@lru_cache(maxsize=16)
def _asset(path: Path) -> bytes:
    return path.read_bytes()


def _asset_response(path: Path) -> Response:
    # whole bytes, not a streamed file: the service's request middleware replays the body and
    # then reports a disconnect, which cuts a streaming response (FileResponse, StaticFiles) short
    headers = {"Cache-Control": "public, max-age=3600"}
    media_type = MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    return Response(_asset(path), media_type=media_type, headers=headers)


@router.get("/assets/plotly.min.js")
def plotly_asset() -> Response:
    return _asset_response(plotly_js())


STATIC = {p.name: p for p in (HERE / "static").iterdir() if p.is_file()}


@router.get("/static/{name}")
def static_asset(name: str) -> Response:
    if name not in STATIC:  # only the files shipped in service/static, never a path
        raise PageError(404, f"no file {name!r}")
    return _asset_response(STATIC[name])


def install_dashboard(app: FastAPI) -> None:
    """The pages (with their static files) and their answers for sign-in, 404 and 503."""
    app.state.dashboard_cache = ScoreCache()
    app.include_router(router)
    app.add_middleware(PageHeaders)

    async def to_sign_in(request: Request, err: Exception) -> Response:
        assert isinstance(err, SignInRequired)  # registered for it only
        state = request.app.state.service
        target = f"/dashboard/sign-in?next={quote(_safe_next(err.path, state))}"
        response = RedirectResponse(target, status_code=303)
        if request.cookies.get(COOKIE):  # stale or revoked: forget it
            response.delete_cookie(COOKIE, path="/dashboard")
        return response

    async def page_error(request: Request, err: Exception) -> Response:
        assert isinstance(err, PageError)  # registered for it only
        return _render(request, "error.html", {"message": err.message}, err.status)

    async def unavailable(request: Request, err: Exception) -> Response:
        detail, headers = request.app.state.service.unavailable(err)
        if request.url.path.startswith("/dashboard"):
            page = _render(request, "error.html", {"message": detail}, status_of(err))
            page.headers.update(headers)
            return page
        return JSONResponse({"detail": detail}, status_code=status_of(err), headers=headers)

    app.add_exception_handler(SignInRequired, to_sign_in)
    app.add_exception_handler(PageError, page_error)
    for error in UNAVAILABLE:
        app.add_exception_handler(error, unavailable)
