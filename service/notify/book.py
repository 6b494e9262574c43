"""What one run of digests and alerts reads, computed once with the calls the API makes.

The quarter's forecast now and as known a week earlier (point in time: nothing recorded after
that moment is read), every open deal's score with its reasons and trend, every account's
churn risk now and a week earlier, and every rep's coaching. Each node's digest and alerts are
then a slice of this, limited to the people under the node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import pandas as pd

from forecast.revenue.tree import COMPANY
from service.deps import subtree
from service.notify.message import dashboard_page
from service.state import CHURN_MODEL, DEAL_MODEL, ServiceState

if TYPE_CHECKING:
    from forecast.coaching import RepCoaching
    from forecast.explain.account_scoring import AccountScore
    from forecast.explain.scoring import DealScore
    from forecast.revenue import QuarterForecast

WEEK = pd.Timedelta(days=7)


@dataclass(frozen=True)
class Node:
    """A node of the org tree: who books under it, and who heads it (None: nobody's reach
    covers it all, as in an export whose teams have no manager)."""

    level: str
    name: str
    members: frozenset[str]
    head: str | None

    @property
    def label(self) -> str:
        return "the company" if self.level == COMPANY else f"{self.level} {self.name}"


@dataclass(frozen=True)
class Book:
    as_of: pd.Timestamp
    quarter: str
    reps: pd.DataFrame  # the org tree
    deals: pd.DataFrame  # deal_id, account_id, rep_id, amount (every deal)
    account_names: dict[str, str]
    now: QuarterForecast
    week_ago: QuarterForecast
    scores: dict[str, DealScore]
    churn: list[AccountScore]
    churn_week_ago: dict[str, float]  # account id -> churn probability a week earlier
    coaching: dict[str, RepCoaching]
    dashboard: str  # the dashboard's address, for links

    @cached_property
    def _names(self) -> dict[str, object]:
        return dict(zip(self.reps["rep_id"], self.reps["name"], strict=True))

    @cached_property
    def account_of(self) -> dict[str, str]:
        """Deal id -> account id (every digest line names the account: looked up, not scanned)."""
        return dict(zip(self.deals["deal_id"], self.deals["account_id"], strict=True))  # NaN: none

    def rep_name(self, rep_id: str) -> str:
        """'Ada Young (R0001)'; the id alone when it is the name (an export keyed by names)."""
        name = self._names.get(rep_id)
        return f"{name} ({rep_id})" if isinstance(name, str) and name != rep_id else rep_id

    def page(self, path: str) -> str:
        return dashboard_page(self.dashboard, path)


STEPS = (
    "the quarter's forecast",
    "the forecast a week ago",
    "deal scores",
    "churn risk",
    "coaching",
)


def read_book(state: ServiceState, step: Callable[[str], None] = lambda _: None) -> Book:
    """Everything the run's digests and alerts read, from the service's state (the serving
    champions and the stored CRM); `step` hears each of `STEPS` as it starts."""
    from forecast.explain.account_scoring import score_accounts

    tables = state.store()
    quarter = str(tables.as_of.to_period("Q"))
    deal_win = state.champion(DEAL_MODEL)
    step(STEPS[0])
    now = state.quarter_forecast(quarter)
    step(STEPS[1])
    week_ago = state.quarter_forecast(quarter, as_of=tables.as_of - WEEK)
    step(STEPS[2])
    scores = state.deal_scores(deal_win)
    step(STEPS[3])
    churn_model = state.models.get(CHURN_MODEL)
    churn, churn_week_ago = [], {}
    if churn_model is not None:
        churn = list(state.account_scores(churn_model).values())
        earlier = score_accounts(tables, churn_model.scorer, as_of=tables.as_of - WEEK)
        churn_week_ago = {s.account_id: s.churn_probability for s in earlier}
    step(STEPS[4])
    names = zip(tables.accounts["account_id"], tables.accounts["name"], strict=True)
    return Book(
        as_of=tables.as_of,
        quarter=quarter,
        reps=tables.reps,
        deals=tables.deals[["deal_id", "account_id", "rep_id", "amount"]],
        account_names=dict(names),
        now=now,
        week_ago=week_ago,
        scores=scores,
        churn=churn,
        churn_week_ago=churn_week_ago,
        coaching=_coaching(state),
        dashboard=state.settings.dashboard_url,
    )


def _coaching(state: ServiceState) -> dict[str, RepCoaching]:
    from forecast.coaching import coach_team

    tables = state.store()
    reps = tables.reps
    teams = reps.loc[reps["role"] == "rep", "team"].dropna().unique()
    return {view.rep_id: view for team in teams for view in coach_team(tables, team)}


def nodes_of(reps: pd.DataFrame) -> list[Node]:
    """Every node of the org tree, widest first: the company, regions, teams, reps."""
    everyone = frozenset(reps["rep_id"])
    found = [Node(COMPANY, COMPANY, everyone, _head(reps, everyone))]
    for level in ("region", "team"):
        for name, ids in reps.groupby(level)["rep_id"].agg(frozenset).sort_index().items():
            found.append(Node(level, str(name), ids, _head(reps, ids)))
    found += [Node("rep", r, frozenset({r}), r) for r in sorted(reps["rep_id"])]
    return found


def find_node(reps: pd.DataFrame, name: str, level: str | None = None) -> list[Node]:
    """The nodes called `name` (at `level` when given)."""
    return [n for n in nodes_of(reps) if n.name == name and level in (None, n.level)]


def _head(reps: pd.DataFrame, members: frozenset[str]) -> str | None:
    """The member whose reports (direct or not) include every other member: the narrowest."""
    heads = [(len(t), m) for m in members if members <= (t := subtree(reps, m))]
    return min(heads)[1] if heads else None
