"""Validation: every rule of the data contract, applied to raw tables from any source.

`validate` turns raw tables (text from CSV, typed values from Parquet or SQL) into canonical
`CrmTables`, or raises one `ValidationError` that lists every problem found. All checks are
vectorised (pyarrow compute and numpy); `Violation` objects are built only for bad rows, and at most
`MAX_PER_GROUP` per (table, column, check), while the counts stay exact.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from forecast.data.derive import derive_history
from forecast.data.schema import (
    CLOSED_STAGES,
    OPEN_STAGES,
    OUTCOMES,
    TABLE_NAMES,
    TABLES,
    TYPE_TEXT,
    Column,
    Table,
)
from forecast.data.sources import RawTable
from forecast.data.tables import STRING, CrmTables
from forecast.settings import get_settings

MAX_PER_GROUP = 1000
"""Violations kept in full per (table, column, check); the rest are only counted."""

VALUE_WIDTH = 60
"""Offending values are cut to this many characters in messages."""

# Time columns that must not lie after the export's as-of, besides each table's `known_at`.
_LATER_TIMES: dict[str, tuple[str, ...]] = {"deals": ("closed_at",)}
# Which reps column a target owner names, per target level; `company` is a literal.
_OWNER_COLUMNS: dict[str, str] = {"rep": "rep_id", "team": "team", "region": "region"}
_COMPANY = "company"
# The outcome each stage implies: open stages are open, closed_won is won, closed_lost is lost.
_STAGE_OUTCOME: dict[str, str] = {s: OUTCOMES[0] for s in OPEN_STAGES} | dict(
    zip(CLOSED_STAGES, OUTCOMES[1:], strict=True)
)

_EXPECTED: dict[str, str] = {
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
_FORMULA_HINT = (
    "plain text, not a spreadsheet formula: the value starts like one (=, @, + or - followed by "
    "a non-digit, tab or carriage return); remove the leading character or re-export as text"
)

# RE2 patterns (pyarrow compute), applied to trimmed cells; _FORMULA and _ID_SUSPECT see raw ones.
_FORMULA = r"^(?:[=@\t\r]|[+-][^0-9])"
_ID_SUSPECT = r"^\s|\s$|[\r\n]|^[=@+-]"
_FLOAT = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
_INT = r"^[+-]?\d+(?:\.0*)?$"
_DATETIME = (
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
)
_ZONE = r"(?:Z|[+-]\d{2}:?\d{2})$"
_MONTH = r"^\d{4}-\d{2}$"
_QUARTER = r"^\d{4}Q[1-4]$"
_ATTRIBUTE_NAME = r"[a-z][a-z0-9_]*"


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
        shown = self.violations[:max_shown]
        lines.append(
            f"First {len(shown)} of {self.total}:" if len(shown) < self.total else "All of them:"
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

    def __str__(self) -> str:
        return self.summary(get_settings().max_violations_shown)


ORDER_VALUE_COLUMNS = ("amount", "quantity", "unit_price")

BAD_ROW_POLICIES: tuple[str, ...] = ("refuse", "repair", "quarantine")
"""What an import does with rows whose times are out of order (closed before created, a history
row outside its deal's life): refuse the import, repair the row, or set it aside."""

_REPAIRABLE = frozenset(
    {("deals", "closed_at", "time_order"), ("deal_history", "changed_at", "time_order")}
)
# tables an export may leave out: references to them are then not checked (their features are off)
OPTIONAL_PARENTS = ("reps", "accounts", "products")
MAX_SET_ASIDE = 0.1  # a problem in more of the deals than this (and more than MIN_SET_ASIDE)
MIN_SET_ASIDE = 10  # is the mapping's to fix, not rows to set aside
# rows of these tables can be set aside one by one (with their deal's other rows)
_ROW_TABLES = ("deals", "deal_history")


@dataclass(frozen=True)
class Checked:
    """A valid import: the canonical tables, and what was repaired, set aside or derived.

    Attributes:
        tables: the canonical tables.
        set_aside: one entry per row repaired or quarantined under the bad-row policy, located
            in the source like any violation (its `check` says `repaired` or `quarantined`).
        derived: the canonical tables written from the others (`deal_history` for a deals-only
            export).
    """

    tables: CrmTables
    set_aside: tuple[Violation, ...] = ()
    derived: tuple[str, ...] = ()


def validate(raw: Mapping[str, RawTable], *, as_of: pd.Timestamp) -> CrmTables:
    """Check raw tables against the contract and return them as canonical `CrmTables`.

    Rows out of time order are refused; `check` can repair or set them aside instead.

    Raises:
        ValidationError: listing every problem found, if there is any.
    """
    return check(raw, as_of=as_of).tables


def check(raw: Mapping[str, RawTable], *, as_of: pd.Timestamp, bad_rows: str = "refuse") -> Checked:
    """Check raw tables against the contract; derive what a deals-only export lacks.

    Args:
        raw: raw tables by canonical name; tables that are absent are taken as empty (a
            reference to an absent table is not checked: what it would give is then off).
        as_of: the export's as-of; nothing may have happened after it. A time zone, if any, is
            converted to UTC.
        bad_rows: one of BAD_ROW_POLICIES, for deals closed before they were created and
            history rows outside their deal's life: `refuse` the import, `repair` (a deal's
            created_at becomes its closed_at; such history rows are set aside) or `quarantine`
            (the rows are set aside with their deal's history and activities). Either way each
            row is reported with its file and line, and every other problem still refuses.

    Returns:
        The canonical tables, what was set aside, and which tables were derived.

    Raises:
        ValidationError: listing every problem found, if there is any.
    """
    if bad_rows not in BAD_ROW_POLICIES:
        raise ValueError(f"bad_rows must be one of {', '.join(BAD_ROW_POLICIES)}, not {bad_rows!r}")
    as_of = _naive_utc(pd.Timestamp(as_of))
    checked, out = _check_all(raw, as_of)
    set_aside: list[Violation] = []
    if out.counts and _can_set_aside(checked, out, bad_rows):
        raw, set_aside = _set_aside(checked, out, bad_rows)
        checked, out = _check_all(raw, as_of)
    if out.counts:
        error = ValidationError(out.violations, out.counts)
        if bad_rows == "refuse":
            error.hint = _set_aside_hint(checked, out, as_of)
        raise error
    frames = {name: c.canonical() for name, c in checked.items()}
    frames["orders"] = order_amounts(frames["orders"])
    derived: tuple[str, ...] = ()
    if len(frames["deals"]) and not len(frames["deal_history"]):
        frames["deal_history"] = derive_history(frames["deals"])
        derived = ("deal_history",)
    tables = CrmTables.from_frames(frames, as_of=as_of)
    return Checked(tables, tuple(set_aside), derived)


def _check_all(
    raw: Mapping[str, RawTable], as_of: pd.Timestamp
) -> tuple[dict[str, _Checked], _Collector]:
    out = _Collector()
    for name, table in raw.items():
        if name not in TABLES:
            out.add(
                Violation(
                    name,
                    table.source,
                    "",
                    "",
                    "",
                    f"one of the canonical tables {', '.join(TABLE_NAMES)}",
                    "unknown_table",
                )
            )
    checked = {
        name: _check_table(RawTable(name, raw[name].frame, raw[name].source, raw[name].lines), out)
        if name in raw
        else _Checked(TABLES[name], RawTable(name, pd.DataFrame(), ""), {}, {})
        for name in TABLE_NAMES
    }
    present = {name for name in TABLE_NAMES if name in raw and len(raw[name].frame)}
    _check_foreign_keys(checked, present, out)
    _check_target_owners(checked, present, out)
    _check_reps(checked["reps"], out)
    _check_activities(checked["activities"], out)
    _check_order_amounts(checked["orders"], out)
    _check_attribute_names(checked["deal_attributes"], out)
    _check_deals(checked["deals"], out)
    _check_history(checked["deal_history"], checked["deals"], out)
    _check_future(checked, as_of, out)
    return checked, out


def _can_set_aside(checked: dict[str, _Checked], out: _Collector, policy: str) -> bool:
    """Whether every problem is a row the policy can repair or set aside.

    A value missing from a value map (`allowed`) is the mapping's to fix, never a row to set
    aside; nor is a problem in more than MAX_SET_ASIDE of the deals (and MIN_SET_ASIDE).
    """
    if policy == "repair":
        return set(out.counts) <= _REPAIRABLE
    if policy != "quarantine" or not checked["deals"].n or not checked["deals"].has("deal_id"):
        return False
    rows = all(
        key[0] in _ROW_TABLES and key in out.flagged and key[2] != "allowed" for key in out.counts
    )
    limit = max(MAX_SET_ASIDE * checked["deals"].n, MIN_SET_ASIDE)
    return rows and len(_bad_deal_ids(checked, out)) <= limit


def _set_aside_hint(checked: dict[str, _Checked], out: _Collector, as_of: pd.Timestamp) -> str:
    """The `--bad-rows` choices that would let the import through: tried, not guessed."""
    working = []
    for policy in ("quarantine", "repair"):
        if _can_set_aside(checked, out, policy):
            raw, _ = _set_aside(checked, out, policy)
            if not _check_all(raw, as_of)[1].counts:
                working.append(policy)
    if not working:
        return ""
    choices = " or ".join(f"`--bad-rows {p}`" for p in working)
    return (
        f"Every problem is in a row of deals or deal_history: {choices} imports everything "
        "else and lists each row it repaired or left out."
    )


def _bad_deal_ids(checked: dict[str, _Checked], out: _Collector) -> set[str]:
    """Deals to leave out: those with a bad row of their own or a bad history row, except an
    id that a good deals row still carries (a repeated row is left out alone)."""
    flagged = {key: rows for key, rows in out.flagged.items() if key in out.counts}
    ids: set[str] = set()
    for (table, _, _), rows in flagged.items():
        frame = checked[table].raw.frame
        if "deal_id" in frame:
            ids |= set(frame["deal_id"].iloc[rows].dropna().astype(str))
    deal_rows = np.unique(
        np.concatenate([[], *(rows for key, rows in flagged.items() if key[0] == "deals")])
    ).astype(int)
    deals = checked["deals"].raw.frame
    if "deal_id" in deals:
        keep = np.ones(len(deals), dtype=bool)
        keep[deal_rows] = False
        ids -= set(deals["deal_id"][keep].dropna().astype(str)) - _ids_of_bad_history(checked, out)
    return ids


def _ids_of_bad_history(checked: dict[str, _Checked], out: _Collector) -> set[str]:
    history = checked["deal_history"].raw.frame
    ids: set[str] = set()
    for key, rows in out.flagged.items():
        if key in out.counts and key[0] == "deal_history" and "deal_id" in history:
            ids |= set(history["deal_id"].iloc[rows].dropna().astype(str))
    return ids


def _set_aside(
    checked: dict[str, _Checked], out: _Collector, policy: str
) -> tuple[dict[str, RawTable], list[Violation]]:
    """The raw tables with the flagged rows repaired or dropped, and a note per row."""
    raw = {name: c.raw for name, c in checked.items() if c.n or c.raw.source}
    deals = checked["deals"]
    flagged = {key: rows for key, rows in out.flagged.items() if key in out.counts}
    bad_deals = np.unique(
        np.concatenate([[], *(rows for key, rows in flagged.items() if key[0] == "deals")])
    ).astype(int)
    if policy == "repair":
        frame = deals.raw.frame.copy()
        created = frame.columns.get_loc("created_at")
        frame.iloc[bad_deals, created] = frame["closed_at"].iloc[bad_deals].to_numpy()
        raw["deals"] = RawTable("deals", frame, deals.raw.source, deals.raw.lines)
        deal_note = "repaired: created_at set to closed_at (the deal was entered after it closed)"
    else:
        # a deal with a bad history row goes whole: its history without the row would no
        # longer end in the deal's current stage
        dropped = _bad_deal_ids(checked, out)
        rows = deals.raw.frame["deal_id"].astype(str).isin(dropped).to_numpy(bool)
        bad_deals = np.union1d(bad_deals, np.flatnonzero(rows)).astype(int)
        raw["deals"] = _drop_rows(deals.raw, bad_deals)
        for name in ("deal_history", "deal_attributes", "activities"):
            child = checked[name]
            if child.n and "deal_id" in child.raw.frame:
                ids = child.raw.frame["deal_id"].astype(str)
                raw[name] = _drop_rows(raw[name], np.flatnonzero(ids.isin(dropped).to_numpy(bool)))
        deal_note = (
            "quarantined: the deal and its history, attributes and activities were not imported"
        )
    history_note = (
        "quarantined: this history row was not imported"
        if policy == "repair"
        else "quarantined: this history row and its deal were not imported"
    )
    bad_history = [rows for key, rows in flagged.items() if key[0] == "deal_history"]
    if bad_history and "deal_history" in raw:
        # positions of the checked frame; rows of quarantined deals may be gone already
        original = checked["deal_history"].raw.frame.index[np.unique(np.concatenate(bad_history))]
        history = raw["deal_history"]
        rows = np.flatnonzero(history.frame.index.isin(original))
        raw["deal_history"] = _drop_rows(history, rows)
    notes = [
        Violation(
            v.table,
            v.source,
            v.location,
            v.column,
            v.value,
            f"{v.expected}; {deal_note if v.table == 'deals' else history_note}",
            (deal_note if v.table == "deals" else history_note).split(":")[0],
        )
        for v in out.violations
        if (v.table, v.column, v.check) in flagged
    ]
    return raw, notes


def _drop_rows(raw: RawTable, positions: np.ndarray) -> RawTable:
    keep = np.ones(len(raw.frame), dtype=bool)
    keep[positions] = False
    lines = None if raw.lines is None else np.asarray(raw.lines)[keep]
    if lines is None:  # keep the row numbers of the source, not of what is left
        lines = np.flatnonzero(keep) + 1
    return RawTable(raw.name, raw.frame[keep], raw.source, lines)


# --- collecting violations ---------------------------------------------------------------------


class _Collector:
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
        if raw.name in _ROW_TABLES:
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


@dataclass
class _Checked:
    """One table after its own checks: the raw frame and the parsed canonical columns.

    `values` holds a canonical Series (NA where empty or invalid) for each contract column the
    source had; `empty` whether each cell was empty in the source.
    """

    table: Table
    raw: RawTable
    values: dict[str, pd.Series]
    empty: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        return len(self.raw.frame)

    def has(self, *columns: str) -> bool:
        return all(c in self.values for c in columns)

    def cell(self, column: str) -> Callable[[int], str]:
        """The raw text of `column` at a row position, for messages."""
        series = self.raw.frame[column]
        return lambda pos: _cell_text(series.iat[pos])

    def canonical(self) -> pd.DataFrame:
        """The parsed columns in contract order; absent optional columns are all empty."""
        return pd.DataFrame(
            {
                c.name: self.values[c.name] if c.name in self.values else _nulls(c, self.n)
                for c in self.table.columns
            }
        )


# --- one table: columns, types, bounds, allowed values, keys --------------------------------------


def _check_table(raw: RawTable, out: _Collector) -> _Checked:
    """Check the columns and cells of one table; parse the cells it can."""
    table = TABLES[raw.name]
    frame = raw.frame.reset_index(drop=True)
    names = pd.Index(frame.columns).map(str)
    for name in sorted(set(names[names.duplicated()])):
        out.add(
            Violation(
                raw.name,
                raw.source,
                "",
                name,
                "",
                f"each column once; {name!r} appears {int((names == name).sum())} times",
                "duplicate_column",
            )
        )
    # Readers pass duplicate names through; after reporting them, the first one is used.
    frame = frame.loc[:, ~names.duplicated()]
    frame.columns = names[~names.duplicated()]
    raw = RawTable(raw.name, frame, raw.source, raw.lines)
    checked = _Checked(table, raw, {}, {})
    for col in table.columns:
        if col.name not in frame.columns:
            if col.required:
                out.add(
                    Violation(
                        raw.name,
                        raw.source,
                        "",
                        col.name,
                        "",
                        f"a column {col.name!r} ({TYPE_TEXT[col.type]}) in the header; found: "
                        f"{', '.join(frame.columns) or 'no columns'}",
                        "missing_column",
                    )
                )
            continue
        _check_column(checked, col, out)
    _check_unique(checked, out)
    return checked


def _check_column(checked: _Checked, col: Column, out: _Collector) -> None:
    """Parse one column, reporting empty, malformed, out-of-bounds and disallowed cells."""
    raw = checked.raw
    values, empty, problems = _parse(col, raw.frame[col.name])
    checked.values[col.name] = values
    checked.empty[col.name] = empty
    if not col.nullable:
        out.rows(
            raw,
            empty,
            column=col.name,
            check="required",
            expected=f"a value: {col.name} may not be empty; its type is {TYPE_TEXT[col.type]}",
            value=checked.cell(col.name),
        )
    for bad, check, expected in problems:
        out.rows(
            raw, bad, column=col.name, check=check, expected=expected, value=checked.cell(col.name)
        )
    if col.type in ("float", "int"):
        numbers = values.to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(invalid="ignore"):
            for bound, check, below in (
                (col.minimum, "minimum", True),
                (col.maximum, "maximum", False),
            ):
                if bound is None:
                    continue
                bad = numbers < bound if below else numbers > bound
                out.rows(
                    raw,
                    bad,
                    column=col.name,
                    check=check,
                    expected=f"a number {'>=' if below else '<='} {bound:g}",
                    value=checked.cell(col.name),
                )


def _check_unique(checked: _Checked, out: _Collector) -> None:
    """Each key value at most once; every repeat after the first is reported."""
    key = checked.table.key
    if not key or not checked.n or not checked.has(*key):
        return
    codes = np.zeros(checked.n, dtype="int64")
    for name in key:
        part, uniques = pd.factorize(checked.values[name], use_na_sentinel=True)
        # Combine then re-factorize so the combined code never exceeds the row count.
        combined = np.where((codes < 0) | (part < 0), -1, codes * len(uniques) + part)
        codes = np.where(combined < 0, -1, pd.factorize(combined)[0])
    valid = codes >= 0
    repeated = np.zeros(checked.n, dtype=bool)
    repeated[valid] = pd.Series(codes[valid]).duplicated().to_numpy()
    if not repeated.any():
        return
    _, first_index, inverse = np.unique(codes[valid], return_index=True, return_inverse=True)
    first = np.full(checked.n, -1)
    first[valid] = np.flatnonzero(valid)[first_index[inverse]]
    raw = checked.raw
    frame = raw.frame
    out.rows(
        raw,
        repeated,
        column=", ".join(key),
        check="unique",
        expected=lambda pos: (
            f"a unique {' + '.join(key)}; the same key is already at "
            f"{raw.location(int(first[pos]))}"
        ),
        value=lambda pos: ", ".join(_cell_text(frame[name].iat[pos]) for name in key),
    )


# --- parsing cells -------------------------------------------------------------------------------

_Problems = list[tuple[np.ndarray, str, str]]


def _parse(col: Column, series: pd.Series) -> tuple[pd.Series, np.ndarray, _Problems]:
    """The column as canonical values (NA where empty or invalid), its empty cells and problems.

    Text (CSV, text columns of typed sources) is parsed with the contract's formats; typed values
    from Parquet or SQL are accepted when they already have the right kind.
    """
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(object)
    text = _as_text(series)
    if text is None and col.type in ("float", "int"):
        return _typed_number(col, series)
    if text is None and col.type in ("datetime", "date", "month"):
        typed = _typed_time(col, series)
        if typed is not None:
            return typed
    if text is None:
        text = _stringify(series)
    return _parse_text(col, text)


def _parse_text(col: Column, text: pa.ChunkedArray) -> tuple[pd.Series, np.ndarray, _Problems]:
    trimmed = pc.utf8_trim_whitespace(text)
    empty = _mask(pc.equal(trimmed, ""), null=True)
    problems: _Problems = []
    if col.type in ("id", "text"):
        formula = odd = np.zeros(len(text), dtype=bool)
        # The detailed tests run only when some cell looks odd: the happy path is one regex.
        if (_mask(pc.match_substring_regex(text, _ID_SUSPECT)) & ~empty).any():
            formula = _mask(pc.match_substring_regex(text, _FORMULA)) & ~empty
            if col.type == "id":
                padded = _mask(pc.not_equal(text, trimmed))
                odd = (padded | _mask(pc.match_substring_regex(text, "[\r\n]"))) & ~empty
                odd &= ~formula
        problems.append((formula, "formula", _FORMULA_HINT))
        if col.type == "id":
            # Ids are kept exactly: a padded id would silently fail to join, so it is refused.
            problems.append((odd, "type", _EXPECTED["id"]))
            return _strings(text, empty | formula | odd), empty, problems
        # Padding around free text carries no meaning (exports add it), so it is trimmed.
        return _strings(trimmed, empty | formula), empty, problems
    if col.type == "enum":
        bad = ~_mask(pc.is_in(trimmed, value_set=pa.array(col.allowed))) & ~empty
        problems.append((bad, "allowed", f"one of {', '.join(col.allowed)}"))
        return _strings(trimmed, empty | bad), empty, problems
    if col.type == "quarter":
        bad = ~_mask(pc.match_substring_regex(trimmed, _QUARTER)) & ~empty
        problems.append((bad, "type", _EXPECTED["quarter"]))
        return _strings(trimmed, empty | bad), empty, problems
    if col.type in ("float", "int"):
        values, bad = _text_number(col, trimmed, empty)
    else:
        values, bad = _text_time(col, trimmed, empty)
    problems.append((bad, "type", _EXPECTED[col.type]))
    return values, empty, problems


def _text_number(
    col: Column, trimmed: pa.ChunkedArray, empty: np.ndarray
) -> tuple[pd.Series, np.ndarray]:
    pattern = _INT if col.type == "int" else _FLOAT
    ok = _mask(pc.match_substring_regex(trimmed, pattern)) & ~empty
    candidates = _keep(trimmed, ok)
    if col.type == "int":
        # `12.0` is whole; Arrow's integer cast wants neither the `.0` nor a leading `+`.
        candidates = pc.replace_substring_regex(candidates, r"\.0*$|^\+", "")
        try:
            numbers = pc.cast(candidates, pa.int64())
        except pa.ArrowInvalid:  # beyond int64: only those cells are invalid
            numbers = pa.array(
                [
                    None if v is None or abs(int(v)) >= 2**63 else int(v)
                    for v in candidates.to_pylist()
                ],
                pa.int64(),
            )
        missing = _mask(pc.is_null(numbers), null=True)
        values = pd.Series(pd.arrays.IntegerArray(_np(pc.fill_null(numbers, 0)), missing))
        return values, missing & ~empty
    numbers = _np(pc.fill_null(pc.cast(candidates, pa.float64()), np.nan)).astype("float64")
    bad = ~np.isfinite(numbers) & ~empty  # a 400-digit exponent parses to inf
    numbers[bad] = np.nan
    return pd.Series(numbers), bad


def _text_time(
    col: Column, trimmed: pa.ChunkedArray, empty: np.ndarray
) -> tuple[pd.Series, np.ndarray]:
    if col.type == "month":
        short = _mask(pc.match_substring_regex(trimmed, _MONTH))
        trimmed = pc.if_else(
            pa.array(short),
            pc.binary_join_element_wise(
                trimmed, pa.scalar("01", trimmed.type), pa.scalar("-", trimmed.type)
            ),
            trimmed,
        )
    ok = _mask(pc.match_substring_regex(trimmed, _DATETIME)) & ~empty
    zoned = _mask(pc.match_substring_regex(trimmed, _ZONE)) & ok
    nanos = np.full(len(ok), np.iinfo("int64").min, dtype="int64")  # NaT
    for part, arrow_type in ((ok & ~zoned, pa.timestamp("ns")), (zoned, pa.timestamp("ns", "UTC"))):
        if part.any():
            nanos[part] = _cast_times(pc.filter(trimmed, pa.array(part)), arrow_type)
    values = pd.Series(nanos.view("datetime64[ns]"))
    bad = values.isna().to_numpy() & ~empty
    if col.type == "datetime":
        return values, bad
    # Dates and months carry no time of day (or zone); months also start on the 1st.
    fits = (values == values.dt.normalize()).to_numpy() & ~zoned
    if col.type == "month":
        fits &= (values.dt.day == 1).to_numpy()
    bad |= ~fits & ~empty
    return values.where(~bad), bad


def _cast_times(text: pa.ChunkedArray, arrow_type: pa.DataType) -> np.ndarray:
    """ISO 8601 text to UTC nanoseconds; impossible dates (2024-02-30, year 9999) become NaT."""
    try:
        return _np(pc.cast(pc.cast(text, arrow_type), pa.int64()))
    except pa.ArrowInvalid:  # rare: fall back to a forgiving parser for this subset only
        parsed = pd.to_datetime(_np_object(text), format="ISO8601", utc=True, errors="coerce")
        return parsed.tz_localize(None).as_unit("ns").asi8


def _typed_number(col: Column, series: pd.Series) -> tuple[pd.Series, np.ndarray, _Problems]:
    empty = series.isna().to_numpy()
    numeric = pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_object_dtype(
        series.dtype
    )
    if pd.api.types.is_bool_dtype(series.dtype) or not numeric:
        numbers = np.full(len(series), np.nan)  # e.g. true/false or times: not numbers
    else:
        numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = ~np.isfinite(numbers) & ~empty
    if col.type == "int":
        with np.errstate(invalid="ignore"):
            bad |= (np.floor(numbers) != numbers) & ~empty & ~bad
            bad |= np.abs(numbers) >= 2.0**63
    numbers = np.where(bad | empty, np.nan, numbers)
    if col.type == "int":
        mask = np.isnan(numbers)
        values = pd.Series(pd.arrays.IntegerArray(np.nan_to_num(numbers).astype("int64"), mask))
    else:
        values = pd.Series(numbers)
    return values, empty, [(bad, "type", _EXPECTED[col.type])]


def _typed_time(col: Column, series: pd.Series) -> tuple[pd.Series, np.ndarray, _Problems] | None:
    """Datetime values from Parquet or SQL; None when they are not times at all."""
    empty = series.isna().to_numpy()
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        values = series
        if values.dt.tz is not None:
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        # Units coarser than ns can hold years ns cannot (e.g. 9999-12-31): those are invalid.
        low, high = pd.Timestamp.min, pd.Timestamp.max
        inside = ((values >= low) & (values <= high)).to_numpy()
        values = pd.Series(values.where(inside).to_numpy().astype("datetime64[ns]"))
    elif pd.api.types.is_object_dtype(series.dtype) and pd.api.types.infer_dtype(
        series, skipna=True
    ) in (
        "datetime",
        "datetime64",
        "date",
    ):
        values = pd.to_datetime(series, utc=True, errors="coerce").dt.tz_localize(None)
        values = values.dt.as_unit("ns").reset_index(drop=True)
    else:
        return None
    bad = values.isna().to_numpy() & ~empty
    if col.type != "datetime":
        fits = (values == values.dt.normalize()).to_numpy()
        if col.type == "month":
            fits &= (values.dt.day == 1).to_numpy()
        bad |= ~fits & ~empty
    return values.where(~bad), empty, [(bad, "type", _EXPECTED[col.type])]


def _as_text(series: pd.Series) -> pa.ChunkedArray | None:
    """The column as Arrow large strings when it holds text, else None."""
    dtype = series.dtype
    is_text = isinstance(dtype, pd.StringDtype) or (
        isinstance(dtype, pd.ArrowDtype) and pa.types.is_string(dtype.pyarrow_dtype)
    )
    if not is_text and pd.api.types.is_object_dtype(dtype):
        is_text = pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty")
    if not is_text:
        return None
    arr = pa.array(
        series if pd.api.types.is_object_dtype(dtype) else series.array, from_pandas=True
    )
    arr = arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])
    return arr.cast(pa.large_string())


def _stringify(series: pd.Series) -> pa.ChunkedArray:
    """Typed values (e.g. integer ids from SQL) as text, so text rules apply to them."""
    if pd.api.types.is_integer_dtype(series.dtype):
        series = series.astype("Int64").astype(STRING)
    elif pd.api.types.is_float_dtype(series.dtype):
        whole = series.dropna()
        if (whole == np.floor(whole)).all() and (whole.abs() < 2.0**53).all():
            series = series.astype("Int64").astype(STRING)  # 12.0 is the id 12
    if not isinstance(series.dtype, pd.StringDtype):
        series = pd.Series(
            [None if _is_missing(v) else str(v) for v in series.tolist()], dtype=STRING
        )
    return _as_text(series) or pa.chunked_array([pa.nulls(len(series), pa.large_string())])


def _strings(text: pa.ChunkedArray, drop: np.ndarray) -> pd.Series:
    """Canonical string Series; NA where `drop`."""
    return pd.Series(pd.arrays.ArrowStringArray(_keep(text, ~drop)))


def _keep(values: pa.ChunkedArray, keep: np.ndarray) -> pa.ChunkedArray:
    """`values` with null wherever `keep` is false."""
    kept = pc.if_else(pa.array(keep), values, pa.scalar(None, values.type))
    return kept if isinstance(kept, pa.ChunkedArray) else pa.chunked_array([kept])


def _nulls(col: Column, n: int) -> pd.Series:
    """An all-empty canonical column, for optional columns the source does not have."""
    if col.type in ("float",):
        return pd.Series(np.full(n, np.nan))
    if col.type == "int":
        return pd.Series(pd.arrays.IntegerArray(np.zeros(n, "int64"), np.ones(n, bool)))
    if col.type in ("datetime", "date", "month"):
        return pd.Series(np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]"))
    return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([pa.nulls(n, pa.large_string())])))


# --- rules across rows and tables ----------------------------------------------------------------


def _check_foreign_keys(checked: dict[str, _Checked], present: set[str], out: _Collector) -> None:
    """Every non-empty reference names an existing row of the referenced table."""
    for child in checked.values():
        for col in child.table.columns:
            if not col.references or not child.has(col.name) or not child.n:
                continue
            ref_table, ref_col = col.references.split(".")
            parent = checked[ref_table]
            if ref_table not in present and ref_table in OPTIONAL_PARENTS:
                continue  # an export without the table: what it would give is off, not wrong
            if ref_table in present and not parent.has(ref_col):
                continue  # the missing column is reported already; every lookup would fail
            known = parent.values[ref_col] if parent.has(ref_col) else pd.Series([], dtype=STRING)
            _report_unknown(
                child,
                col.name,
                known,
                out,
                partial(_a_row_with, ref_table, ref_col),
                missing_note=ref_table not in present,
                ref_table=ref_table,
            )


def _check_target_owners(checked: dict[str, _Checked], present: set[str], out: _Collector) -> None:
    """targets.owner names a rep, a team, a region (from reps) or the company, per level."""
    targets, reps = checked["targets"], checked["reps"]
    if not targets.n or not targets.has("level", "owner"):
        return
    level = targets.values["level"]
    for name, rep_column in _OWNER_COLUMNS.items():
        if "reps" not in present or not reps.has(rep_column):
            continue
        known = reps.values.get(rep_column, pd.Series([], dtype=STRING))
        _report_unknown(
            targets,
            "owner",
            known,
            out,
            partial(_a_rep_row_with, rep_column, name),
            ref_table="reps",
            rows=(level == name).fillna(False).to_numpy(dtype=bool),
        )
    owner = targets.values["owner"]
    company = ((level == _COMPANY) & (owner != _COMPANY)).fillna(False).to_numpy(dtype=bool)
    out.rows(
        targets.raw,
        company,
        column="owner",
        check="foreign_key",
        expected=f"{_COMPANY!r} for level {_COMPANY}",
        value=targets.cell("owner"),
    )


def _a_row_with(table: str, column: str, value: object) -> str:
    return f"{_article(table)} {table} row with {column} = {value}"


def _a_rep_row_with(column: str, level: str, value: object) -> str:
    return f"a reps row with {column} = {value} (level {level})"


def _report_unknown(
    child: _Checked,
    column: str,
    known: pd.Series,
    out: _Collector,
    expected: Callable[[str], str],
    *,
    missing_note: bool = False,
    ref_table: str,
    rows: np.ndarray | None = None,
) -> None:
    """Report the cells of `column` (among `rows`) whose value is not in `known`."""
    values = _arrow(child.values[column])
    bad = (_lookup(values, _arrow(known.astype(STRING)).cast(values.type)) < 0) & ~_mask(
        pc.is_null(values)
    )
    if rows is not None:
        bad &= rows
    note = f" (is {ref_table} missing from the import?)" if missing_note else ""
    cell = child.cell(column)
    out.rows(
        child.raw,
        bad,
        column=column,
        check="foreign_key",
        expected=lambda pos: expected(str(values[pos].as_py())) + note,
        value=cell,
    )


def _check_reps(reps: _Checked, out: _Collector) -> None:
    """left_at >= hired_at, and manager chains end at the top instead of going round."""
    if reps.has("hired_at", "left_at"):
        hired, left = reps.values["hired_at"], reps.values["left_at"]
        out.rows(
            reps.raw,
            (left < hired).to_numpy(),
            column="left_at",
            check="time_order",
            expected=lambda pos: f"a date on or after hired_at {_when(hired.iat[pos])}",
            value=reps.cell("left_at"),
        )
    if reps.n and reps.has("rep_id", "manager_id"):
        _check_manager_cycles(reps, out)


def _check_manager_cycles(reps: _Checked, out: _Collector) -> None:
    ids = reps.values["rep_id"]
    n = reps.n
    # parent[i] is the row of i's manager, or n (a sentinel that is its own parent) at the top.
    parent = _lookup(_arrow(reps.values["manager_id"]), _arrow(ids))
    parent = np.append(np.where(parent < 0, n, parent), n)
    ancestor = parent
    # Pointer doubling: after k rounds `ancestor` is 2**k steps up; 2**k > n steps from any row
    # either reached the top or is going round a cycle.
    for _ in range(max(1, math.ceil(math.log2(n + 1)))):
        ancestor = ancestor[ancestor]
    on_cycle = set(np.unique(ancestor[ancestor != n]).tolist())
    while on_cycle:  # only on the bad path: walk each cycle once to name its members
        start = min(on_cycle)
        cycle = [start]
        while (step := int(parent[cycle[-1]])) != start:
            cycle.append(step)
        on_cycle -= set(cycle)
        names = [str(ids.iat[i]) for i in cycle]
        first = min(cycle)
        mask = np.zeros(n, dtype=bool)
        mask[first] = True
        out.rows(
            reps.raw,
            mask,
            column="manager_id",
            check="cycle",
            expected="a manager chain that ends at someone without a manager; "
            f"{' → '.join([*names, names[0]])} is a cycle",
            value=reps.cell("manager_id"),
        )


def _check_activities(activities: _Checked, out: _Collector) -> None:
    """An activity serves a deal, an account or both."""
    if not activities.has("deal_id", "account_id"):
        return
    neither = activities.empty["deal_id"] & activities.empty["account_id"]
    out.rows(
        activities.raw,
        neither,
        column="deal_id",
        check="required",
        expected="a deal_id or an account_id: an activity serves a deal or an account (both are "
        "empty)",
        value=lambda pos: "",
    )


def _check_order_amounts(orders: _Checked, out: _Collector) -> None:
    """An order line says what it was worth: an amount, or a quantity and a unit price."""
    if not orders.n:
        return
    missing = {c: orders.empty.get(c, np.ones(orders.n, bool)) for c in ORDER_VALUE_COLUMNS}
    neither = missing["amount"] & (missing["quantity"] | missing["unit_price"])
    out.rows(
        orders.raw,
        neither,
        column="amount",
        check="required",
        expected="an amount, or both a quantity and a unit_price (map one or the other)",
        value=lambda pos: "",
    )


def order_amounts(orders: pd.DataFrame) -> pd.DataFrame:
    """`orders` with each empty amount filled as quantity x unit_price."""
    amount = orders["amount"].fillna(orders["quantity"] * orders["unit_price"])
    return orders.assign(amount=amount)


def _check_attribute_names(attributes: _Checked, out: _Collector) -> None:
    """An attribute's name becomes a feature's name: lower case, digits and _ only."""
    if not attributes.n or not attributes.has("name"):
        return
    names = attributes.values["name"]
    bad = ~names.str.fullmatch(_ATTRIBUTE_NAME).fillna(True).to_numpy(dtype=bool)
    out.rows(
        attributes.raw,
        bad,
        column="name",
        check="format",
        expected="a name in lower case letters, digits and _, starting with a letter (it "
        "names a feature), like lead_source",
        value=attributes.cell("name"),
    )


def _check_deals(deals: _Checked, out: _Collector) -> None:
    """closed_at after created_at; outcome, stage and closed_at tell the same story."""
    if not deals.n:
        return
    raw = deals.raw
    if deals.has("created_at", "closed_at"):
        created, closed = deals.values["created_at"], deals.values["closed_at"]
        out.rows(
            raw,
            (closed < created).to_numpy(),
            column="closed_at",
            check="time_order",
            expected=lambda pos: (
                f"a time on or after created_at {_when(created.iat[pos])} (or import with "
                "--bad-rows repair or --bad-rows quarantine)"
            ),
            value=deals.cell("closed_at"),
        )
    if not deals.has("stage", "outcome"):
        return
    stage, outcome = deals.values["stage"], deals.values["outcome"]
    if deals.has("amount"):
        won = (outcome == OUTCOMES[1]).fillna(False).to_numpy(dtype=bool)
        out.rows(
            raw,
            won & deals.empty["amount"],
            column="amount",
            check="required",
            expected="an amount: a won deal's amount is what it booked (open and lost deals "
            "may leave it empty)",
            value=deals.cell("amount"),
        )
    implied = stage.map(_STAGE_OUTCOME).astype(STRING)
    mismatch = (implied != outcome).fillna(False).to_numpy(dtype=bool)
    out.rows(
        raw,
        mismatch,
        column="outcome",
        check="consistency",
        expected=lambda pos: (
            f"{implied.iat[pos]!r} to match stage {stage.iat[pos]!r} (open "
            "stages are open, closed_won is won, closed_lost is lost)"
        ),
        value=deals.cell("outcome"),
    )
    if not deals.has("closed_at"):
        return
    # Whether the deal is open: by its outcome, or by its stage where the outcome is invalid.
    state = outcome.fillna(implied)
    is_open = (state == OUTCOMES[0]).fillna(False).to_numpy(dtype=bool)
    is_closed = state.isin(OUTCOMES[1:]).to_numpy(dtype=bool)
    has_closed = ~deals.empty["closed_at"]
    out.rows(
        raw,
        is_open & has_closed,
        column="closed_at",
        check="consistency",
        expected=f"empty while the deal is open (outcome open, stage {'/'.join(OPEN_STAGES)})",
        value=deals.cell("closed_at"),
    )
    out.rows(
        raw,
        is_closed & ~has_closed,
        column="closed_at",
        check="consistency",
        expected=lambda pos: (
            f"the time the deal was closed: outcome {state.iat[pos]!r} needs closed_at"
        ),
        value=deals.cell("closed_at"),
    )


def _check_history(history: _Checked, deals: _Checked, out: _Collector) -> None:
    """History rows lie within the deal's life and the latest one matches the deal's stage."""
    if not history.n or not deals.n or not history.has("deal_id") or not deals.has("deal_id"):
        return
    # The row of each history row's deal in `deals` (first occurrence), -1 when unknown.
    row = _lookup(_arrow(history.values["deal_id"]), _arrow(deals.values["deal_id"]))
    if history.has("changed_at"):
        _check_history_times(history, deals, row, out)
        if history.has("stage") and deals.has("stage"):
            _check_latest_stage(history, deals, row, out)


def _check_history_times(
    history: _Checked, deals: _Checked, row: np.ndarray, out: _Collector
) -> None:
    """created_at <= changed_at, and changed_at <= closed_at for closed deals."""
    changed = history.values["changed_at"].to_numpy()
    known = row >= 0
    for name, before in (("created_at", True), ("closed_at", False)):
        if not deals.has(name):
            continue
        bound = deals.values[name].to_numpy()[np.where(known, row, 0)]
        bad = known & ((changed < bound) if before else (changed > bound))  # NaT compares False
        word = "after" if before else "before"

        def expected(pos: int, b: np.ndarray = bound, w: str = word, c: str = name) -> str:
            return (
                f"a time on or {w} the deal's {c} {_when(pd.Timestamp(b[pos]))} "
                f"({deals.raw.location(int(row[pos]))} of deals; or import with --bad-rows "
                "quarantine)"
            )

        out.rows(
            history.raw,
            bad,
            column="changed_at",
            check="time_order",
            expected=expected,
            value=history.cell("changed_at"),
        )


def _check_latest_stage(
    history: _Checked, deals: _Checked, row: np.ndarray, out: _Collector
) -> None:
    """Each deal's latest history row carries the deal's current stage."""
    changed = history.values["changed_at"].to_numpy()
    positions = np.flatnonzero((row >= 0) & ~np.isnat(changed))
    # Sort by deal, then time: the last row of each deal's run is its latest.
    ordered = positions[np.lexsort((changed[positions].view("int64"), row[positions]))]
    deal = row[ordered]
    latest = ordered[np.append(deal[1:] != deal[:-1], True)] if len(ordered) else ordered
    stage = history.values["stage"].take(latest).to_numpy(dtype=object, na_value=None)
    deal_stage = deals.values["stage"]
    current = deal_stage.take(row[latest]).to_numpy(dtype=object, na_value=None)
    differs = (stage != current) & pd.notna(stage) & pd.notna(current)
    bad = np.zeros(history.n, dtype=bool)
    bad[latest[differs]] = True
    out.rows(
        history.raw,
        bad,
        column="stage",
        check="consistency",
        expected=lambda pos: (
            f"the deal's current stage {deal_stage.iat[row[pos]]!r} "
            f"({deals.raw.location(int(row[pos]))} of deals): a deal's latest history row "
            "carries its current state"
        ),
        value=history.cell("stage"),
    )


def _check_future(checked: dict[str, _Checked], as_of: pd.Timestamp, out: _Collector) -> None:
    """Nothing is known before it happened: no time column lies after the export's as-of."""
    for name, item in checked.items():
        columns = (item.table.known_at, *_LATER_TIMES.get(name, ()))
        for column in columns:
            if column is None or not item.has(column):
                continue
            # Months are compared by their first day: June's revenue is known in June.
            after = (item.values[column] > as_of).to_numpy(dtype=bool, na_value=False)
            out.rows(
                item.raw,
                after,
                column=column,
                check="future",
                expected=f"a time on or before the export's as-of {_when(as_of)}; this one is "
                "after it",
                value=item.cell(column),
            )


# --- small helpers -------------------------------------------------------------------------------


def _np(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(
        array.to_numpy(zero_copy_only=False) if isinstance(array, pa.Array) else array.to_numpy()
    )


def _mask(array: pa.Array | pa.ChunkedArray, *, null: bool = False) -> np.ndarray:
    """A boolean Arrow result as a numpy mask; nulls become `null`."""
    return _np(pc.fill_null(array, null)).astype(bool)


def _arrow(series: pd.Series) -> pa.ChunkedArray:
    """A canonical string Series as its Arrow data (no copy)."""
    return pa.chunked_array(series.array.__arrow_array__())


def _lookup(values: pa.ChunkedArray, known: pa.ChunkedArray) -> np.ndarray:
    """For each value, the position of its first occurrence in `known`; -1 if absent or null."""
    found = pc.index_in(values, value_set=known.combine_chunks(), skip_nulls=True)
    return _np(pc.fill_null(found, -1)).astype("int64")


def _np_object(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(array.to_pylist(), dtype=object)


def _naive_utc(ts: pd.Timestamp) -> pd.Timestamp:
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def _when(ts: pd.Timestamp) -> str:
    """A time as a person writes it: the date alone at midnight."""
    if pd.isna(ts):
        return "(unknown)"
    ts = pd.Timestamp(ts)
    return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.isoformat(sep=" ")


def _is_missing(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # arrays and other containers are values, not missing
        return False


def _cell_text(value: object) -> str:
    if value is None or _is_missing(value):
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
