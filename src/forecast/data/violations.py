"""What validation reports: each violation with its table, row, column and value, and the error
that lists them all; in words a person can act on."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecast.data.sources import RawTable
from forecast.settings import get_settings

MAX_PER_GROUP = 1000

"""Violations kept in full per (table, column, check); the rest are only counted."""

VALUE_WIDTH = 60

"""Offending values are cut to this many characters in messages."""

EXPECTED: dict[str, str] = {
    "id": "an identifier on one line, without leading or trailing spaces",
    "text": "text",
    "float": "a number like 1234.5 (digits, an optional sign and decimal point; no thousands "
    "separators or currency symbols)",
    "int": "a whole number like 42",
    "datetime": "a timestamp like 2024-03-31, 2024-03-31 14:05 or 2024-03-31T14:05:00Z (ISO 8601)",
    "date": "a date like 2024-03-31",
    "quarter": "a quarter like 2024Q1",
    "month": "a month like 2024-03",
}

FORMULA_HINT = (
    "plain text, not a spreadsheet formula: the value starts like one (=, @, + or - followed by "
    "a non-digit, tab or carriage return); remove the leading character or re-export as text"
)

# rows of these tables can be set aside one by one (with their deal's other rows)
ROW_TABLES = ("deals", "deal_history", "deal_attributes")


@dataclass(frozen=True)
class Violation:
    """One broken rule, located precisely enough to fix it in the source.

    Attributes:
        table: canonical table name ("" for problems with the import as a whole).
        source: the file path or SQL label the rows came from.
        location: `line 17` / `row 17`; "" for table-level problems.
        column: the column concerned; "" when the problem is not about one column.
        value: the offending raw value as text (cut to `VALUE_WIDTH` characters).
        expected: what was expected, or how to fix it, in plain words.
        check: short code of the rule, e.g. `type`, `required`, `unique`, `foreign_key`.
    """

    table: str
    source: str
    location: str
    column: str
    value: str
    expected: str
    check: str

    def __str__(self) -> str:
        where = self.source or self.table or "import"
        if self.location:
            where += f" {self.location}"
        if self.column:
            where += f", column {self.column}"
        if self.location or self.value:
            where += f": {_show(self.value)}"
        return f"{where} — expected {self.expected} ({self.table or 'import'}, {self.check})"


class ValidationError(Exception):
    """The import was refused; `violations` says why (at most `MAX_PER_GROUP` per group).

    Attributes:
        violations: the violations kept in full, in the order they were found.
        counts: the true number of violations per (table, column, check), kept or not.
    """

    def __init__(
        self,
        violations: Iterable[Violation],
        counts: Mapping[tuple[str, str, str], int] | None = None,
    ) -> None:
        self.violations = list(violations)
        self.hint = ""  # what would let the import go through, when something would
        self.counts: dict[tuple[str, str, str], int] = dict(
            counts
            if counts is not None
            else Counter((v.table, v.column, v.check) for v in self.violations)
        )
        super().__init__(self.violations, self.counts)

    @property
    def total(self) -> int:
        """How many problems were found, including those not kept in full."""
        return sum(self.counts.values())

    @classmethod
    def merge(cls, errors: Iterable[ValidationError]) -> ValidationError:
        """One error holding the violations and counts of several."""
        violations: list[Violation] = []
        counts: Counter[tuple[str, str, str]] = Counter()
        for err in errors:
            violations += err.violations
            counts.update(err.counts)
        return cls(violations, counts)

    def summary(self, max_shown: int) -> str:
        """A header, the counts per (table, column, check), then the first `max_shown` in full."""
        tables = {table for table, _, _ in self.counts if table}
        where = f" in {_plural(len(tables), 'table')}" if tables else ""
        lines = [f"{_plural(self.total, 'problem')}{where}; nothing was written."]
        if len(self.counts) > 1:
            lines.append("Problems per table, column and check:")
            for (table, column, check), n in sorted(self.counts.items()):
                name = ".".join(p for p in (table or "import", column) if p)
                lines.append(f"  {name} ({check}): {n}")
        shown = self.examples(max_shown)
        lines.append(
            f"{len(shown)} of {self.total}, one of each kind first:"
            if len(shown) < self.total
            else "All of them:"
        )
        lines += [f"  {v}" for v in shown]
        if len(shown) < self.total:
            lines.append(
                f"… and {self.total - len(shown)} more (FORECAST_MAX_VIOLATIONS_SHOWN lists more, "
                f"up to {MAX_PER_GROUP} per table, column and check)."
            )
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)

    def examples(self, max_shown: int) -> list[Violation]:
        """At most `max_shown` violations in the order found, one of each kind (table, column,
        check) before a second of any: a thousand bad dates must not hide the one bad reference."""
        first: dict[tuple[str, str, str], int] = {}
        for i, v in enumerate(self.violations):
            first.setdefault((v.table, v.column, v.check), i)
        chosen = set(sorted(first.values())[:max_shown])
        rest = (i for i in range(len(self.violations)) if i not in chosen)
        chosen.update(itertools.islice(rest, max(0, max_shown - len(chosen))))
        return [self.violations[i] for i in sorted(chosen)]

    def __str__(self) -> str:
        return self.summary(get_settings().max_violations_shown)


class Collector:
    """Counts every violation and keeps the first `MAX_PER_GROUP` of each group in full."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self.counts: Counter[tuple[str, str, str]] = Counter()
        # positions of the rows a bad-row policy may repair or set aside
        self.flagged: dict[tuple[str, str, str], np.ndarray] = {}

    def add(self, violation: Violation) -> None:
        key = (violation.table, violation.column, violation.check)
        if self.counts[key] < MAX_PER_GROUP:
            self.violations.append(violation)
        self.counts[key] += 1

    def rows(
        self,
        raw: RawTable,
        bad: np.ndarray,
        *,
        column: str,
        check: str,
        expected: str | Callable[[int], str],
        value: Callable[[int], str],
    ) -> None:
        """Report the rows where `bad` is true (a boolean mask over `raw.frame`)."""
        positions = np.flatnonzero(bad)
        if not len(positions):
            return
        key = (raw.name, column, check)
        if raw.name in ROW_TABLES:
            self.flagged[key] = np.union1d(self.flagged.get(key, positions), positions)
        room = max(0, MAX_PER_GROUP - self.counts[key])
        for pos in positions[:room].tolist():
            self.violations.append(
                Violation(
                    raw.name,
                    raw.source,
                    raw.location(pos),
                    column,
                    _clip(value(pos)),
                    expected(pos) if callable(expected) else expected,
                    check,
                )
            )
        self.counts[key] += len(positions)


def a_row_with(table: str, column: str, value: object) -> str:
    return f"{_article(table)} {table} row with {column} = {value}"


def a_rep_row_with(column: str, level: str, value: object) -> str:
    return f"a reps row with {column} = {value} (level {level})"


def when_text(ts: pd.Timestamp) -> str:
    """A time as a person writes it: the date alone at midnight."""
    if pd.isna(ts):
        return "(unknown)"
    ts = pd.Timestamp(ts)
    return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.isoformat(sep=" ")


def is_missing_value(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # arrays and other containers are values, not missing
        return False


def cell_text(value: object) -> str:
    if value is None or is_missing_value(value):
        return ""
    return str(value)


def _clip(text: str) -> str:
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 1] + "…"


def _show(value: str) -> str:
    return repr(value) if value else "empty"


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
