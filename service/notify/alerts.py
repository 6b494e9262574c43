"""Alerts: a big deal's win probability dropping fast, a node's chance to reach target falling
below the line, a key account's churn risk jumping, a new or refused champion. Each says what
changed, by how much, and links to the page about it; thresholds are settings (`notify_*`).

Each compares the data's as-of with a week before it, so run after every (daily) import the
same drop holds for days: its key names the week, and a channel hears it once that week."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from forecast.settings import Settings
from service.notify.book import Book, Node
from service.notify.digest import deal_name, node_row, strongest_reason
from service.notify.message import Line, Message, Section, dashboard_page, money, points

if TYPE_CHECKING:
    from service.state import ServiceState


def alerts(book: Book, node: Node, settings: Settings) -> list[Message]:
    """What changed in a week under `node` past the settings' thresholds."""
    return [
        *_deal_drops(book, node, settings),
        *_target_falls(book, node, settings),
        *_churn_jumps(book, node, settings),
    ]


def _alert(node: Node, key: str, title: str, summary: str, link: str, *lines: Line) -> Message:
    return Message(
        key=f"alert:{key}",
        kind="alert",
        level=node.level,
        node=node.name,
        title=title,
        summary=summary,
        sections=(Section("What changed", lines=lines),) if lines else (),
        link=link,
    )


def _deal_drops(book: Book, node: Node, settings: Settings) -> list[Message]:
    drop = settings.notify_deal_drop_points
    amounts = book.deals.set_index("deal_id")
    found = []
    for deal_id, score in sorted(book.scores.items()):
        owner, amount = amounts.at[deal_id, "rep_id"], float(amounts.at[deal_id, "amount"])
        if owner not in node.members or amount < settings.notify_big_deal_amount:
            continue
        if score.previous_probability is None or score.trend_points is None:
            continue
        if score.trend_points >= -drop:
            continue
        name = deal_name(book, deal_id, owner)
        why = strongest_reason(book, deal_id, lowers=True)
        summary = (
            f"{name} ({money(amount)}): win probability {score.previous_probability:.0%} → "
            f"{score.probability:.0%} in a week ({score.trend_points:+.0f} pts)."
        )
        lines = [Line(f"Main reason: {why}")] if why else []
        found.append(
            _alert(
                node,
                f"deal-drop:{deal_id}:{book.as_of:%G-W%V}",
                f"{deal_id} dropped {abs(score.trend_points):.0f} points in a week",
                summary,
                book.page(f"deals/{quote(deal_id)}"),
                *lines,
            )
        )
    return found


def _target_falls(book: Book, node: Node, settings: Settings) -> list[Message]:
    line = settings.notify_reach_target_below
    now, then = node_row(book.now, node), node_row(book.week_ago, node)
    if now is None or then is None:
        return []
    chance, before = now.get("p_reach_target"), then.get("p_reach_target")
    if not (isinstance(chance, float) and isinstance(before, float)):
        return []
    if not (chance < line <= before):
        return []
    summary = (
        f"{node.label}: the chance to reach the {book.quarter} target of {money(now['target'])} "
        f"fell from {before:.0%} to {chance:.0%} ({points(chance - before)}), below {line:.0%}; "
        f"most likely {money(now['p50'])}."
    )
    return [
        _alert(
            node,
            f"reach-target:{book.quarter}:{node.level}:{node.name}:{book.as_of:%G-W%V}",
            f"{node.label}: {chance:.0%} chance to reach target",
            summary,
            book.page(f"forecast?level={node.level}&node={quote(node.name)}"),
        )
    ]


def _churn_jumps(book: Book, node: Node, settings: Settings) -> list[Message]:
    jump = settings.notify_churn_jump_points / 100
    found = []
    for score in book.churn:
        before = book.churn_week_ago.get(score.account_id)
        if score.owner_rep_id not in node.members or before is None:
            continue
        if score.arr < settings.notify_key_account_arr:
            continue
        if score.churn_probability - before <= jump:
            continue
        name = book.account_names.get(score.account_id, score.account_id)
        summary = (
            f"{name} ({money(score.arr)} a year, {book.rep_name(str(score.owner_rep_id))}): "
            f"churn risk {before:.0%} → {score.churn_probability:.0%} in a week "
            f"({points(score.churn_probability - before)}); {money(score.revenue_at_risk)} at risk."
        )
        found.append(
            _alert(
                node,
                f"churn-jump:{score.account_id}:{book.as_of:%G-W%V}",
                f"{name}: churn risk up {100 * (score.churn_probability - before):.0f} points",
                summary,
                book.page("churn"),
            )
        )
    return found


@dataclass(frozen=True)
class Champions:
    """The champions the service loads now, and the versions it refuses (why, by model)."""

    serving: dict[str, str | None]
    refused: dict[str, str]
    page: str  # the dashboard's models page

    @classmethod
    def of(cls, state: ServiceState) -> Champions:
        # a refused first version leaves nothing serving: a problem, not `refused`
        first = {name: why for name, why in state.problems.items() if " refused: " in why}
        refused = first | dict(state.refused)
        return cls(
            state.versions(), refused, dashboard_page(state.settings.dashboard_url, "models")
        )


def champion_alerts(
    champions: Champions, node: Node, last_seen: dict[str, str | None]
) -> list[Message]:
    """A champion that changed since the last run (`last_seen`), and a version the service
    refuses to serve."""
    found = []
    for name, version in sorted(champions.serving.items()):
        before = last_seen.get(name)
        if version is not None and before is not None and before != version:
            found.append(
                _alert(
                    node,
                    f"champion:{name}:{version}",
                    f"{name}: version {version} is the champion",
                    f"{name}: version {version} now serves, in place of version {before}.",
                    champions.page,
                )
            )
    for name, why in sorted(champions.refused.items()):
        digest = hashlib.sha256(why.encode()).hexdigest()[:16]
        found.append(
            _alert(
                node,
                f"refused:{name}:{digest}",
                f"{name}: a new champion was refused",
                f"{why}.",
                champions.page,
            )
        )
    return found
