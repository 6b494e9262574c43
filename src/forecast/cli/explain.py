"""`forecast explain` and `forecast coach`: thin commands over scoring and coaching."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from forecast.cli.common import JsonOpt, console, err_console, moment_option

explain_app = typer.Typer(help="Why a deal scores as it does, and what would help.")
coach_app = typer.Typer(help="Coaching for managers: reps and teams against their peers.")

AsOfOpt = Annotated[
    str | None,
    typer.Option("--as-of", help="Moment to look from (default: export).", callback=moment_option),
]
WindowOpt = Annotated[int, typer.Option("--window-days", help="Trailing window of closed deals.")]


def _tables():
    from forecast.data.store import StoreEmptyError, read_store

    try:
        return read_store()
    except StoreEmptyError as err:
        err_console.print(str(err), style="red")
        raise typer.Exit(1) from None


def _dump(payload: object) -> None:
    json.dump(payload, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


@explain_app.command("deal")
def explain_deal(deal_id: str, as_of: AsOfOpt = None, as_json: JsonOpt = False) -> None:
    """Probability, grade, trend, reasons and recommended actions for one open deal."""
    from forecast.explain.scoring import load_deal_explainer, score_deals
    from forecast.training.registry import RegistryError

    tables = _tables()
    moment = pd.Timestamp(as_of) if as_of else tables.as_of
    try:
        explainer = load_deal_explainer(tables, as_of=moment)
        [score] = score_deals(
            tables, explainer.scorer, as_of=moment, deal_ids=[deal_id], typical=explainer.typical
        )
    except RegistryError as err:
        err_console.print(str(err), style="red", markup=False)
        raise typer.Exit(1) from None
    except KeyError as err:
        err_console.print(str(err.args[0]), style="red", markup=False)
        raise typer.Exit(1) from None
    if as_json:
        model = {"name": explainer.model_name, "version": explainer.model_version}
        warnings = [explainer.forced] if explainer.forced else []
        _dump(asdict(score) | {"model": model, "warnings": warnings})
        return
    e = score.explanation
    # + 0.0: a move that rounds to nothing reads +0.0, never -0.0
    trend = (
        ""
        if score.trend_points is None
        else f", {round(score.trend_points, 1) + 0.0:+.1f} points in a week"
    )
    console.print(
        f"[bold]{deal_id}[/]: win probability {score.probability:.0%} (grade {score.grade}"
        f"{trend}) as of {moment:%Y-%m-%d}; {explainer.model_label}"
    )
    if explainer.forced:
        console.print(f"  {explainer.forced}", style="yellow", markup=False, highlight=False)
    for reason in e.reasons:
        mark = "[green]+[/]" if reason.direction == "raises" else "[red]-[/]"
        console.print(f"  {mark} [dim]{reason.code}[/] {reason.text}")
    if not e.recommendations:
        why = explainer.no_actions or "No action the model expects to help."
        console.print(f"  {why}", markup=False, highlight=False)
    for rec in e.recommendations:
        console.print(
            f"  -> {rec.text}: +{rec.lift_points:.1f} points, "
            f"+{rec.expected_revenue_change:,.0f} expected revenue [dim]({rec.evidence})[/]"
        )


def _print_rep(view) -> None:
    name = "" if view.name in (None, view.rep_id) else f" {view.name}"
    console.rule(f"{view.rep_id}{name} ({view.team}) as of {view.as_of:%Y-%m-%d}")
    console.print(
        f"{view.closed_deals} closed deals in the window; win rate {_share(view.win_rate)} "
        f"(team {_share(view.team_win_rate)}); bottleneck: {view.bottleneck or 'none'}"
    )
    if view.note:
        console.print(view.note, style="yellow", markup=False, highlight=False)
    funnel = Table("stage", "rep", "team", "company", "deals", title="Conversion out of each stage")
    for stage, row in view.funnel.iterrows():
        funnel.add_row(
            stage,
            _share(row["rep_rate"]),
            _share(row["team_rate"]),
            _share(row["company_rate"]),
            f"{int(row['rep_deals'])}",
        )
    if len(view.funnel):
        console.print(funnel)
    if view.funnel_note:
        console.print(view.funnel_note, style="yellow", markup=False, highlight=False)
    for finding in view.findings:
        console.print(
            f"  - {finding.text} -> {finding.focus}"
            + (f" (at stake {finding.at_stake:,.0f})" if finding.at_stake else ""),
            markup=False,
        )


def _share(value: float) -> str:
    """A rate as a percentage; a dash where there is nothing to rate (no closed deals)."""
    return "–" if value != value else f"{value:.0%}"


@coach_app.command("rep")
def coach_rep_command(
    rep_id: str, as_of: AsOfOpt = None, window_days: WindowOpt = 365, as_json: JsonOpt = False
) -> None:
    """A rep's funnel against the team and the company, the bottleneck and focus areas."""
    from forecast.coaching import coach_rep

    tables = _tables()
    try:
        view = coach_rep(
            tables, rep_id, as_of=as_of and pd.Timestamp(as_of), window_days=window_days
        )
    except KeyError as err:
        err_console.print(str(err.args[0]), style="red")
        raise typer.Exit(1) from None
    if as_json:
        _dump(view.to_dict())
        return
    _print_rep(view)


@coach_app.command("team")
def coach_team_command(
    team: str, as_of: AsOfOpt = None, window_days: WindowOpt = 365, as_json: JsonOpt = False
) -> None:
    """Which reps of a team need help with what, most revenue at stake first."""
    from forecast.coaching import coach_team

    tables = _tables()
    try:
        views = coach_team(
            tables, team, as_of=as_of and pd.Timestamp(as_of), window_days=window_days
        )
    except KeyError as err:
        err_console.print(str(err.args[0]), style="red")
        raise typer.Exit(1) from None
    if as_json:
        _dump([v.to_dict() for v in views])
        return
    summary = Table(
        "rep", "win rate", "bottleneck", "top focus", "at stake", "note", title=f"Team {team}"
    )
    for v in views:
        top = v.findings[0].focus if v.findings else ""
        # why a column is blank: too few closes to judge, or no stage history to find one in
        note = "too few closed deals" if v.note else "no stage history" if v.funnel_note else ""
        summary.add_row(
            f"{v.rep_id} {v.name or ''}",
            _share(v.win_rate),
            v.bottleneck or "",
            top,
            f"{v.revenue_at_stake:,.0f}",
            note,
        )
    console.print(summary)
