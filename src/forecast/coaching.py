"""Coaching for managers: where a rep's funnel, habits and pipeline differ from the team's.

Everything is computed as of a moment from what was recorded by then (closed deals in a trailing
window, open deals from their history), so a coaching view of the past is what a manager could
have seen then. Each finding carries the rep's figure, the team's, the gap, and a focus to try.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from forecast.data.contract import CLOSED_STAGES, OPEN_STAGES
from forecast.data.derive import history_is_derived
from forecast.data.tables import CrmTables

WINDOW_DAYS = 365
STALE_DAYS = 14
MIN_DEALS = 15  # fewer deals at a stage than this and a conversion rate is not a finding
MIN_CLOSED = 10  # fewer closed deals in the window than this and a rep's rates are not judged

FOCUS = {
    "prospecting": "Qualify harder before working a lead: confirm need, budget and timing",
    "qualification": "Get to a tailored proposal faster: map the buying process and the sponsor",
    "proposal": "Turn proposals into negotiations: review each one with the buyer, not by email",
    "negotiation": "Close: involve the decision maker and agree a mutual close plan",
    "cycle_time": "Shorten the cycle: set a dated next step at every stage",
    "stale": "Re-engage or close out deals with no touch in two weeks",
    "pushed": "Re-qualify deals whose close date keeps moving",
    "no_next_step": "Record a dated next step on every open deal",
    "close_date_accuracy": "Set close dates from the buyer's process, not from hope",
}

HABITS = ("stale", "pushed", "no_next_step")  # read from open deals, not from closed ones
# what each topic measures, in words a manager reads aloud ({rep}: the rep's figure with unit)
SAYS = {
    "cycle_time": "Takes {rep} to win a deal, from creation to close",
    "close_date_accuracy": "Wins deals by the close date first promised {rep} of the time",
    "stale": "{rep} of open deals have had no touch in two weeks",
    "pushed": "{rep} of open deals have had their close date pushed twice or more",
    "no_next_step": "{rep} of open deals have no next step recorded",
}


@dataclass(frozen=True)
class Finding:
    """One comparison of a rep with the team and company."""

    topic: str
    rep: float
    team: float
    company: float
    gap: float  # rep minus team, in the topic's unit
    unit: str  # "share" (0 to 1) or "days"
    focus: str
    at_stake: float = 0.0  # open pipeline the gap puts at risk
    text: str = ""  # the comparison in plain words, with units

    @classmethod
    def of(
        cls, topic: str, rep: float, team: float, company: float, *, at_stake: float = 0.0
    ) -> Finding:
        stage = topic.removeprefix("conversion out of ")
        unit = "days" if topic == "cycle_time" else "share"
        says = SAYS.get(
            topic, "Moves {rep} of the deals that reach " + stage + " on to the next stage"
        )
        text = f"{says.format(rep=_figure(rep, unit))} (team {_figure(team, unit)})"
        return cls(topic, rep, team, company, rep - team, unit, FOCUS[stage], at_stake, text)


def _figure(value: float, unit: str) -> str:
    if value != value:  # NaN
        return "unknown"
    return f"{value:.0f} days" if unit == "days" else f"{value:.0%}"


@dataclass(frozen=True)
class RepCoaching:
    rep_id: str
    name: str | None
    team: str
    as_of: pd.Timestamp
    closed_deals: int
    win_rate: float
    team_win_rate: float
    funnel: pd.DataFrame  # stage, rep, team, company conversion rates and deal counts
    bottleneck: str | None
    findings: list[Finding] = field(default_factory=list)
    note: str | None = None  # why the rep's rates are not judged (too few closed deals)
    funnel_note: str | None = None  # why there is no funnel (no stage history in the export)
    activity_mix: pd.DataFrame | None = None
    win_rate_by_segment: pd.DataFrame | None = None
    win_rate_by_product: pd.DataFrame | None = None
    revenue_at_stake: float = 0.0
    withheld: str | None = None  # which group figures are left out, and why
    # who the team's and company's figures are made of (reps with closed or open deals)
    team_people: frozenset[str] = frozenset()
    company_people: frozenset[str] = frozenset()

    def to_dict(self) -> dict:
        out = asdict(self)
        del out["team_people"], out["company_people"]
        out["as_of"] = self.as_of.isoformat()
        for key in ("funnel", "activity_mix", "win_rate_by_segment", "win_rate_by_product"):
            frame = getattr(self, key)
            out[key] = None if frame is None else frame.reset_index().to_dict(orient="records")
        return out


@dataclass(frozen=True)
class _Closed:
    """Closed deals in the window with the furthest stage each reached, and its owner."""

    deals: pd.DataFrame  # deal_id, rep_id, team, won, furthest, created_at, closed_at, ...


def _closed_in_window(tables: CrmTables, as_of: pd.Timestamp, window_days: int) -> _Closed:
    history = tables.deal_history[tables.deal_history["changed_at"] <= as_of]
    stage_index = {s: i for i, s in enumerate(OPEN_STAGES)} | {"closed_won": len(OPEN_STAGES)}
    progress = history["stage"].map(stage_index).fillna(-1)
    furthest = progress.groupby(history["deal_id"]).max()
    closes = history[history["stage"].isin(CLOSED_STAGES)]
    closes = closes[closes["changed_at"] > as_of - pd.Timedelta(days=window_days)]
    closes = closes.drop_duplicates("deal_id", keep="last").set_index("deal_id")
    first_expected = history.groupby("deal_id")["expected_close"].first()
    deals = tables.deals.set_index("deal_id").loc[closes.index]
    team = tables.reps.set_index("rep_id")["team"]
    segment = tables.accounts.set_index("account_id")["segment"]
    frame = pd.DataFrame(
        {
            "rep_id": deals["rep_id"].to_numpy(),
            "team": team.reindex(deals["rep_id"].to_numpy()).to_numpy(),
            "won": (closes["stage"] == "closed_won").to_numpy(),
            "furthest": furthest.reindex(closes.index).to_numpy(),
            "created_at": deals["created_at"].to_numpy(),
            "closed_at": closes["changed_at"].to_numpy(),
            "first_expected": first_expected.reindex(closes.index).to_numpy(),
            "product_id": deals["product_id"].to_numpy(),
            "segment": segment.reindex(deals["account_id"].to_numpy()).to_numpy(),
        },
        index=closes.index,
    )
    return _Closed(frame)


def funnel(closed: pd.DataFrame) -> pd.DataFrame:
    """Conversion out of each open stage: of deals that reached it, the share that moved on."""
    rows = []
    for i, stage in enumerate(OPEN_STAGES):
        reached = closed["furthest"] >= i
        moved = closed["furthest"] >= i + 1
        n = int(reached.sum())
        rows.append({"stage": stage, "deals": n, "rate": moved.sum() / n if n else np.nan})
    return pd.DataFrame(rows).set_index("stage")


def _open_deals(tables: CrmTables, as_of: pd.Timestamp) -> pd.DataFrame:
    """Open deals at as_of with their state, pushes, next step and last touch."""
    history = tables.deal_history[tables.deal_history["changed_at"] <= as_of]
    history = history.sort_values(["deal_id", "changed_at"], kind="stable")
    last = history.groupby("deal_id").tail(1).set_index("deal_id")
    last = last[last["stage"].isin(OPEN_STAGES)]
    pushes = (
        (history["expected_close"] > history.groupby("deal_id")["expected_close"].shift())
        .groupby(history["deal_id"])
        .sum()
    )
    acts = tables.activities[
        tables.activities["deal_id"].notna() & (tables.activities["at"] <= as_of)
    ]
    last_touch = acts.groupby("deal_id")["at"].max()
    deals = tables.deals.set_index("deal_id")
    created = deals["created_at"].reindex(last.index)
    touched = last_touch.reindex(last.index).fillna(created)
    return pd.DataFrame(
        {
            "rep_id": deals["rep_id"].reindex(last.index).to_numpy(),
            "stage": last["stage"].to_numpy(),
            "amount": last["amount"].to_numpy(dtype=float),
            "pushes": pushes.reindex(last.index).fillna(0).to_numpy(),
            "has_next_step": last["next_step"].notna().to_numpy(),
            "days_since_touch": ((as_of - touched) / pd.Timedelta(days=1)).to_numpy(),
        },
        index=last.index,
    )


def _rate(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else float("nan")


def _hygiene(open_deals: pd.DataFrame) -> dict[str, float]:
    return {
        "stale": _rate(open_deals["days_since_touch"] > STALE_DAYS),
        "pushed": _rate(open_deals["pushes"] >= 2),
        "no_next_step": _rate(~open_deals["has_next_step"]),
    }


def _cycle_days(closed: pd.DataFrame) -> float:
    won = closed[closed["won"]]
    return float(((won["closed_at"] - won["created_at"]) / pd.Timedelta(days=1)).median())


def _close_date_accuracy(closed: pd.DataFrame) -> float:
    """Share of won deals closed by the close date first written down."""
    won = closed[closed["won"]]
    return _rate(won["closed_at"] <= won["first_expected"] + pd.Timedelta(days=1))


def _activity_mix(tables: CrmTables, as_of: pd.Timestamp, window_days: int) -> pd.DataFrame:
    acts = tables.activities
    acts = acts[
        acts["deal_id"].notna()
        & (acts["at"] <= as_of)
        & (acts["at"] > as_of - pd.Timedelta(days=window_days))
    ]
    counts = pd.crosstab(acts["rep_id"], acts["kind"])
    return counts.div(counts.sum(axis=1), axis=0)


def _by(closed: pd.DataFrame, column: str, rep_id: str) -> pd.DataFrame:
    mine = closed[closed["rep_id"] == rep_id]
    team = closed[closed["team"] == mine["team"].iloc[0]] if len(mine) else closed.iloc[:0]
    out = pd.DataFrame(
        {
            "rep": mine.groupby(column)["won"].mean(),
            "rep_deals": mine.groupby(column).size(),
            "team": team.groupby(column)["won"].mean(),
        }
    )
    out["gap"] = out["rep"] - out["team"]
    return out


def coach_rep(
    tables: CrmTables,
    rep_id: str,
    *,
    as_of: pd.Timestamp | None = None,
    window_days: int = WINDOW_DAYS,
) -> RepCoaching:
    """What a manager should know about one rep, compared with the rep's team and the company."""
    as_of = pd.Timestamp(as_of) if as_of is not None else tables.as_of
    reps = tables.reps.set_index("rep_id")
    if rep_id not in reps.index:
        raise KeyError(_no_rep(tables.reps, rep_id))
    team = reps.at[rep_id, "team"]
    closed = _closed_in_window(tables, as_of, window_days).deals
    mine = closed[closed["rep_id"] == rep_id]
    ours = closed[closed["team"] == team]
    funnels = pd.concat(
        {"rep": funnel(mine), "team": funnel(ours), "company": funnel(closed)}, axis=1
    )
    funnels.columns = [f"{who}_{what}" for who, what in funnels.columns]
    open_deals = _open_deals(tables, as_of)
    my_open = open_deals[open_deals["rep_id"] == rep_id]
    team_open = open_deals[open_deals["rep_id"].isin(reps.index[reps["team"] == team])]
    findings: list[Finding] = []
    bottleneck: str | None = None
    funnel_note = None
    if history_is_derived(tables.deal_history):
        # a derived history jumps from creation to the close: every deal that closed "passed"
        # every stage, so conversion by stage would be made up
        funnels = funnels.iloc[:0]
        funnel_note = (
            "No stage history in the export (deal_history derived from the deals): conversion "
            "by stage cannot be shown."
        )
    else:
        findings, bottleneck = _stage_findings(funnels, my_open)
    findings += _habit_findings((mine, ours, closed), (my_open, team_open, open_deals))
    findings.sort(key=lambda f: -f.at_stake)
    note = None
    if len(mine) < MIN_CLOSED:
        # a handful of closes says little about skill: only today's pipeline habits are compared
        note = (
            f"Too few deals to judge: {len(mine)} closed in the last {window_days} days (at "
            f"least {MIN_CLOSED} are needed); only open-pipeline habits are compared."
        )
        findings = [f for f in findings if f.topic in HABITS]
        bottleneck = None
    mix = _activity_mix(tables, as_of, window_days)
    team_mix = mix[mix.index.isin(reps.index[reps["team"] == team])].mean()
    activity = pd.DataFrame(
        {"rep": mix.loc[rep_id] if rep_id in mix.index else 0.0, "team": team_mix}
    ).fillna(0.0)
    return RepCoaching(
        rep_id=rep_id,
        name=reps.at[rep_id, "name"] if "name" in reps else None,
        team=team,
        as_of=as_of,
        closed_deals=len(mine),
        win_rate=_rate(mine["won"]),
        team_win_rate=_rate(ours["won"]),
        funnel=funnels,
        bottleneck=bottleneck,
        findings=findings,
        note=note,
        funnel_note=funnel_note,
        activity_mix=activity,
        win_rate_by_segment=_by(closed, "segment", rep_id),
        win_rate_by_product=_by(closed, "product_id", rep_id),
        revenue_at_stake=float(sum(f.at_stake for f in findings)),
        team_people=frozenset(ours["rep_id"]) | frozenset(team_open["rep_id"]),
        company_people=frozenset(closed["rep_id"]) | frozenset(open_deals["rep_id"]),
    )


def withhold_small_groups(
    view: RepCoaching, visible: frozenset[str] | None, *, min_others: int
) -> RepCoaching:
    """`view` as a viewer who sees the reps in `visible` (None: everyone) may read it.

    A group's figures (the team's, the company's) are withheld when fewer than `min_others`
    of the people in them are out of the viewer's sight, but some are: the viewer's own
    figures subtracted from the group's would give theirs (in a team of two, the teammate's
    funnel and win rate exactly). What stays is how the rep ranks against the group: each
    finding still says the rep is behind, without the group's figure or the gap.
    """
    if visible is None:
        return view
    hidden = {
        group: len(people - visible)
        for group, people in (("team", view.team_people), ("company", view.company_people))
    }
    small = [g for g, n in hidden.items() if 0 < n < min_others]
    if not small:
        return view
    funnel = view.funnel.drop(columns=[c for c in view.funnel if c.split("_")[0] in small])
    findings = view.findings
    if "team" in small:
        findings = [_without_team(f) for f in findings]
    if "company" in small:
        findings = [replace(f, company=np.nan) for f in findings]
    groups = " and ".join(f"{g} figures" for g in small)
    return replace(
        view,
        funnel=funnel,
        findings=findings,
        team_win_rate=np.nan if "team" in small else view.team_win_rate,
        activity_mix=_drop(view.activity_mix, "team" in small),
        win_rate_by_segment=_drop(view.win_rate_by_segment, "team" in small),
        win_rate_by_product=_drop(view.win_rate_by_product, "team" in small),
        withheld=f"The {groups} are withheld: fewer than {min_others} other people are in "
        "them, so they would reveal a colleague's results. Each focus area still shows where "
        "the rep is behind.",
    )


def _without_team(finding: Finding) -> Finding:
    text = finding.text.rsplit(" (team ", 1)[0] + " (behind the team)"
    return replace(finding, team=np.nan, gap=np.nan, text=text)


def _drop(frame: pd.DataFrame | None, team: bool) -> pd.DataFrame | None:
    if frame is None or not team:
        return frame
    return frame.drop(columns=[c for c in ("team", "gap") if c in frame])


def _stage_findings(
    funnels: pd.DataFrame, my_open: pd.DataFrame
) -> tuple[list[Finding], str | None]:
    """The stages where the rep converts worse than the team, and the bottleneck: the stage
    where the rep loses the most wins against the team's rates (deals lost beyond the team's
    rate there, times the team's chance of winning them after)."""
    gaps = funnels["rep_rate"] - funnels["team_rate"]
    enough = funnels["rep_deals"] >= MIN_DEALS
    downstream = funnels["team_rate"][::-1].cumprod()[::-1].shift(-1).fillna(1.0)
    wins_lost = (-gaps.clip(upper=0) * funnels["rep_deals"] * downstream).where(enough, 0.0)
    bottleneck = wins_lost.idxmax() if (wins_lost > 0).any() else None
    pipeline_at = my_open.groupby("stage")["amount"].sum().reindex(OPEN_STAGES).fillna(0)
    at_stake = -gaps.clip(upper=0) * pipeline_at * downstream
    findings = []
    for stage in OPEN_STAGES:
        if stage == bottleneck or (enough[stage] and gaps[stage] < -0.05):
            findings.append(
                Finding.of(
                    f"conversion out of {stage}",
                    float(funnels.at[stage, "rep_rate"]),
                    float(funnels.at[stage, "team_rate"]),
                    float(funnels.at[stage, "company_rate"]),
                    at_stake=float(at_stake[stage]) if pd.notna(at_stake[stage]) else 0.0,
                )
            )
    return findings, bottleneck


def _habit_findings(
    closed: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    open_deals: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> list[Finding]:
    """Cycle time, close-date accuracy and pipeline hygiene where the rep is worse than the
    team by more than a margin; `closed` and `open_deals` are (rep, team, company)."""
    mine, ours, everyone = closed
    my_open, team_open, all_open = open_deals
    findings = []
    for topic, rep_value, team_value, company_value, worse in (
        ("cycle_time", _cycle_days(mine), _cycle_days(ours), _cycle_days(everyone), "higher"),
        (
            "close_date_accuracy",
            _close_date_accuracy(mine),
            _close_date_accuracy(ours),
            _close_date_accuracy(everyone),
            "lower",
        ),
        *(
            (name, value, _hygiene(team_open)[name], _hygiene(all_open)[name], "higher")
            for name, value in _hygiene(my_open).items()
        ),
    ):
        if np.isnan(rep_value) or np.isnan(team_value):
            continue
        gap = rep_value - team_value
        threshold = 0.15 * abs(team_value) if topic == "cycle_time" else 0.05
        if (worse == "higher" and gap > threshold) or (worse == "lower" and gap < -threshold):
            findings.append(
                Finding.of(
                    topic,
                    float(rep_value),
                    float(team_value),
                    float(company_value),
                    at_stake=float(my_open["amount"].sum() * min(abs(gap), 1.0))
                    if topic != "cycle_time"
                    else 0.0,
                )
            )
    return findings


def _no_rep(reps: pd.DataFrame, asked: str) -> str:
    """`asked` is no rep id: said with the ids of the reps whose name it is, if any."""
    if reps.empty:
        return f"no rep {asked!r}: the stored CRM has no reps (the export names no sales team)"
    named = reps.loc[reps["name"].fillna("").str.casefold() == asked.casefold(), "rep_id"]
    if len(named):
        return f"no rep id {asked!r}: reps are named by id; {asked!r} is " + " or ".join(
            repr(r) for r in named
        )
    return f"no rep {asked!r} (reps are named by id, e.g. {reps['rep_id'].iloc[0]!r})"


def coach_team(
    tables: CrmTables,
    team: str,
    *,
    as_of: pd.Timestamp | None = None,
    window_days: int = WINDOW_DAYS,
) -> list[RepCoaching]:
    """Every rep of a team, those with the most revenue at stake first."""
    reps = tables.reps
    members = reps.loc[(reps["team"] == team) & (reps["role"] == "rep"), "rep_id"]
    if members.empty:
        if reps.empty:
            raise KeyError(f"no team {team!r}: the stored CRM has no reps (the export names no "
                           "sales team), so there is no one to coach")  # fmt: skip
        known = ", ".join(sorted(reps["team"].dropna().unique()))
        raise KeyError(f"no team {team!r} with reps; teams are: {known}")
    views = [coach_rep(tables, r, as_of=as_of, window_days=window_days) for r in members]
    return sorted(views, key=lambda v: -v.revenue_at_stake)
