"""What a channel would show, as a local HTML page: the Block Kit payload and the Adaptive Card
drawn side by side from the JSON that is sent (`forecast notify send --preview DIR`)."""

from __future__ import annotations

import html
import re
from typing import Any

MARKDOWN_LINK = re.compile(r"\[(.+?)\]\((\S+?)\)")
STYLE = """
body { font: 15px/1.45 -apple-system, "Segoe UI", Roboto, sans-serif; margin: 16px; color: #1d1c1d;
  background: #f4f4f5; }
.pair { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.card { background: #fff; border-radius: 8px; padding: 14px 18px; max-width: 560px; flex: 1 1 320px;
  box-shadow: 0 1px 3px rgba(0,0,0,.15); }
.card h2 { font-size: 12px; text-transform: uppercase; color: #616061; margin: 0 0 8px; }
.header { font-size: 18px; font-weight: 700; margin: 4px 0 8px; }
.fields { display: grid; grid-template-columns: 1fr 1fr; gap: 6px 16px; margin: 6px 0; }
.block { margin: 8px 0; white-space: pre-line; }
.button { display: inline-block; border: 1px solid #bbb; border-radius: 4px; padding: 4px 12px;
  text-decoration: none; color: #1d1c1d; font-weight: 600; }
.teams .large { font-size: 18px; font-weight: 700; }
.teams .bolder { font-weight: 700; margin-top: 12px; }
.teams .subtle { color: #616061; }
.teams table td { padding: 2px 12px 2px 0; vertical-align: top; }
.teams table td:first-child { font-weight: 600; }
"""


def page(title: str, slack: dict[str, Any], teams: dict[str, Any]) -> str:
    """One message in both channels' looks, as a whole HTML page."""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f'<div class="pair"><div class="card slack"><h2>Slack (Block Kit)</h2>'
        f"{_slack(slack)}</div>"
        f'<div class="card teams"><h2>Microsoft Teams (Adaptive Card)</h2>{_teams(teams)}</div>'
        f"</div></body></html>"
    )


def _slack(payload: dict[str, Any]) -> str:
    out = []
    for block in payload["blocks"]:
        kind = block["type"]
        if kind == "header":
            out.append(f'<div class="header">{html.escape(block["text"]["text"])}</div>')
        elif kind == "section":
            out.append(f'<div class="block">{_mrkdwn(block["text"]["text"])}</div>')
            fields = "".join(f"<div>{_mrkdwn(f['text'])}</div>" for f in block.get("fields", []))
            out.append(f'<div class="fields">{fields}</div>' if fields else "")
        elif kind == "actions":
            out += [
                f'<a class="button" href="{html.escape(e["url"])}">'
                f"{html.escape(e['text']['text'])}</a>"
                for e in block["elements"]
            ]
    return "".join(out)


def _mrkdwn(text: str) -> str:
    """Slack's mrkdwn (already escaped for &, <, >) as HTML: links, bold, line breaks."""
    text = re.sub(r"<(\S+?)\|(.+?)>", r'<a href="\1">\2</a>', text)
    text = re.sub(r"\*(.+?)\*", r"<b>\1</b>", text)
    return text.replace("\n", "<br>")


def _teams(payload: dict[str, Any]) -> str:
    card = payload["attachments"][0]["content"]
    out = [_element(element) for element in card["body"]]
    out += [
        f'<p><a class="button" href="{html.escape(a["url"])}">{html.escape(a["title"])}</a></p>'
        for a in card.get("actions", [])
    ]
    return "".join(out)


def _element(element: dict[str, Any]) -> str:
    if element["type"] == "FactSet":
        rows = "".join(
            f"<tr><td>{html.escape(f['title'])}</td><td>{html.escape(f['value'])}</td></tr>"
            for f in element["facts"]
        )
        return f"<table>{rows}</table>"
    style = " ".join(
        name
        for name, on in (
            ("large", element.get("size") == "Large"),
            ("bolder", element.get("weight") == "Bolder" and element.get("size") != "Large"),
            ("subtle", element.get("isSubtle")),
        )
        if on
    )
    text = MARKDOWN_LINK.sub(r'<a href="\2">\1</a>', html.escape(element["text"]))
    return f'<div class="block {style}">{text}</div>'
