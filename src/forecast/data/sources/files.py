"""Reading a folder of canonical files: `<table>.csv` or `<table>.parquet` per table, or a
folder `<table>/` of such files (an export written in chunks, read as one table).

The readers only decode: every CSV value stays text and `forecast.data.validate` judges it. Problems
with a file as a whole (encoding, delimiter, ragged rows, truncation) are reported here, as
`ValidationError`s naming the file and line, because no row can be trusted until they are fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from forecast.data.schema import TABLE_NAMES, TABLES
from forecast.data.sources import RawTable
from forecast.data.sources.file_checks import (
    decode,
    empty_file,
    file_problem,
    header_of,
    pandas_type,
    parse_csv,
    ragged_rows,
    record_lines,
    unclosed_quote,
    unnamed_columns,
    wrong_delimiter,
)
from forecast.data.violations import ValidationError

logger = logging.getLogger(__name__)

SUFFIXES: tuple[str, ...] = (".csv", ".parquet")

"""File kinds `read_folder` reads, by lower-case suffix."""


def read_folder(path: Path) -> dict[str, RawTable]:
    """Read every canonical file in a folder.

    Args:
        path: a folder holding `<table>.csv` or `<table>.parquet` files, or per table a folder
            `<table>/` of them (read in name order; each row located in its own file). Other
            files are listed in a warning and skipped.

    Returns:
        Raw tables by canonical name, for the tables that have a file.

    Raises:
        ValidationError: the folder holds no canonical file, a table has both a CSV and a Parquet
            file, or files cannot be read; the problems of all files are collected first.
    """
    tables: dict[str, RawTable] = {}
    errors: list[ValidationError] = []
    for name, files in table_files(path).items():
        try:
            tables[name] = read_table(files, name)
        except ValidationError as err:
            errors.append(err)
    if errors:
        raise ValidationError.merge(errors)
    return tables


def table_files(path: Path) -> dict[str, list[Path]]:
    """The files of each canonical table in the folder `path`: its `<table>.csv` or
    `<table>.parquet`, or the CSV and Parquet files of its folder `<table>/` in name order.

    Raises:
        ValidationError: the folder holds no canonical file, a table has more than one file
            or folder, or a table's folder holds no file to read.
    """
    path = Path(path)
    problems = []
    files: dict[str, list[Path]] = {}
    for name, entries in _canonical_files(path).items():
        if len(entries) > 1:
            names = " and ".join(f.name for f in entries)
            expected = f"one file for {name}, found {names}: remove one"
            problems.append(file_problem(name, path, expected, "duplicate_file"))
        elif entries[0].is_dir():
            chunks = [f for f in sorted(entries[0].iterdir()) if _readable(f)]
            if not chunks:
                expected = f"CSV or Parquet files of {name} in the folder; it has none"
                problems.append(file_problem(name, entries[0], expected, "empty"))
            files[name] = chunks
        else:
            files[name] = entries
    if problems:
        raise ValidationError(problems)
    return {name: files[name] for name in TABLE_NAMES if name in files}


def read_table(files: Sequence[Path], table: str) -> RawTable:
    """The canonical `table` from its file, or from several (`table_files`) as one table whose
    rows are each located in their own file (`RawTable.files`).

    Raises:
        ValidationError: listing the problems of every file.
    """
    read, errors = [], []
    for file in files:
        reader = read_csv if file.suffix.lower() == ".csv" else read_parquet
        try:
            read.append(reader(file, table))
        except ValidationError as err:
            errors.append(err)
    if errors:
        raise ValidationError.merge(errors)
    if len(read) == 1:
        return read[0]
    sizes = [len(r.frame) for r in read]
    return RawTable(
        table,
        pd.concat([r.frame for r in read], ignore_index=True),
        str(files[0].parent),
        np.concatenate([r.lines if r.lines is not None else np.arange(1, n + 1)
                        for r, n in zip(read, sizes, strict=True)]),
        np.repeat(np.array([f.name for f in files], dtype=object), sizes),
    )  # fmt: skip


def _readable(entry: Path) -> bool:
    return entry.is_file() and not entry.name.startswith(".") and entry.suffix.lower() in SUFFIXES


def _canonical_files(path: Path) -> dict[str, list[Path]]:
    """The folder's files named after a canonical table, by table (others are listed in a
    warning); refused when `path` is not a folder or holds none."""
    expected = ", ".join(f"{name}.csv" for name in TABLE_NAMES)
    if not path.is_dir():
        raise ValidationError(
            [file_problem("", path, f"a folder with files named {expected} (or .parquet)", "empty")]
        )
    found: dict[str, list[Path]] = {}
    ignored: list[str] = []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):  # .DS_Store and other hidden files are nobody's export
            continue
        if entry.is_file() and entry.suffix.lower() in SUFFIXES and entry.stem in TABLES:
            found.setdefault(entry.stem, []).append(entry)
        elif entry.is_dir() and entry.name in TABLES:  # the table in chunks
            found.setdefault(entry.name, []).append(entry)
        else:
            ignored.append(entry.name)
    if ignored:
        logger.warning(
            "%s: ignoring %s (not a canonical table; expected names like deals.csv or "
            "deals.parquet)",
            path,
            ", ".join(ignored),
        )
    if not found:
        expected = f"at least one file named {expected} (or .parquet); the folder has none"
        raise ValidationError([file_problem("", path, expected, "empty")])
    return found


def read_parquet(path: Path, table: str) -> RawTable:
    """Read a Parquet file as typed values (validation converts them to canonical dtypes).

    Raises:
        ValidationError: the file is empty or not readable Parquet.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise ValidationError([empty_file(path, table)])
    try:
        # ParquetFile, not read_table: the dataset reader refuses duplicate column names, which
        # validation reports in its own words.
        arrow = pq.ParquetFile(path).read()
    except (pa.ArrowException, OSError) as err:
        raise ValidationError(
            [file_problem(table, path, f"a readable Parquet file ({err})", "format")]
        ) from err
    frame = arrow.to_pandas(types_mapper=pandas_type)
    frame.columns = [str(c) for c in arrow.column_names]
    return RawTable(table, frame, str(path), None)


def read_csv(path: Path, table: str, *, delimiter: str = ",", encoding: str = "utf-8") -> RawTable:
    """Read a CSV file as text: no type inference, empty cells as "".

    Args:
        path: the file.
        table: the canonical table it holds.
        delimiter: the field separator.
        encoding: the file's text encoding; anything but UTF-8 is transcoded first. A UTF-8
            byte-order mark (Excel writes one) is accepted.

    Returns:
        The table with the header's column names (stripped of surrounding spaces, duplicates
        kept for validation to report) and, in `lines`, the line where each record starts.

    Raises:
        ValidationError: listing the file's problems (encoding, delimiter, header, ragged rows,
            truncation).
    """
    path = Path(path)
    data = path.read_bytes()
    data = decode(data, path, table, encoding)
    header = header_of(data, delimiter)
    if header is None:  # only blank lines
        raise ValidationError([empty_file(path, table)])
    wrong = wrong_delimiter(header, path, table, delimiter)
    if wrong is not None:  # every row would be one field: nothing else is worth reporting
        raise ValidationError([wrong])
    problems = unnamed_columns(header, path, table, delimiter)
    if data.count(b'"') % 2:  # an odd number of quotes: perhaps a quote is never closed
        unclosed = unclosed_quote(data, path, table, delimiter)
        if unclosed:  # the rest of the file is one value: parsing it says nothing more
            raise ValidationError(problems + unclosed)
    ragged: list[pacsv.InvalidRow] = []
    try:
        arrow = parse_csv(data, path, table, len(header), delimiter, ragged)
    except ValidationError as err:
        raise ValidationError(problems + err.violations) from err
    if ragged:
        problems += ragged_rows(data, path, table, delimiter, len(header), ragged)
    if problems:
        raise ValidationError(problems)
    names = [str(arrow.column(i)[0].as_py()).strip() for i in range(arrow.num_columns)]
    body = arrow.slice(1)
    frame = pd.DataFrame(
        {
            # The cast is a no-op unless the parsers disagreed on the header's width.
            i: pd.arrays.ArrowStringArray(body.column(i).cast(pa.large_string()))
            for i in range(body.num_columns)
        }
    )
    frame.columns = names
    return RawTable(table, frame, str(path), record_lines(data, arrow, delimiter))
