"""The contract's vocabulary: column types and the values a column may hold (stages, outcomes,
kinds, segments, ...), and the `Column` and `Table` that describe a canonical table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ColumnType = Literal["id", "text", "float", "int", "datetime", "date", "quarter", "month", "enum"]


STAGES: tuple[str, ...] = (
    "prospecting",
    "qualification",
    "proposal",
    "negotiation",
    "closed_won",
    "closed_lost",
)


OPEN_STAGES: tuple[str, ...] = STAGES[:4]


CLOSED_STAGES: tuple[str, ...] = STAGES[4:]


OUTCOMES: tuple[str, ...] = ("open", "won", "lost")


ACTIVITY_KINDS: tuple[str, ...] = ("call", "email", "meeting", "demo", "proposal", "other")


SIGNAL_KINDS: tuple[str, ...] = ("support_ticket", "satisfaction", "usage", "payment_delay")


SEGMENTS: tuple[str, ...] = ("smb", "mid_market", "enterprise")


ROLES: tuple[str, ...] = ("rep", "manager", "director", "executive")


BILLING: tuple[str, ...] = ("one_time", "subscription")


TARGET_LEVELS: tuple[str, ...] = ("rep", "team", "region", "company")


REVENUE_KINDS: tuple[str, ...] = ("recurring", "one_time")


HISTORY_ORIGINS: tuple[str, ...] = ("recorded", "derived")


KNOWN_AT: tuple[str, ...] = ("created", "closed")


TYPE_TEXT: dict[str, str] = {
    "id": "identifier (text)",
    "text": "text",
    "float": "number",
    "int": "whole number",
    "datetime": "timestamp (ISO 8601, UTC)",
    "date": "date (YYYY-MM-DD)",
    "quarter": "quarter (YYYYQn)",
    "month": "month (YYYY-MM)",
    "enum": "one of the allowed values",
}


@dataclass(frozen=True)
class Column:
    """One column of a canonical table.

    `required` means the column must be present in every source; `nullable` whether a cell may be
    empty. `references` is `table.column` for a foreign key. `minimum` bounds numbers from below.
    """

    name: str
    type: ColumnType
    description: str
    required: bool = True
    nullable: bool = False
    allowed: tuple[str, ...] = ()
    references: str | None = None
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Table:
    """One canonical table: its columns, key and the column that says when a row became known."""

    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    known_at: str | None = None
    time_note: str = ""
    extra_checks: tuple[str, ...] = field(default_factory=tuple)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.name} has no column {name!r}")
