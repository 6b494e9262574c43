"""What a mapping does to a table's values: translate them, convert dates and numbers written in
a local format, derive the outcome and close date from the stage."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from forecast.data.contract import CLOSED_STAGES, Table
from forecast.data.sources.spec import (
    DATE_TYPES,
    DERIVE_RULES,
    NUMBER_TYPES,
    ReadOptions,
    SpecProblems,
    TableMapping,
)

OUTCOME_OF_STAGE = dict(zip(CLOSED_STAGES, ("won", "lost"), strict=True))

STAGE_OF_OUTCOME = {outcome: stage for stage, outcome in OUTCOME_OF_STAGE.items()}

_TIME_DIRECTIVES = ("%H", "%I", "%M", "%S", "%X", "%c", "%T")

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def column_plan(
    name: str,
    table: Table,
    table_map: TableMapping,
    header: list[str],
    path: Path,
    problems: SpecProblems,
) -> dict[str, str] | None:
    """Canonical column -> source column; None (with the problems recorded) if it fails."""
    ok = True
    plan: dict[str, str] = {}
    for canonical, src in table_map.columns.items():
        if src in header:
            plan[canonical] = src
            continue
        ok = False
        close = difflib.get_close_matches(src, header, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        problems.add(
            ("tables", name, "columns", canonical),
            src,
            f"a column of {path.name}; {hint}its columns are: {', '.join(header)}",
            "source_column",
        )
    given = {*table_map.columns, *table_map.constants, *table_map.derive}
    # A source column already named like a canonical one needs no entry in the mapping.
    for name_ in table.column_names:
        if name_ not in given and name_ in header:
            plan[name_] = name_
            given.add(name_)
    for column in table.columns:
        if column.required and column.name not in given:
            ok = False
            # a key column set to a constant would make every row the same one
            constant = "" if column.name in table.key else ", or a constant"
            problems.add(
                ("tables", name, "columns", column.name),
                "(not mapped)",
                f"an entry for the required column {column.name!r} of {name} "
                f"(`{column.name}: <column of {path.name}>`{constant})",
                "required",
            )
    for derived, rule in table_map.derive.items():
        needs = DERIVE_RULES.get((name, derived), (rule, ""))[1]
        if needs and needs not in given:
            ok = False
            problems.add(
                ("tables", name, "derive", derived),
                rule,
                f"a mapped `{needs}` column to derive {derived} from",
                "derive",
            )
    return plan if ok else None


def convert_formats(
    frame: pd.DataFrame,
    table: Table,
    table_map: TableMapping,
    options: ReadOptions,
    name: str,
    problems: SpecProblems,
) -> bool:
    """Local dates and numbers to ISO text, in place; False if a date format is unusable."""
    for column in frame.columns:
        kind = table.column(column).type
        if kind in DATE_TYPES:
            own = column in table_map.date_formats
            fmt = table_map.date_formats[column] if own else options.date_format
            if not fmt:
                continue
            converted = _convert_dates(frame[column], fmt, kind)
            if converted is None:
                keys = ("date_formats", column) if own else ("date_format",)
                problems.add(
                    ("tables", name, *keys), fmt, "a strptime format such as %d.%m.%Y", "format"
                )
                return False
            frame[column] = converted
        elif kind in NUMBER_TYPES and (options.decimal != "." or options.thousands):
            frame[column] = _convert_numbers(frame[column], options.decimal, options.thousands)
    return True


def _is_empty(values: pd.Series) -> pd.Series:
    return values.isna() | (values.astype("string").str.strip() == "")


def stripped_keys(value_map: Mapping[str, str]) -> dict[str, str]:
    """A value map as it is compared: source values without surrounding spaces (the import's
    `translate` and the service's scoring of a CRM's records read the same map so)."""
    return {str(k).strip(): v for k, v in value_map.items()}


def translate(values: pd.Series, value_map: Mapping[str, str]) -> pd.Series:
    """Map values (compared without surrounding spaces); unmapped ones stay for validate."""
    mapped = values.astype("string").str.strip().map(stripped_keys(value_map))
    return values.astype(object).where(mapped.isna(), mapped.astype(object))


def _convert_dates(values: pd.Series, fmt: str, kind: str) -> pd.Series | None:
    """Dates in `fmt` become ISO text; unparseable ones stay raw so validate names their line.

    Returns None when `fmt` is not a usable format at all.
    """
    text = values.astype("string").str.strip()
    try:
        # Offsets may differ from row to row (summer time), so %z formats are read as UTC.
        parsed = pd.to_datetime(
            text.where(~_is_empty(values)), format=fmt, errors="coerce", utc="%z" in fmt
        )
    except ValueError:
        return None
    if kind == "month":
        iso = parsed.dt.strftime("%Y-%m")
    elif kind == "date" or not any(d in fmt for d in _TIME_DIRECTIVES):
        iso = parsed.dt.strftime("%Y-%m-%d")
    else:
        iso = parsed.map(lambda t: t.isoformat(), na_action="ignore")
    return values.astype(object).where(parsed.isna(), iso.astype(object))


def _convert_numbers(values: pd.Series, decimal: str, thousands: str) -> pd.Series:
    """`1.234,50` -> `1234.50` for the given marks; anything else stays raw for validate."""
    text = values.astype("string").str.strip()
    if thousands:
        text = text.str.replace(thousands, "", regex=False)
    if decimal != ".":
        text = text.str.replace(decimal, ".", regex=False)
    good = text.str.fullmatch(_NUMBER).fillna(False).astype(bool)
    return values.astype(object).where(~good, text.astype(object))


def derive_columns(
    frame: pd.DataFrame, rules: Mapping[str, str], as_of: pd.Timestamp | None
) -> None:
    """Apply the deals' derive rules in place, each from already converted columns."""
    if rules.get("stage") == "closed_from_outcome":
        outcome = frame["outcome"].astype("string").str.strip()
        closed = outcome.map(STAGE_OF_OUTCOME.get, na_action="ignore")
        if "stage" in frame:
            frame["stage"] = (
                frame["stage"].astype(object).where(closed.isna(), closed.astype(object))
            )
        else:
            frame["stage"] = closed.astype(object)
    if rules.get("outcome") == "from_stage":
        frame["outcome"] = _outcome_from_stage(frame["stage"])
    if rules.get("closed_at") == "when_closed" and "outcome" in frame:
        frame["closed_at"] = _closed_at_when_closed(frame, as_of)


def _closed_at_when_closed(frame: pd.DataFrame, as_of: pd.Timestamp | None) -> pd.Series:
    """closed_at kept for closed deals only (many CRMs fill a close date on open deals too).

    A value with no time of day (the CRM keeps only the day) counts as the end of that day,
    so the history's closing row, stamped some time that day, lies before it; never after the
    export's as-of. A value that is not a date stays as written, for validate to report.
    """
    closed = frame["outcome"].astype("string").str.strip().isin(("won", "lost")).fillna(False)
    text = frame["closed_at"].astype("string").str.strip()
    # offsets (summer time, Z) are read as UTC, as validate reads them
    when = pd.to_datetime(text, errors="coerce", format="mixed", utc=True).dt.tz_localize(None)
    day_only = when.notna() & (when == when.dt.normalize()) & ~text.str.contains(":").fillna(False)
    end = when.dt.normalize() + pd.Timedelta(days=1) - pd.Timedelta(seconds=1)
    if as_of is not None:
        limit = pd.Timestamp(as_of)
        end = end.clip(upper=limit.tz_convert(None) if limit.tzinfo else limit)
    iso = end.map(lambda t: t.isoformat(), na_action="ignore")
    values = frame["closed_at"].astype(object).where(~day_only, iso.astype(object))
    return values.where(closed.to_numpy(), None)


def _outcome_from_stage(stage: pd.Series) -> pd.Series:
    """won / lost for the closed stages, open for any other stage; empty stays empty."""
    text = stage.astype("string").str.strip()
    outcome = text.map(lambda s: OUTCOME_OF_STAGE.get(s, "open"), na_action="ignore")
    return stage.astype(object).where(_is_empty(stage), outcome.astype(object))
