"""The weekly digest of one node: where the quarter stands against target and how that moved
in a week, the deals that moved it, the deals that may slip, revenue at risk from churn, and
one coaching focus per rep who needs it. Only the people under the node appear in it."""

from __future__ import annotations

import math
from typing import TypeGuard
from urllib.parse import quote

import pandas as pd

from forecast.revenue.tree import LEVELS
from service.notify.book import Book, Node
from service.notify.message import Line, Message, Section, money, points

MOVED = 5  # deals that moved the forecast most
SLIPPING = 5
MOVE = 0.02  # a change of probability that counts as a move
SLIP_BELOW = 0.5  # a deal expected this quarter with less chance than this of closing in it
ACCOUNTS = 3
CHILDREN = 12
COACHED = 8


def digest(book: Book, node: Node, *, min_others: int) -> Message:
    """The node's weekly digest. `min_others`: coaching compares a rep with a group only when
    that many other people are in it (the API's rule)."""
    now, then = node_row(book.now, node), node_row(book.week_ago, node)
    parts = [
        _standing(now, then),
        _children(book, node),
        _moved(book, node),
        _slipping(book, node),
        _churn(book, node),
        _coaching(book, node, min_others),
    ]
    own = node.level == "rep"
    title = f"{'Your week' if own else 'Weekly forecast'} · {_label(book, node)} · {book.quarter}"
    return Message(
        key=f"digest:weekly:{book.quarter}:{book.as_of:%G-W%V}:{node.level}:{node.name}",
        kind="digest",
        level=node.level,
        node=node.name,
        title=title,
        summary=_summary(book, node, now, then),
        sections=tuple(p for p in parts if p is not None),
        link=book.page(f"forecast?level={node.level}&node={quote(node.name)}"),
    )


def _label(book: Book, node: Node) -> str:
    return book.rep_name(node.name) if node.level == "rep" else node.label


def node_row(forecast, node: Node) -> dict | None:
    rows = forecast.nodes[
        (forecast.nodes["level"] == node.level) & (forecast.nodes["node"] == node.name)
    ]
    return None if rows.empty else rows.iloc[0].to_dict()


def _summary(book: Book, node: Node, now: dict | None, then: dict | None) -> str:
    label = _label(book, node)
    if now is None:
        return f"{label}: nothing booked or open for {book.quarter}."
    said = f"{label}: most likely {money(now['p50'])}"
    if _known(now.get("target")):
        chance = now["p_reach_target"]
        said += f" against a {money(now['target'])} target, {chance:.0%} chance to reach it"
        if then is not None and _known(then.get("p_reach_target")):
            said += f" ({points(now['p_reach_target'] - then['p_reach_target'])} since last week)"
    return said + "."


def _standing(now: dict | None, then: dict | None) -> Section | None:
    if now is None:
        return None
    target = now.get("target")
    of_target = f" of {money(target)}" if _known(target) else ""
    facts = [
        ("Most likely (P50)", money(now["p50"]) + of_target),
        ("Range (P10 to P90)", f"{money(now['p10'])} to {money(now['p90'])}"),
        ("Booked so far", money(now["booked"])),
    ]
    if _known(target):
        facts.insert(1, ("Chance to reach target", f"{now['p_reach_target']:.0%}"))
    if then is not None:
        facts.append(("P50 since last week", _signed(now["p50"] - then["p50"])))
        if _known(target) and _known(then.get("p_reach_target")):
            change = now["p_reach_target"] - then["p_reach_target"]
            facts.append(("Chance since last week", points(change)))
    return Section("The quarter", facts=tuple(facts))


def _children(book: Book, node: Node) -> Section | None:
    if node.level == "rep":
        return None
    below = LEVELS[LEVELS.index(node.level) - 1]
    nodes = book.now.nodes
    rows = nodes[(nodes["level"] == below) & (nodes["parent"] == node.name)]
    if below == "rep":
        rows = rows[rows["node"].isin(node.members)]
    before = book.week_ago.nodes.set_index(["level", "node"])["p_reach_target"]
    lines = []
    for row in rows.sort_values("p50", ascending=False).itertuples():
        name = book.rep_name(row.node) if below == "rep" else row.node
        text = f"{name}: most likely {money(row.p50)}"
        if _known(row.target):
            text += f" of {money(row.target)}, {row.p_reach_target:.0%} to reach"
            earlier = before.get((below, row.node))
            if _known(earlier):
                text += f" ({points(row.p_reach_target - earlier)})"
        link = book.page(f"forecast?level={below}&node={quote(str(row.node))}")
        lines.append(Line(text, link))
    if not lines:
        return None
    title = {"rep": "Reps", "team": "Teams", "region": "Regions"}[below]
    return Section(title, lines=tuple(lines[:CHILDREN]), more=max(0, len(lines) - CHILDREN))


def _moved(book: Book, node: Node) -> Section | None:
    """The open deals whose expected bookings this quarter changed most in a week."""
    now = book.now.deals[book.now.deals["rep_id"].isin(node.members)]
    if now.empty:
        return None
    columns = ["expected_bookings", "p_win", "p_close_inside", "expected_amount"]
    then = book.week_ago.deals.set_index("deal_id")[columns]
    moved = now.join(then, on="deal_id", rsuffix="_then")
    moved["expected_bookings_then"] = moved["expected_bookings_then"].fillna(0.0)
    moved["change"] = moved["expected_bookings"] - moved["expected_bookings_then"]
    moved = moved[moved["change"].abs() >= 1.0]
    top = moved.reindex(moved["change"].abs().sort_values(ascending=False).index).head(MOVED)
    lines = [
        Line(
            _moved_line(book, deal, _owner(node, deal.rep_id)),
            book.page(f"deals/{quote(deal.deal_id)}"),
        )
        for deal in top.itertuples()
    ]
    return Section("Deals that moved the forecast", lines=tuple(lines)) if lines else None


def _moved_line(book: Book, deal, owner: str | None) -> str:
    was = "new" if pd.isna(deal.p_win_then) else f"{deal.p_win_then:.0%}"
    text = (
        f"{deal_name(book, deal.deal_id, owner)}: {money(deal.expected_bookings_then)} → "
        f"{money(deal.expected_bookings)} expected ({was} → {deal.p_win:.0%} to win)"
    )
    return f"{text}. {why}" if (why := _why_moved(book, deal)) else text


def _why_moved(book: Book, deal) -> str | None:
    """What moved the deal's expected bookings: its chance to win (then the model's strongest
    reason that way), its timing in the quarter, or its amount."""
    if pd.isna(deal.p_win_then) or abs(deal.p_win - deal.p_win_then) >= MOVE:
        lowers = not pd.isna(deal.p_win_then) and deal.p_win < deal.p_win_then
        return strongest_reason(book, deal.deal_id, lowers=lowers)
    if abs(deal.p_close_inside - deal.p_close_inside_then) >= MOVE:
        return (
            f"Timing: chance to close this quarter {deal.p_close_inside_then:.0%} → "
            f"{deal.p_close_inside:.0%}"
        )
    return f"Amount: {money(deal.expected_amount_then)} → {money(deal.expected_amount)}"


def strongest_reason(book: Book, deal_id: str, *, lowers: bool) -> str | None:
    """The strongest reason that pushes the way the deal moved."""
    score = book.scores.get(deal_id)
    if score is None:
        return None
    wanted = "lowers" if lowers else "raises"
    reasons = [r for r in score.explanation.reasons if r.direction == wanted]
    return reasons[0].text if reasons else None


def _slipping(book: Book, node: Node) -> Section | None:
    deals = book.now.deals
    risky = deals[
        deals["rep_id"].isin(node.members)
        & deals["in_quarter_pipeline"].astype(bool)
        & (deals["p_close_inside"] < SLIP_BELOW)
    ].copy()
    if risky.empty:
        return None
    risky["stake"] = risky["amount"] * risky["p_win"] * (1 - risky["p_close_inside"])
    top = risky.sort_values("stake", ascending=False)
    lines = [
        Line(
            f"{deal_name(book, d.deal_id, _owner(node, d.rep_id))}: {money(d.amount)}, expected "
            f"to close {pd.Timestamp(d.expected_close):%d %b}; {d.p_close_inside:.0%} chance it "
            "closes this quarter",
            book.page(f"deals/{quote(d.deal_id)}"),
        )
        for d in top.head(SLIPPING).itertuples()
    ]
    return Section("At risk of slipping", lines=tuple(lines), more=max(0, len(top) - SLIPPING))


def _churn(book: Book, node: Node) -> Section | None:
    scores = [s for s in book.churn if s.owner_rep_id in node.members]
    if not scores:
        return None
    total = sum(s.revenue_at_risk for s in scores)
    top = sorted(scores, key=lambda s: -s.revenue_at_risk)[:ACCOUNTS]
    lines = []
    for s in top:
        name = book.account_names.get(s.account_id, s.account_id)
        text = f"{name}: {s.churn_probability:.0%} churn risk"
        earlier = book.churn_week_ago.get(s.account_id)
        if earlier is not None:
            text += f" ({points(s.churn_probability - earlier)} in a week)"
        lines.append(
            Line(
                f"{text}, {money(s.revenue_at_risk)} of {money(s.arr)} a year at risk",
                book.page("churn"),
            )
        )
    facts = (("Revenue at risk", money(total)), ("Accounts scored", f"{len(scores):,}"))
    return Section("Revenue at risk from churn", facts=facts, lines=tuple(lines))


def _coaching(book: Book, node: Node, min_others: int) -> Section | None:
    from forecast.coaching import withhold_small_groups

    views = [book.coaching[r] for r in node.members if r in book.coaching]
    views = [withhold_small_groups(v, node.members, min_others=min_others) for v in views]
    needing = sorted(
        (v for v in views if v.findings and v.note is None), key=lambda v: -v.revenue_at_stake
    )
    lines = [
        Line(
            f"{book.rep_name(v.rep_id)}: {v.findings[0].focus}. {v.findings[0].text}",
            book.page(f"coaching/reps/{quote(v.rep_id)}"),
        )
        for v in needing[:COACHED]
    ]
    title = "Your coaching focus" if node.level == "rep" else "One coaching focus per rep"
    return (
        Section(title, lines=tuple(lines), more=max(0, len(needing) - COACHED)) if lines else None
    )


def deal_name(book: Book, deal_id: str, rep_id: str | None) -> str:
    """'D0012345 · Acme Corp · Ada Young (R0001)' (without the rep: a rep's own digest)."""
    account_id = book.account_of.get(deal_id)
    account = (
        book.account_names.get(account_id, account_id) if isinstance(account_id, str) else None
    )
    parts = [deal_id, account, book.rep_name(rep_id) if rep_id else None]
    return " · ".join(str(p) for p in parts if p)


def _owner(node: Node, rep_id: str) -> str | None:
    """The rep to name beside a deal: none in a rep's own digest."""
    return None if node.level == "rep" else rep_id


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "") + money(value)


def _known(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and math.isfinite(value)
