"""One table against its contract: columns, types, bounds, allowed values, unique keys."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from forecast.data.cells import null_column, parse_column
from forecast.data.contract import TYPE_TEXT, Column, Table
from forecast.data.schema import TABLES
from forecast.data.sources import RawTable
from forecast.data.violations import Collector, Violation, cell_text


@dataclass
class CheckedTable:
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
        return lambda pos: cell_text(series.iat[pos])

    def canonical(self) -> pd.DataFrame:
        """The parsed columns in contract order; absent optional columns are all empty."""
        return pd.DataFrame(
            {
                c.name: self.values[c.name] if c.name in self.values else null_column(c, self.n)
                for c in self.table.columns
            }
        )


def check_table(raw: RawTable, out: Collector) -> CheckedTable:
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
    raw = replace(raw, frame=frame)
    checked = CheckedTable(table, raw, {}, {})
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


def _check_column(checked: CheckedTable, col: Column, out: Collector) -> None:
    """Parse one column, reporting empty, malformed, out-of-bounds and disallowed cells."""
    raw = checked.raw
    values, empty, problems = parse_column(col, raw.frame[col.name], where=f"{raw.name}.{col.name}")
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


def _check_unique(checked: CheckedTable, out: Collector) -> None:
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
        value=lambda pos: ", ".join(cell_text(frame[name].iat[pos]) for name in key),
    )


ORDER_VALUE_COLUMNS = ("amount", "quantity", "unit_price")


def check_order_amounts(orders: CheckedTable, out: Collector) -> None:
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
