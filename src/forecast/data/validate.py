"""Validation: every rule of the data contract, applied to raw tables from any source.

`validate` turns raw tables (text from CSV, typed values from Parquet or SQL) into canonical
`CrmTables`, or raises one `ValidationError` that lists every problem found. All checks are
vectorised (pyarrow compute and numpy); `Violation` objects are built only for bad rows, and at most
`MAX_PER_GROUP` per (table, column, check), while the counts stay exact.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from forecast.data.cells import naive_utc
from forecast.data.derive import derive_history
from forecast.data.rules import (
    check_activities,
    check_attribute_names,
    check_deals,
    check_foreign_keys,
    check_future,
    check_history,
    check_reps,
    check_target_owners,
)
from forecast.data.schema import TABLE_NAMES, TABLES
from forecast.data.sources import RawTable
from forecast.data.table_checks import CheckedTable, check_order_amounts, check_table, order_amounts
from forecast.data.tables import CrmTables
from forecast.data.violations import ROW_TABLES, Collector, ValidationError, Violation

BAD_ROW_POLICIES: tuple[str, ...] = ("refuse", "repair", "quarantine")

"""What an import does with rows whose times are out of order (closed before created, a history
row outside its deal's life): refuse the import, repair the row, or set it aside."""

_REPAIRABLE = frozenset(
    {("deals", "closed_at", "time_order"), ("deal_history", "changed_at", "time_order")}
)

MAX_SET_ASIDE = 0.1  # a problem in more of the deals than this (and more than MIN_SET_ASIDE)

MIN_SET_ASIDE = 10  # is the mapping's to fix, not rows to set aside


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


def check(
    raw: Mapping[str, RawTable],
    *,
    as_of: pd.Timestamp,
    bad_rows: str = "refuse",
    elsewhere: Collection[str] = (),
) -> Checked:
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
        elsewhere: references (`table.column`) not checked here: `raw` is one part of an
            export whose rows may name rows of another part (checked across the parts).

    Returns:
        The canonical tables, what was set aside, and which tables were derived.

    Raises:
        ValidationError: listing every problem found, if there is any.
    """
    if bad_rows not in BAD_ROW_POLICIES:
        raise ValueError(f"bad_rows must be one of {', '.join(BAD_ROW_POLICIES)}, not {bad_rows!r}")
    as_of = naive_utc(pd.Timestamp(as_of))
    checked, out = _check_all(raw, as_of, elsewhere)
    set_aside: list[Violation] = []
    if out.counts and _can_set_aside(checked, out, bad_rows):
        raw, set_aside = _set_aside(checked, out, bad_rows)
        checked, out = _check_all(raw, as_of, elsewhere)
    if not out.counts and not elsewhere:
        _check_something_to_learn(checked, out, set_aside=len(set_aside))
    if out.counts:
        error = ValidationError(out.violations, out.counts)
        if bad_rows == "refuse":
            error.hint = _set_aside_hint(checked, out, as_of, elsewhere)
        raise error
    frames = {name: c.canonical() for name, c in checked.items()}
    frames["orders"] = order_amounts(frames["orders"])
    derived: tuple[str, ...] = ()
    if len(frames["deals"]) and not len(frames["deal_history"]):
        frames["deal_history"] = derive_history(frames["deals"])
        derived = ("deal_history",)
    tables = CrmTables.from_frames(frames, as_of=as_of)
    return Checked(tables, tuple(set_aside), derived)


# what a model learns from or a forecast adds up: an export without any is refused (its import
# would replace a store that had them, and nothing could be trained or forecast from it)
LEARNED_FROM: tuple[str, ...] = ("deals", "orders", "revenue")


def _check_something_to_learn(
    checked: dict[str, CheckedTable], out: Collector, *, set_aside: int = 0
) -> None:
    """An export (otherwise valid) that gives deals, orders or recurring revenue, each of them
    without a row, is refused: a file with a header and no rows, or a mapping pointing at the
    wrong file. (A partial export without any of these tables is left to what reads it.)"""
    given = [name for name in LEARNED_FROM if checked[name].raw.source]
    if not given or any(checked[name].n for name in given):
        return
    for name in given:
        out.add(nothing_to_learn(name, checked[name].raw.source, set_aside=set_aside))


def nothing_to_learn(table: str, source: str, *, set_aside: int = 0) -> Violation:
    """The refusal of an export whose deals, orders and recurring revenue hold no row."""
    why = (
        f"--bad-rows set aside every one ({set_aside:,} rows); import without it to see each "
        "row's problem"
        if set_aside
        else "the export holds none to learn from (a file with a header and no rows, or a "
        "mapping naming the wrong file?)"
    )
    expected = f"rows of deals, orders or recurring revenue: {why}"
    return Violation(table, source, "", "", "no rows", expected, "empty_export")


def _check_all(
    raw: Mapping[str, RawTable], as_of: pd.Timestamp, elsewhere: Collection[str] = ()
) -> tuple[dict[str, CheckedTable], Collector]:
    out = Collector()
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
        name: check_table(replace(raw[name], name=name), out)
        if name in raw
        else CheckedTable(TABLES[name], RawTable(name, pd.DataFrame(), ""), {}, {})
        for name in TABLE_NAMES
    }
    present = {name for name in TABLE_NAMES if name in raw and len(raw[name].frame)}
    check_foreign_keys(checked, present, out, elsewhere)
    check_target_owners(checked, present, out)
    check_reps(checked["reps"], out)
    check_activities(checked["activities"], out)
    check_order_amounts(checked["orders"], out)
    check_attribute_names(checked["deal_attributes"], out)
    check_deals(checked["deals"], out)
    check_history(checked["deal_history"], checked["deals"], out)
    check_future(checked, as_of, out)
    return checked, out


def _can_set_aside(checked: dict[str, CheckedTable], out: Collector, policy: str) -> bool:
    """Whether every problem is a row the policy can repair or set aside.

    A value missing from a value map (`allowed`) is the mapping's to fix, never a row to set
    aside; nor is a problem in more than MAX_SET_ASIDE of the deals (and MIN_SET_ASIDE). Of the
    deals' attribute rows, only those a repeated deal row repeated are set aside (any other
    problem there is the mapping's, or two different values for one deal).
    """
    if policy == "repair":
        return set(out.counts) <= _REPAIRABLE
    if policy != "quarantine" or not checked["deals"].n or not checked["deals"].has("deal_id"):
        return False
    rows = all(
        key[0] in ROW_TABLES and key in out.flagged and key[2] != "allowed" for key in out.counts
    )
    limit = max(MAX_SET_ASIDE * checked["deals"].n, MIN_SET_ASIDE)
    return (
        rows
        and _only_repeats_of_repeated_deals(checked, out)
        and (len(_bad_deal_ids(checked, out)) <= limit)
    )


def _only_repeats_of_repeated_deals(checked: dict[str, CheckedTable], out: Collector) -> bool:
    """Whether every attribute row flagged repeats one of a deal whose deals row is repeated."""
    keys = [key for key in out.counts if key[0] == "deal_attributes"]
    if not keys:
        return True
    if any(key[2] != "unique" for key in keys):
        return False
    deals = checked["deals"].raw.frame["deal_id"].astype(str)
    repeated = set(deals[deals.duplicated()])
    attributes = checked["deal_attributes"].raw.frame["deal_id"].astype(str)
    flagged = np.concatenate([out.flagged[key] for key in keys]).astype(int)
    return set(attributes.iloc[flagged]) <= repeated


def _set_aside_hint(
    checked: dict[str, CheckedTable],
    out: Collector,
    as_of: pd.Timestamp,
    elsewhere: Collection[str] = (),
) -> str:
    """The `--bad-rows` choices that would let the import through: tried, not guessed."""
    working = []
    for policy in ("quarantine", "repair"):
        if _can_set_aside(checked, out, policy):
            raw, _ = _set_aside(checked, out, policy)
            if not _check_all(raw, as_of, elsewhere)[1].counts:
                working.append(policy)
    if not working:
        return ""
    choices = " or ".join(f"`--bad-rows {p}`" for p in working)
    return (
        f"Every problem is in a row of deals or deal_history (or repeats a deal's row): "
        f"{choices} imports everything else and lists each row it repaired or left out."
    )


def _bad_deal_ids(checked: dict[str, CheckedTable], out: Collector) -> set[str]:
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


def _ids_of_bad_history(checked: dict[str, CheckedTable], out: Collector) -> set[str]:
    history = checked["deal_history"].raw.frame
    ids: set[str] = set()
    for key, rows in out.flagged.items():
        if key in out.counts and key[0] == "deal_history" and "deal_id" in history:
            ids |= set(history["deal_id"].iloc[rows].dropna().astype(str))
    return ids


def _set_aside(
    checked: dict[str, CheckedTable], out: Collector, policy: str
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
        raw["deals"] = replace(deals.raw, frame=frame)
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
    for name in ("deal_history", "deal_attributes"):
        bad = [rows for key, rows in flagged.items() if key[0] == name]
        if bad and name in raw:
            # positions of the checked frame; rows of quarantined deals may be gone already
            original = checked[name].raw.frame.index[np.unique(np.concatenate(bad))]
            rows = np.flatnonzero(raw[name].frame.index.isin(original))
            raw[name] = _drop_rows(raw[name], rows)
    notes = {
        "deals": deal_note,
        "deal_history": history_note,
        "deal_attributes": "quarantined: this attribute row was not imported",
    }
    repeat = "quarantined: this row repeats an earlier one and was not imported"

    def note_of(v: Violation) -> str:
        return repeat if v.check == "unique" and policy == "quarantine" else notes[v.table]

    return raw, [
        replace(v, expected=f"{v.expected}; {note_of(v)}", check=note_of(v).split(":")[0])
        for v in out.violations
        if (v.table, v.column, v.check) in flagged
    ]


def _drop_rows(raw: RawTable, positions: np.ndarray) -> RawTable:
    keep = np.ones(len(raw.frame), dtype=bool)
    keep[positions] = False
    lines = None if raw.lines is None else np.asarray(raw.lines)[keep]
    if lines is None:  # keep the row numbers of the source, not of what is left
        lines = np.flatnonzero(keep) + 1
    files = None if raw.files is None else np.asarray(raw.files)[keep]
    return RawTable(raw.name, raw.frame[keep], raw.source, lines, files)
