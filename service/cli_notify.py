"""`forecast notify`: weekly digests and risk alerts to Slack and Microsoft Teams channels, one
per node of the org tree (docs/deploy.md)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

notify_app = typer.Typer(
    help="Digests and alerts in Slack and Teams: add a channel per node, then send (from cron)."
)


class Digest(StrEnum):
    weekly = "weekly"


def _engine():
    from forecast.settings import get_settings
    from service.keys import engine_for, ensure_tables

    engine = engine_for(get_settings().service_database_url)
    ensure_tables(engine)
    return engine


def _fail(message: str, code: int = 1) -> typer.Exit:
    from forecast.cli.common import fail

    return fail(message, code)


@notify_app.command("add")
def add(
    node: Annotated[str, typer.Option("--node", help='A region, team or rep id, or "company".')],
    slack: Annotated[
        str | None, typer.Option("--slack", help="A Slack incoming webhook URL.")
    ] = None,
    teams: Annotated[
        str | None, typer.Option("--teams", help="A Teams workflow webhook URL.")
    ] = None,
    level: Annotated[
        str | None,
        typer.Option("--level", help="rep, team, region or company, if the name is ambiguous."),
    ] = None,
) -> None:
    """Send a node's digests and alerts to a channel (the URL is kept, never printed)."""
    from forecast.data.store import StoreError, read_store
    from service.notify.book import find_node, nodes_of
    from service.notify.outbox import Channel, add_target, check_webhook

    if (slack is None) == (teams is None):
        raise _fail("give one webhook: --slack URL or --teams URL", 2)
    channel: Channel = "slack" if slack is not None else "teams"
    url = slack or teams or ""
    if problem := check_webhook(url):
        raise _fail(f"--{channel}: {problem}", 2)
    try:
        reps = read_store(tables=["reps"]).reps
    except StoreError as err:
        raise _fail(f"no org tree to place the node in: {err}", 2) from None
    found = find_node(reps, node, level)
    if len(found) != 1:
        raise _fail(_which_node(node, level, found, [n.name for n in nodes_of(reps)]), 2)
    target = add_target(_engine(), found[0].level, found[0].name, channel, url)
    shown = target.shown()
    typer.echo(
        f"added {shown['id']}: {shown['level']} {shown['node']} -> {channel} {shown['webhook']}"
    )


def _which_node(name: str, level: str | None, found: list, known: list[str]) -> str:
    import difflib

    if found:
        levels = ", ".join(n.level for n in found)
        return f"{name!r} names a node at several levels ({levels}): add --level"
    close = difflib.get_close_matches(name, sorted(set(known)), n=3)
    where = f" at level {level}" if level else ""
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"no node {name!r}{where} in the org tree{hint}"


@notify_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every channel: id, node, Slack or Teams, and the webhook's host (never its secret path)."""
    from service.notify.outbox import targets

    shown = [t.shown() for t in targets(_engine())]
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
        return
    if not shown:
        typer.echo('no channels yet: `forecast notify add --node "EMEA 1" --slack URL`')
    for t in shown:
        typer.echo(f"{t['id']}  {t['level']} {t['node']}  {t['channel']}  {t['webhook']}")


@notify_app.command("remove")
def remove(target_id: Annotated[int, typer.Argument(help="The id `notify list` shows.")]) -> None:
    """Stop sending to a channel."""
    from service.notify.outbox import remove_target

    if not remove_target(_engine(), target_id):
        raise _fail(f"no channel {target_id}")
    typer.echo(f"removed {target_id}")


@notify_app.command("send")
def send(
    digest: Annotated[
        Digest | None, typer.Option("--digest", help="Send the digest: weekly.")
    ] = None,
    alerts: Annotated[bool, typer.Option("--alerts", help="Send the alerts due now.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be sent; send and record nothing.")
    ] = False,
    node: Annotated[
        str | None, typer.Option("--node", help="Only the channels of this node.")
    ] = None,
    preview: Annotated[
        Path | None,
        typer.Option("--preview", help="Also write each message as an HTML page in this folder."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Build every channel's digest or alerts and send each once (a second run sends nothing
    already sent); exit 1 if a channel refused a message."""
    from forecast.cli.common import steps
    from forecast.settings import get_settings
    from service.notify.book import STEPS
    from service.notify.deliver import post
    from service.notify.run import open_state, run
    from service.state import UNAVAILABLE

    if (digest is None) == (not alerts):
        raise _fail("say what to send: --digest weekly or --alerts", 2)
    settings = get_settings()

    def deliver(url: str, payload: dict):
        return post(
            url, payload, tries=settings.notify_tries, max_wait=settings.notify_max_wait_seconds
        )

    try:
        state = open_state(settings)
        with steps(len(STEPS), "Reading the book") as step:
            outcomes = list(
                run(
                    state,
                    "digest" if digest else "alerts",
                    deliver,
                    dry_run=dry_run,
                    only=node,
                    step=step,
                )
            )
    except UNAVAILABLE as err:
        raise _fail(f"nothing can be sent: {err}") from None
    if preview is not None:
        _write_previews(preview, outcomes)
    _report(outcomes, dry_run=dry_run, as_json=as_json, only=node)
    if any(o.result == "failed" for o in outcomes):
        raise typer.Exit(1)


def _write_previews(folder: Path, outcomes: list) -> None:
    from service.notify.preview import page
    from service.notify.render import slack_payload, teams_payload

    folder.mkdir(parents=True, exist_ok=True)
    written = set()
    for outcome in outcomes:
        message = outcome.message
        if message is None or message.key in written:
            continue
        name = "".join(c if c.isalnum() else "-" for c in message.key)[:150]
        html = page(message.title, slack_payload(message), teams_payload(message))
        (folder / f"{name}.html").write_text(html, encoding="utf-8")
        written.add(message.key)
    typer.echo(f"{len(written)} previews in {folder}", err=True)


def _report(outcomes: list, *, dry_run: bool, as_json: bool, only: str | None) -> None:
    from collections import Counter

    from service.notify.render import plain_text

    rows = [
        {
            "target": o.target.id,
            "level": o.target.level,
            "node": o.target.node,
            "channel": o.target.channel,
            "kind": o.message.kind if o.message else None,
            "title": o.message.title if o.message else "(recorded by a run that stopped)",
            "result": o.result,
            "detail": o.detail,
        }
        for o in outcomes
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for outcome, row in zip(outcomes, rows, strict=True):
        if dry_run and outcome.message is not None:
            where = f"{row['channel']} {outcome.target.shown()['webhook']}"
            typer.echo(f"--- would send to {row['level']} {row['node']} ({where})")
            typer.echo(plain_text(outcome.message))
        else:
            detail = f" ({row['detail']})" if row["detail"] else ""
            typer.echo(f"{row['result']}: {row['node']} {row['channel']}: {row['title']}{detail}")
    counts = Counter(r["result"] for r in rows)
    said = ", ".join(f"{n} {result}" for result, n in sorted(counts.items())) or (
        "nothing to send: no channel"
        + (" for that node" if only else "")
        + " (`forecast notify add`)"
    )
    typer.echo(said, err=True)


@notify_app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every send recorded: sent, failed (tried again next run), or unknown (a run stopped
    while sending it: never sent again)."""
    from service.notify.outbox import sends

    rows = sends(_engine())
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    for r in rows:
        state = "unknown" if r["state"] == "sending" else r["state"]
        detail = f"  {r['detail']}" if r["detail"] else ""
        typer.echo(f"{r['recorded_at']:%Y-%m-%d %H:%M}  {state:<8} {r['key']}{detail}")
