"""What can be wrong with a file before its values are read: encoding, delimiter, header, quotes,
ragged rows; each reported with its file and line."""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from forecast.data.schema import TABLES
from forecast.data.tables import STRING
from forecast.data.violations import MAX_PER_GROUP, VALUE_WIDTH, ValidationError, Violation

_DELIMITERS: tuple[str, ...] = (",", ";", "\t", "|")

_BOMS: tuple[tuple[bytes, str], ...] = (
    # UTF-32 first: its little-endian mark starts with the UTF-16 one.
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)

_HEADER_BYTES = 1 << 20


def decode(data: bytes, path: Path, table: str, encoding: str) -> bytes:
    """The file as UTF-8 bytes without a byte-order mark; raises for undecodable files."""
    if not data:
        raise ValidationError([empty_file(path, table)])
    if codecs.lookup(encoding).name not in ("utf-8", "utf-8-sig"):
        # A declared encoding (from a mapping) is trusted; the parser only reads UTF-8.
        try:
            data = data.decode(encoding).encode("utf-8")
        except UnicodeDecodeError as err:
            raise ValidationError([_bad_byte(data, err, path, table, encoding)]) from err
    else:
        for bom, name in _BOMS:
            if data.startswith(bom):
                raise ValidationError(
                    [
                        file_problem(
                            table,
                            path,
                            f"UTF-8 text: the file is {name}; save it as UTF-8",
                            "encoding",
                        )
                    ]
                )
        if b"\x00" in data:
            raise ValidationError(
                [
                    file_problem(
                        table,
                        path,
                        "UTF-8 text: the file contains NUL bytes, so it looks UTF-16 or binary; "
                        "save it as UTF-8 CSV",
                        "encoding",
                    )
                ]
            )
    # Excel writes a UTF-8 byte-order mark; it is not part of the first column's name.
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    return data  # Arrow checks UTF-8 while parsing; `parse_csv` locates any bad byte


def header_of(data: bytes, delimiter: str) -> list[str] | None:
    """The header's fields (the first non-blank record), or None when there is none."""
    head = data[:_HEADER_BYTES].decode("utf-8", errors="replace")
    for row in csv.reader(io.StringIO(head, newline=""), delimiter=delimiter):
        if row:
            return row
    return None


def wrong_delimiter(header: list[str], path: Path, table: str, delimiter: str) -> Violation | None:
    """The header is one field holding another common delimiter: the file uses that one."""
    if len(header) != 1:
        return None
    for other in _DELIMITERS:
        if other != delimiter and other in header[0]:
            return file_problem(
                table,
                path,
                f"{delimiter!r}-separated values: the header is one column but contains "
                f"{other!r}, so the file looks {other!r}-separated (a mapping reads it with "
                f"`delimiter: {other!r}` under the table or its `defaults`; canonical files "
                "are comma-separated)",
                "format",
                location="line 1",
                value=header[0],
            )
    return None


def unnamed_columns(header: list[str], path: Path, table: str, delimiter: str) -> list[Violation]:
    return [
        file_problem(
            table,
            path,
            f"a name for every column: header column {i} is empty (a trailing {delimiter!r} "
            "in the header, or an unnamed column)",
            "format",
            location="line 1",
            column=f"#{i}",
        )
        for i, name in enumerate(header, start=1)
        if not name.strip()
    ]


def unclosed_quote(data: bytes, path: Path, table: str, delimiter: str) -> list[Violation]:
    """A quoted value still open at the end of the file: the file was cut short."""
    text = data.decode("utf-8", errors="replace")
    starts, _, _ = _scan(text, delimiter)
    if not starts:
        return []
    last = starts[-1]
    lines = list(io.StringIO(text, newline=""))
    tail = "".join(lines[last - 1 :])
    try:
        for _ in csv.reader(io.StringIO(tail, newline=""), delimiter=delimiter, strict=True):
            pass
    except csv.Error as err:
        if "unexpected end of data" not in str(err):
            return []  # other irregular quoting is tolerated as the parser reads it
        return [
            file_problem(
                table,
                path,
                "a closing quote: a quoted value is never closed; the file looks truncated "
                "(export it again) or a quote is missing",
                "format",
                location=f"line {last}",
                value=lines[last - 1].rstrip("\r\n"),
            )
        ]
    return []


def ragged_rows(
    data: bytes,
    path: Path,
    table: str,
    delimiter: str,
    width: int,
    ragged: list[pacsv.InvalidRow],
) -> list[Violation]:
    """Records with more or fewer fields than the header, located with a Python pass."""
    text = data.decode("utf-8", errors="replace")
    starts, counts, rows = _scan(text, delimiter, keep=lambda n: n != width)
    found = [
        file_problem(
            table,
            path,
            f"{width} fields like the header; this line has {count}",
            "format",
            location=f"line {start}",
            value=delimiter.join(rows[i]),
        )
        for i, (start, count) in enumerate(zip(starts, counts, strict=True))
        if count != width
    ]
    if not found:  # the two parsers disagree on the record: report what Arrow saw
        found = [
            file_problem(
                table,
                path,
                f"{row.expected_columns} fields like the header; a record has {row.actual_columns}",
                "format",
                value=row.text,
            )
            for row in ragged
        ]
    return found[:MAX_PER_GROUP]


def _scan(
    text: str, delimiter: str, keep: Callable[[int], bool] | None = None
) -> tuple[list[int], list[int], dict[int, list[str]]]:
    """Start line and field count of every record (header included), as Arrow reads them.

    Blank lines are skipped like Arrow skips them. `keep` selects records (by field count) whose
    fields are returned too, by record index. Only run when line numbers cannot be computed
    cheaply, or to explain a problem.
    """
    starts: list[int] = []
    counts: list[int] = []
    rows: dict[int, list[str]] = {}
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # long notes are legal; the default limit is 128 KiB
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        previous = 0
        for row in reader:
            if row:
                if keep is not None and keep(len(row)):
                    rows[len(starts)] = row
                starts.append(previous + 1)
                counts.append(len(row))
            previous = reader.line_num
    finally:
        csv.field_size_limit(limit)
    return starts, counts, rows


def parse_csv(
    data: bytes,
    path: Path,
    table: str,
    width: int,
    delimiter: str,
    ragged: list[pacsv.InvalidRow],
) -> pa.Table:
    """All records, header first, as Arrow strings; ragged records go to `ragged`."""

    def skip(row: pacsv.InvalidRow) -> str:
        ragged.append(row)
        return "skip"

    try:
        try:
            return _read(data, width, delimiter, skip)
        except pa.ArrowInvalid as err:
            if "straddl" not in str(err):
                raise
            # a value longer than arrow's read block (1 MiB): the whole file as one block
            ragged.clear()
            return _read(data, width, delimiter, skip, block_size=len(data) + 1)
    except pa.ArrowInvalid as err:
        if "UTF8" not in str(err):
            raise ValidationError(
                [file_problem(table, path, f"a readable CSV file ({err})", "format")]
            ) from err
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise ValidationError([_bad_byte(data, bad, path, table, "UTF-8")]) from err
        raise


def _read(
    data: bytes,
    width: int,
    delimiter: str,
    skip: Callable[[pacsv.InvalidRow], str],
    block_size: int | None = None,
) -> pa.Table:
    options = pacsv.ReadOptions(autogenerate_column_names=True)
    if block_size is not None:
        options.block_size = block_size
    return pacsv.read_csv(
        pa.BufferReader(data),
        # The header is read as a record, so duplicate or odd names reach validation as-is.
        read_options=options,
        parse_options=pacsv.ParseOptions(
            delimiter=delimiter, newlines_in_values=True, invalid_row_handler=skip
        ),
        convert_options=pacsv.ConvertOptions(
            column_types={f"f{i}": pa.large_string() for i in range(width)},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def record_lines(data: bytes, arrow: pa.Table, delimiter: str) -> np.ndarray | None:
    """The line where each data record starts (header = line 1).

    Counting is enough when every line break is accounted for: one per record, plus those
    inside quoted values. Otherwise (blank lines, lone carriage returns) a Python pass decides.
    None if the two parsers disagree on the records.
    """
    records = arrow.num_rows  # the header included
    lines = data.count(b"\n") + (not data.endswith(b"\n"))
    if lines == records:  # the usual case: no record spans lines
        return np.arange(2, records + 1, dtype="int64")
    inside = np.zeros(records, dtype="int64")
    for column in arrow.columns:
        inside += _np_int(pc.count_substring(column, "\n"))
    if records + int(inside.sum()) == lines:
        starts = 1 + np.arange(records) + np.concatenate([[0], np.cumsum(inside)[:-1]])
        return starts[1:].astype("int64")
    starts, _, _ = _scan(data.decode("utf-8"), delimiter)
    if len(starts) != records:
        return None
    return np.asarray(starts[1:], dtype="int64")


def _np_int(array: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(array, 0).to_numpy(), dtype="int64")


def file_problem(
    table: str,
    path: Path,
    expected: str,
    check: str,
    *,
    location: str = "",
    value: str = "",
    column: str = "",
) -> Violation:
    if len(value) > VALUE_WIDTH:
        value = value[: VALUE_WIDTH - 1] + "…"
    return Violation(table, str(path), location, column, value, expected, check)


def empty_file(path: Path, table: str) -> Violation:
    known = TABLES.get(table)
    columns = ", ".join(c.name for c in known.columns if c.required) if known else ""
    wanted = f"a header line with the columns {columns}" if columns else "a header line"
    return file_problem(table, path, f"{wanted}: the file is empty", "empty")


def _bad_byte(
    data: bytes, err: UnicodeDecodeError, path: Path, table: str, encoding: str
) -> Violation:
    line = data.count(b"\n", 0, err.start) + 1
    line_start = data.rfind(b"\n", 0, err.start) + 1
    line_end = data.find(b"\n", err.start)
    column = err.start - line_start + 1
    text = data[line_start : line_end if line_end >= 0 else len(data)]
    return file_problem(
        table,
        path,
        f"{encoding} text: byte {data[err.start]:#04x} at position {column} of the line is not "
        f"valid {encoding}; save the file as UTF-8 (or, in a mapping, name the file's "
        "encoding: `encoding: cp1252` under the table or its `defaults`)",
        "encoding",
        location=f"line {line}",
        value=text.decode("utf-8", errors="backslashreplace").rstrip("\r"),
    )


def pandas_type(arrow_type: pa.DataType) -> object | None:
    """Arrow strings and integers to pandas' nullable dtypes (Parquet nulls stay nulls)."""
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return STRING
    if pa.types.is_signed_integer(arrow_type):
        return pd.Int64Dtype()
    return None
