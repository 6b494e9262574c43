"""A digest or an alert as content, before it is written for Slack, Teams or e-mail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["digest", "alert"]


@dataclass(frozen=True)
class Line:
    """One line of a section; `link`: the dashboard page it is about."""

    text: str
    link: str | None = None


@dataclass(frozen=True)
class Section:
    """A titled part of a message: figures (label, value) and lines."""

    title: str
    facts: tuple[tuple[str, str], ...] = ()
    lines: tuple[Line, ...] = ()
    more: int = 0  # lines left out (the message says how many)


@dataclass(frozen=True)
class Message:
    """What one node's channel is told.

    Attributes:
        key: the same on every run that would tell the same thing (a digest: node, quarter and
            week of the data; an alert: what changed and when), so it is sent at most once.
        kind, level, node: a digest or an alert, for which node of the org tree.
        title, summary: the headline and one sentence (a notification's preview text).
        sections: the body.
        link: the dashboard page the message is about.
    """

    key: str
    kind: Kind
    level: str
    node: str
    title: str
    summary: str
    sections: tuple[Section, ...]
    link: str


def money(value: float) -> str:
    """$1.25M, $48k, $900: amounts as a manager reads them."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value >= 1e6:
        return f"{sign}${value / 1e6:,.2f}M"
    return f"{sign}${value / 1e3:,.0f}k" if value >= 1e3 else f"{sign}${value:,.0f}"


def points(change: float) -> str:
    """A change of probability in percentage points: '+12 pts', '-3 pts'."""
    rounded = round(100 * change)
    return f"{rounded:+d} pts" if rounded else "±0 pts"


def dashboard_page(base: str, path: str) -> str:
    """The address of a dashboard page, for a link."""
    return f"{base.rstrip('/')}/dashboard/{path}"
