"""Readers that turn a source (files, a mapped export, SQL, a public dataset) into raw tables.

A reader only renames and reshapes; `forecast.data.validate` decides what is acceptable, so every
source gets the same checks and the same error messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class RawTable:
    """One canonical table as read from its source, before validation.

    Attributes:
        name: canonical table name (a key of `forecast.data.schema.TABLES`).
        frame: canonical column names; values as read (text from CSV, typed from Parquet or SQL).
        source: where it came from, as a person would name it (a file path, `URL: query`).
        lines: for text files, the source line number of each row (header is line 1); for other
            sources None, and rows are numbered from 1 in reading order.
        files: for a table read from several files (an export in chunks, `source` their
            folder), each row's file name; `lines` then holds its line in a CSV file, its row
            (from 1) in another.
        translated: the export's values the reader translated, per canonical column (export
            value -> canonical value); kept with the stored data, so a CRM calling the service
            with its own names gets the same translation.
    """

    name: str
    frame: pd.DataFrame
    source: str
    lines: np.ndarray | None = None
    files: np.ndarray | None = None
    translated: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def location(self, position: int) -> str:
        """`line 17` or `row 17` for the row at 0-based `position` of `frame` (`part-3.csv
        line 17` in a table read from several files)."""
        if self.files is not None:  # lines of a CSV file, rows of the others
            file = str(self.files[position])
            word = "line" if file.lower().endswith(".csv") else "row"
            row = position + 1 if self.lines is None else int(self.lines[position])
            return f"{file} {word} {row}"
        if self.lines is not None:
            return f"line {int(self.lines[position])}"
        return f"row {position + 1}"
