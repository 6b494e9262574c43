"""Rules across rows and tables: foreign keys, target owners, the org tree, deal and history
times, the latest stage, nothing after the export's as-of."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from functools import partial

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from forecast.data.cells import as_arrow, lookup_codes, mask_of
from forecast.data.contract import CLOSED_STAGES, OPEN_STAGES, OUTCOMES
from forecast.data.table_checks import CheckedTable
from forecast.data.tables import STRING
from forecast.data.violations import Collector, a_rep_row_with, a_row_with, when_text

# tables an export may leave out: references to them are then not checked (their features are off)
OPTIONAL_PARENTS = ("reps", "accounts", "products")

# Time columns that must not lie after the export's as-of, besides each table's `known_at`.
_LATER_TIMES: dict[str, tuple[str, ...]] = {"deals": ("closed_at",)}

# Which reps column a target owner names, per target level; `company` is a literal.
_OWNER_COLUMNS: dict[str, str] = {"rep": "rep_id", "team": "team", "region": "region"}

_COMPANY = "company"

# The outcome each stage implies: open stages are open, closed_won is won, closed_lost is lost.
_STAGE_OUTCOME: dict[str, str] = {s: OUTCOMES[0] for s in OPEN_STAGES} | dict(
    zip(CLOSED_STAGES, OUTCOMES[1:], strict=True)
)

_ATTRIBUTE_NAME = r"[a-z][a-z0-9_]*"


def check_foreign_keys(
    checked: dict[str, CheckedTable],
    present: set[str],
    out: Collector,
    elsewhere: Collection[str] = (),
) -> None:
    """Every non-empty reference names an existing row of the referenced table (but those in
    `elsewhere`, `table.column`: checked by whoever sees the rows they may name)."""
    for child in checked.values():
        for col in child.table.columns:
            if not col.references or not child.has(col.name) or not child.n:
                continue
            if f"{child.table.name}.{col.name}" in elsewhere:
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
                partial(a_row_with, ref_table, ref_col),
                missing_note=ref_table not in present,
                ref_table=ref_table,
            )


def check_target_owners(
    checked: dict[str, CheckedTable], present: set[str], out: Collector
) -> None:
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
            partial(a_rep_row_with, rep_column, name),
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


def _report_unknown(
    child: CheckedTable,
    column: str,
    known: pd.Series,
    out: Collector,
    expected: Callable[[str], str],
    *,
    missing_note: bool = False,
    ref_table: str,
    rows: np.ndarray | None = None,
) -> None:
    """Report the cells of `column` (among `rows`) whose value is not in `known`."""
    values = as_arrow(child.values[column])
    bad = (lookup_codes(values, as_arrow(known.astype(STRING)).cast(values.type)) < 0) & ~mask_of(
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


def check_reps(reps: CheckedTable, out: Collector) -> None:
    """left_at >= hired_at, and manager chains end at the top instead of going round."""
    if reps.has("hired_at", "left_at"):
        hired, left = reps.values["hired_at"], reps.values["left_at"]
        out.rows(
            reps.raw,
            (left < hired).to_numpy(),
            column="left_at",
            check="time_order",
            expected=lambda pos: f"a date on or after hired_at {when_text(hired.iat[pos])}",
            value=reps.cell("left_at"),
        )
    if reps.n and reps.has("rep_id", "manager_id"):
        _check_manager_cycles(reps, out)


def _check_manager_cycles(reps: CheckedTable, out: Collector) -> None:
    ids = reps.values["rep_id"]
    n = reps.n
    # parent[i] is the row of i's manager, or n (a sentinel that is its own parent) at the top.
    parent = lookup_codes(as_arrow(reps.values["manager_id"]), as_arrow(ids))
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


def check_activities(activities: CheckedTable, out: Collector) -> None:
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


def check_attribute_names(attributes: CheckedTable, out: Collector) -> None:
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


def check_deals(deals: CheckedTable, out: Collector) -> None:
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
                f"a time on or after created_at {when_text(created.iat[pos])} (or import with "
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
    if deals.has("closed_at"):
        _check_closed_at(deals, outcome.fillna(implied), out)


def _check_closed_at(deals: CheckedTable, state: pd.Series, out: Collector) -> None:
    """closed_at empty while a deal is open, set once it is closed; `state` is whether the deal
    is open, by its outcome or, where the outcome is invalid, by its stage."""
    raw = deals.raw
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


def check_history(history: CheckedTable, deals: CheckedTable, out: Collector) -> None:
    """History rows lie within the deal's life and the latest one matches the deal's stage."""
    if not history.n or not deals.n or not history.has("deal_id") or not deals.has("deal_id"):
        return
    # The row of each history row's deal in `deals` (first occurrence), -1 when unknown.
    row = lookup_codes(as_arrow(history.values["deal_id"]), as_arrow(deals.values["deal_id"]))
    if history.has("changed_at"):
        _check_history_times(history, deals, row, out)
        if history.has("stage") and deals.has("stage"):
            _check_latest_stage(history, deals, row, out)


def _check_history_times(
    history: CheckedTable, deals: CheckedTable, row: np.ndarray, out: Collector
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
                f"a time on or {w} the deal's {c} {when_text(pd.Timestamp(b[pos]))} "
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
    history: CheckedTable, deals: CheckedTable, row: np.ndarray, out: Collector
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


def check_future(checked: dict[str, CheckedTable], as_of: pd.Timestamp, out: Collector) -> None:
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
                expected=f"a time on or before the export's as-of {when_text(as_of)}; this one is "
                "after it",
                value=item.cell(column),
            )
