"""Long lists on the dashboard: filter, sort by any column, a page at a time, and CSV of it all.

Rows are plain dicts; a page shows `page_size` of them, and the CSV holds every row the filters
keep (not only the page), so what a manager downloads is what they were looking at.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

PAGE_SIZE = 25


@dataclass(frozen=True)
class Listing:
    """One page of the filtered, sorted rows."""

    rows: list[dict[str, Any]]  # this page
    kept: list[dict[str, Any]]  # every row the filters keep, sorted (for totals and CSV)
    page: int  # 1-based
    pages: int
    sort: str
    descending: bool

    @property
    def total(self) -> int:
        return len(self.kept)

    @property
    def first(self) -> int:
        """The 1-based position of the page's first row (0 when nothing is shown)."""
        return 0 if not self.rows else (self.page - 1) * PAGE_SIZE + 1


def _sort_key(value: Any) -> tuple[int, Any]:
    """Missing values last whatever the direction; numbers, dates and text each among theirs."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (1, 0)
    if isinstance(value, datetime | date):
        return (0, value.isoformat())
    return (0, value)


def page_of(
    rows: Sequence[Mapping[str, Any]],
    *,
    filters: Mapping[str, str],
    sort: str,
    sortable: Sequence[str],
    descending: bool,
    page: int,
) -> Listing:
    """Rows equal to every non-empty filter, sorted by `sort` (one of `sortable`, else the
    first), page `page` (clamped to the pages there are)."""
    kept = [dict(r) for r in rows if all(not v or str(r.get(k)) == v for k, v in filters.items())]
    sort = sort if sort in sortable else sortable[0]
    present = [r for r in kept if _sort_key(r.get(sort))[0] == 0]
    absent = [r for r in kept if _sort_key(r.get(sort))[0] == 1]
    present.sort(key=lambda r: _sort_key(r.get(sort)), reverse=descending)
    kept = present + absent
    pages = max(1, math.ceil(len(kept) / PAGE_SIZE))
    page = min(max(page, 1), pages)
    shown = kept[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    return Listing(shown, kept, page, pages, sort, descending)


def csv_text(
    rows: Sequence[Mapping[str, Any]], columns: Mapping[str, Callable[[Mapping[str, Any]], Any]]
) -> str:
    """CSV with one column per entry of `columns` (header: its name; cell: its function)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(read(row)) for read in columns.values()])
    return out.getvalue()


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return round(value, 6)
    text = str(value)
    # a cell a spreadsheet would run as a formula is quoted as text
    return "'" + text if text[:1] in ("=", "+", "-", "@") and not _number(text) else text


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
