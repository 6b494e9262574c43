"""Reading a folder of canonical files: `<table>.csv` or `<table>.parquet`, one per table.

The readers only decode: every CSV value stays text and `forecast.data.validate` judges it. Problems
with a file as a whole (encoding, delimiter, ragged rows, truncation) are reported here, as
`ValidationError`s naming the file and line, because no row can be trusted until they are fixed.
"""

from __future__ import annotations

import logging
from pathlib import Path

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
        path: a folder holding `<table>.csv` or `<table>.parquet` files. Other files are listed
            in a warning and skipped.

    Returns:
        Raw tables by canonical name, for the tables that have a file.

    Raises:
        ValidationError: the folder holds no canonical file, a table has both a CSV and a Parquet
            file, or files cannot be read; the problems of all files are collected first.
    """
    path = Path(path)
    found = _canonical_files(path)
    tables: dict[str, RawTable] = {}
    errors: list[ValidationError] = []
    for name in TABLE_NAMES:
        files = found.get(name, [])
        if len(files) > 1:
            names = " and ".join(f.name for f in files)
            expected = f"one file for {name}, found {names}: remove one"
            errors.append(ValidationError([file_problem(name, path, expected, "duplicate_file")]))
            continue
        if files:
            reader = read_csv if files[0].suffix.lower() == ".csv" else read_parquet
            try:
                tables[name] = reader(files[0], name)
            except ValidationError as err:
                errors.append(err)
    if errors:
        raise ValidationError.merge(errors)
    return tables


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
