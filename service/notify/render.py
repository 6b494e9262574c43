"""A `Message` written three ways: Slack Block Kit, a Microsoft Teams Adaptive Card, plain text.

Each stays within what its receiver accepts (Slack: 50 blocks, 3,000 characters in a section's
text, 150 in a header, 10 fields of 2,000; Teams: Adaptive Card 1.4 inside a message of at most
28 KB): lines that do not fit are left out and counted ("and 4 more"), never cut mid-word.
"""

from __future__ import annotations

import json
from typing import Any

from service.notify.message import Line, Message, Section

SLACK_BLOCKS = 50
SLACK_TEXT = 3000
SLACK_HEADER = 150
SLACK_FIELDS = 10
SLACK_FIELD_TEXT = 2000
TEAMS_CARD_VERSION = "1.4"  # what Teams renders on desktop, web and mobile alike
TEAMS_BYTES = 28_000
OPEN = "Open in the dashboard"


def slack_payload(message: Message) -> dict[str, Any]:
    """An incoming-webhook body: Block Kit blocks and the fallback `text` notifications show."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(_cut(message.title, SLACK_HEADER))},
        {"type": "section", "text": _mrkdwn(_cut(_escape(message.summary), SLACK_TEXT))},
    ]
    for section in message.sections:
        blocks += _slack_section(section)
    blocks = blocks[: SLACK_BLOCKS - 1]
    blocks.append(
        {
            "type": "actions",
            "elements": [{"type": "button", "text": _plain(OPEN), "url": message.link}],
        }
    )
    return {"text": _cut(message.summary, SLACK_TEXT), "blocks": blocks}


def _slack_section(section: Section) -> list[dict[str, Any]]:
    title = f"*{_escape(section.title)}*"
    blocks: list[dict[str, Any]] = []
    if section.facts:
        fields = [
            _mrkdwn(_cut(f"*{_escape(label)}*\n{_escape(value)}", SLACK_FIELD_TEXT))
            for label, value in section.facts[:SLACK_FIELDS]
        ]
        blocks.append({"type": "section", "text": _mrkdwn(title), "fields": fields})
    lines = [_slack_line(line) for line in section.lines]
    if lines or not section.facts:
        head = [] if section.facts else [title]
        text = _fitting(head, lines, section.more, SLACK_TEXT) or title
        blocks.append({"type": "section", "text": _mrkdwn(text)})
    return blocks


def _slack_line(line: Line) -> str:
    text = _escape(line.text)
    return f"• <{line.link}|{text}>" if line.link else f"• {text}"


def teams_payload(message: Message) -> dict[str, Any]:
    """A Teams workflow webhook body: a message holding one Adaptive Card."""
    body: list[dict[str, Any]] = [
        _text(message.title, size="Large", weight="Bolder"),
        _text(message.summary),
    ]
    for section in message.sections:
        body.append(_text(section.title, weight="Bolder", spacing="Medium"))
        if section.facts:
            facts = [{"title": label, "value": value} for label, value in section.facts]
            body.append({"type": "FactSet", "facts": facts})
        body += [_text(_teams_line(line)) for line in section.lines]
        if section.more:
            body.append(_text(f"… and {section.more} more", isSubtle=True))
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": TEAMS_CARD_VERSION,
        "body": body,
        "actions": [{"type": "Action.OpenUrl", "title": OPEN, "url": message.link}],
        "msteams": {"width": "Full"},
    }
    card["body"] = _within(body, TEAMS_BYTES - _size(_teams_message({**card, "body": []})))
    return _teams_message(card)


def _within(body: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The card's elements that fit in `budget` bytes, from the top; the rest said to be in
    the dashboard."""
    sizes = [_size(element) + 2 for element in body]  # and ", " after it
    if sum(sizes) <= budget:
        return body
    rest = _text("… the rest is in the dashboard", isSubtle=True)
    budget -= _size(rest) + 2
    kept, used = 0, 0
    while kept < len(body) and used + sizes[kept] <= budget:
        used += sizes[kept]
        kept += 1
    return [*body[: max(kept, 2)], rest]


def _teams_message(card: dict[str, Any]) -> dict[str, Any]:
    attachment = {
        "contentType": "application/vnd.microsoft.card.adaptive",
        "contentUrl": None,
        "content": card,
    }
    return {"type": "message", "attachments": [attachment]}


def _teams_line(line: Line) -> str:
    text = line.text.replace("[", "(").replace("]", ")")
    return f"- [{text}]({line.link})" if line.link else f"- {text}"


def plain_text(message: Message) -> str:
    """The message for e-mail: title, summary, sections, each link written out."""
    out = [message.title, "=" * len(message.title), message.summary, ""]
    for section in message.sections:
        out += [section.title, "-" * len(section.title)]
        out += [f"{label}: {value}" for label, value in section.facts]
        out += [
            f"- {line.text}" + (f" ({line.link})" if line.link else "") for line in section.lines
        ]
        out += [f"- … and {section.more} more"] if section.more else []
        out.append("")
    out.append(f"{OPEN}: {message.link}")
    return "\n".join(out) + "\n"


# --- helpers --------------------------------------------------------------------------------------


def _fitting(head: list[str], lines: list[str], more: int, limit: int) -> str:
    """`head` and as many `lines` as fit in `limit` characters, then how many were left out."""
    kept = list(head)
    for n, line in enumerate(lines):
        left = len(lines) - n + more
        tail = f"\n… and {left} more"
        if len("\n".join([*kept, line])) + len(tail) > limit:
            return "\n".join([*kept, tail.strip()])
        kept.append(line)
    if more:
        kept.append(f"… and {more} more")
    return "\n".join(kept)


def _cut(text: str, limit: int) -> str:
    """`text` within `limit` characters, cut at a word with an ellipsis when longer."""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0] + "…"


def _escape(text: str) -> str:
    """Slack's three control characters in mrkdwn text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _size(payload: dict[str, Any]) -> int:
    return len(json.dumps(payload, ensure_ascii=False).encode("utf-8"))
